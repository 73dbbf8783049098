"""What the benches share: a training run in a fresh process measured from outside, a run's
summary (s/step, FLOPs/step from the cost model), ``edgetune eval --json``, a float32 matmul
peak, and matplotlib plots (Agg backend; matplotlib is the ``bench`` extra, workstation only).

- :func:`train` runs ``edgetune train ... --quiet`` (the CLI) as its own process, with the
  caller's environment (``no_torch_env``: ``import torch`` blocked, as on a device); an exit hook
  writes the process's VmHWM (/proc/self/status) to a file: the high-water mark of the address
  space exec made, so nothing of the parent counts.
- :func:`summarize`: seconds per step = the median of ``step_time`` in metrics.jsonl (first
  step left out); FLOPs per step from the bundle manifest's per-layer fits
  (edgetune.caps.cost_model, the planner's own model; stem and head not counted) for the plan
  each step actually ran (tokens kept per layer, layers trained), averaged over steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The training process: the CLI itself, plus an exit hook that writes its VmHWM to a file.
TRAIN_MAIN = """\
import atexit, os, sys
def _hwm():
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return
    with open(os.environ["EDGETUNE_BENCH_HWM"], "w") as f:
        f.write(str(kb))
atexit.register(_hwm)
sys.argv[0] = "edgetune"
from edgetune.cli import main
main()
"""
CLI = [sys.executable, "-m", "edgetune.cli"]
# the pretrained ViT every image bench uses unless given another (bench/backbones/README.md)
DEFAULT_VIT = Path(__file__).resolve().parent / "backbones" / "vit-fmnist"


_NO_TORCH = r"""
import importlib.abc
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked: a device has none")
sys.meta_path.insert(0, _NoTorch())
"""


def child_script(module: str, block_torch: bool) -> str:
    """``python -c`` code that runs ``module.run(spec, result, status)`` (a module of bench/)
    on the JSON spec in argv[1] and writes ``result`` to ``spec["result"]`` at exit, with the
    process's RSS at start and its VmHWM (``import torch`` blocked, as on a device, if asked)."""
    return ("import atexit, json, sys\n" + (_NO_TORCH if block_torch else "") + f"""
def _status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
spec = json.loads(sys.argv[1])
result = {{"rss": {{"start": _status("VmRSS")}}}}
def _write():
    result["peak_rss"] = _status("VmHWM")
    with open(spec["result"], "w") as f:
        json.dump(result, f)
atexit.register(_write)
sys.path.insert(0, spec["bench_dir"])
import {module}
{module}.run(spec, result, _status)
""")


def run_child(code: str, spec: dict, tmp: Path, python: str = sys.executable,
              extra_env: dict | None = None) -> dict:
    """Run a :func:`child_script` on ``spec`` (its ``tag`` names the result file in ``tmp``)
    and return its result."""
    spec = {**spec, "result": str(tmp / f"result-{spec['tag']}.json"),
            "bench_dir": str(Path(__file__).resolve().parent)}
    env = {**os.environ, "PYTHONHASHSEED": "0", **(extra_env or {})}
    proc = subprocess.run([python, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{spec['tag']}: the child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(Path(spec["result"]).read_text())


def say(msg: str) -> None:
    print(msg, flush=True)


def no_torch_env(root: Path) -> dict[str, str]:
    from edgetune.demo import no_torch_env as env

    return env(root)


def json_default(obj):
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def last_error(proc: subprocess.CompletedProcess) -> str:
    msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return msg[-1].removeprefix("error: ") if msg else f"exit {proc.returncode}"


@dataclass
class TrainProcess:
    returncode: int
    stdout: str
    error: str | None
    wall_s: float
    # VmHWM of the training process in MiB (2^20 B: VmHWM's kB / 1024); None if it did not say.
    # The name says "mb" only because recorded result rows use it; the edgetune runtime's own
    # peak_rss_mb (metrics.jsonl, summarize()'s peak_rss_mb_metrics) is decimal MB (10^6 B).
    peak_rss_mb: float | None
    stderr: str = ""


def train(args: list[str], run: Path, env: dict[str, str], python: str = sys.executable) -> TrainProcess:
    """``edgetune train ARGS --out RUN`` in a fresh process of ``python``; RUN is made (empty) first."""
    run.mkdir(parents=True, exist_ok=True)
    hwm = run / "vmhwm_kb"
    hwm.unlink(missing_ok=True)
    cmd = [python, "-c", TRAIN_MAIN, "train", *args, "--out", str(run)]
    say(f"$ edgetune {' '.join(cmd[3:])}")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "EDGETUNE_BENCH_HWM": str(hwm)})
    wall = time.perf_counter() - t
    peak = int(hwm.read_text()) / 1024 if hwm.is_file() else None  # kB (KiB) -> MiB, not MB
    err = last_error(proc) if proc.returncode else None
    say(f"  failed (exit {proc.returncode}): {err}" if err else "  " + proc.stdout.strip())
    return TrainProcess(proc.returncode, proc.stdout, err, wall, peak, proc.stderr)


def evaluate(source: Path, data: Path, env: dict[str, str], *extra: str,
             python: str = sys.executable) -> dict:
    """``edgetune eval SOURCE --data DATA --json EXTRA`` in ``python``: the printed JSON object."""
    cmd = [python, *CLI[1:], "eval", str(source), "--data", str(data), "--json", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"edgetune eval {source} --data {data} {' '.join(extra)} failed "
                         f"(exit {proc.returncode}): {last_error(proc)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare_text_data(out: Path, tokenizer: bool) -> tuple[dict[str, int], Path | None]:
    """The splits (edgetune.demo.write_splits) and, for bert-micro, a word-level tokenizer of the
    train split (1000 words, its vocabulary), made in a subprocess: reading the corpus would
    raise this process's RSS high-water mark, and a child started from it inherits that mark in
    ``ru_maxrss`` (which the trainer's RAM-cap calibration reads), though not in VmHWM."""
    code = f"""
import csv, json
from pathlib import Path
from edgetune.demo import write_splits
out = Path({str(out)!r})
names = ("train", "val", "test")
def rows(name):
    with open(out / f"{{name}}.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
if not all((out / f"{{n}}.csv").is_file() for n in names):
    write_splits(out)
tok = None
if {tokenizer!r}:
    from edgetune.data import build_word_level_tokenizer
    tok = out / "tokenizer-words-1000.json"
    if not tok.is_file():
        build_word_level_tokenizer([r["text"] for r in rows("train")], tok, vocab_size=1000)
    tok = str(tok)
test = [r["label"] for r in rows("test")]
print(json.dumps({{"sizes": {{n: len(rows(n)) for n in names}}, "tokenizer": tok,
                  "majority": max(test.count(v) for v in set(test)) / len(test)}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"data preparation failed (exit {proc.returncode})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["sizes"]["majority"] = res["majority"]
    return res["sizes"], Path(res["tokenizer"]) if res["tokenizer"] else None


def cli_has_flag(command: str, flag: str, env: dict[str, str] | None = None) -> bool:
    """Whether ``edgetune COMMAND --help`` lists FLAG (a flag being built elsewhere)."""
    proc = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True, env=env)
    return proc.returncode == 0 and flag in proc.stdout


def summarize(run: Path, bundle: Path, batch_size: int) -> dict:
    """A finished run's numbers from its run.json and metrics.jsonl (see the module docstring)."""
    from edgetune.bundle import Bundle
    from edgetune.caps.cost_model import ModelCosts, step_flops
    from edgetune.train.run_folder import RunFolder

    costs = ModelCosts.from_manifest(Bundle.open(bundle, verify=False).manifest)
    folder = RunFolder(run)
    info, rows = folder.read_info(), folder.metrics()
    if not rows:
        raise SystemExit(f"{run}: metrics.jsonl holds no steps")
    L = costs.num_layers
    bs = min(batch_size, int(info["train_size"]))
    flops, keep_frac, trained_n = [], [], []
    for r in rows:
        trained = np.zeros(L, bool)
        trained[r["layers_trained"]] = True
        keep = np.asarray(r["tokens_kept"], np.int64)
        flops.append(step_flops(costs, keep, trained, int(r["tokens"]), bs).total)
        keep_frac.append((keep / r["tokens"]).tolist())
        trained_n.append(int(trained.sum()))
    times = [r["step_time"] for r in rows]
    timed = times[1:] if len(times) > 2 else times
    step_s = float(np.median(timed))
    return {
        "mode": info["mode"],
        "steps": len(rows), "step_s": step_s, "samples_per_s": bs / step_s,
        "flops": float(np.mean(flops)), "keep_mean": float(np.mean(keep_frac)),
        "layers_trained_mean": float(np.mean(trained_n)), "num_layers": L,
        "micro_batch_min": int(min(r["micro_batch"] for r in rows)),
        "final_loss": rows[-1]["loss"], "peak_rss_mb_metrics": float(rows[-1]["peak_rss_mb"]),
        "series": {
            "step_time": times, "loss": [r["loss"] for r in rows], "rss_mb": [r["rss_mb"] for r in rows],
            "peak_rss_mb": [r["peak_rss_mb"] for r in rows], "flops": flops,
            "keep_fraction": keep_frac, "layers_trained": [r["layers_trained"] for r in rows],
            "budgets": [r["budgets"] for r in rows] if all("budgets" in r for r in rows) else None,
        },
    }


def trainable_params(bundle: Path) -> tuple[int, int]:
    """(trainable, total) parameters of a bundle, from its manifest's cost data."""
    from edgetune.bundle import Bundle
    from edgetune.caps.cost_model import ModelCosts

    costs = ModelCosts.from_manifest(Bundle.open(bundle, verify=False).manifest)
    return int(costs.trainable_params), int(costs.total_params)


# ---- the float32 matmul peak of this machine, through ONNX Runtime ----------------------------
def matmul_peak(m: int, k: int, n: int, threads: int, repeats: int = 7, python: str = sys.executable) -> dict:
    """Median GFLOP/s of one ORT MatMul (m×k @ k×n, float32) on ``threads`` intra-op threads: the
    ceiling the training steps' achieved GFLOP/s are compared with. A subprocess (of ``python``,
    whose onnxruntime is measured), so neither this process's RSS nor its thread pools are
    touched."""
    import tempfile

    from onnx import TensorProto, helper  # here: the measured python needs onnxruntime only

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
        f.write(model.SerializeToString())
    code = f"""
import json, time
import numpy as np
import onnxruntime as ort
m, k, n, threads, repeats = {m}, {k}, {n}, {threads}, {repeats}
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
s = ort.InferenceSession({f.name!r}, so, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
feed = {{"a": rng.standard_normal((m, k), np.float32), "b": rng.standard_normal((k, n), np.float32)}}
s.run(None, feed)
ts = []
for _ in range(repeats):
    t0 = time.perf_counter(); s.run(None, feed); ts.append(time.perf_counter() - t0)
ts.sort()
print(json.dumps({{"seconds": ts[len(ts) // 2], "gflops": 2 * m * k * n / ts[len(ts) // 2] / 1e9}}))
"""
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    Path(f.name).unlink()
    if proc.returncode:
        raise SystemExit(f"matmul peak ({m}x{k} @ {k}x{n}) failed: {last_error(proc)}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"shape": [m, k, n], "threads": threads, "repeats": repeats, **res}


# ---- plots (matplotlib, Agg) ------------------------------------------------------------------
def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), "unknown" where there is none."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("matplotlib is not installed: pip install -e '.[bench]' (make venv does)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmaps(path: Path, panels: list[tuple[str, np.ndarray, np.ndarray | None]]) -> None:
    """Layer × step heat maps: one panel per (title, values (L, S) in [0, 1], trained mask (L, S)
    or None: frozen cells drawn darker)."""
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.2 + 1.6 * len(panels)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (title, values, trained) in zip(axes[:, 0], panels):
        L, S = values.shape
        rgb = cmap(np.clip(np.nan_to_num(values, nan=0.0), 0, 1))[..., :3]
        if trained is not None:
            rgb = np.where(trained[..., None], rgb, rgb * 0.55)
        ax.imshow(rgb, aspect="auto", origin="lower", interpolation="nearest",
                  extent=(0.5, S + 0.5, -0.5, L - 0.5))
        ax.set_yticks(range(L), [f"L{i}" for i in range(L)])
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9, loc="left")
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
        fig.colorbar(sm, ax=ax, fraction=0.03, pad=0.01)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_lines(path: Path, title: str, series: list[tuple[str, list[float]]],
               hlines: list[tuple[float, int]] = (), ylabel: str = "", logy: bool = False) -> None:
    """Lines over steps (label, values); dashed horizontal lines (value, index of the series whose
    colour they take). ``ylabel`` has no default unit: callers name theirs (MB vs MiB)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, values) in enumerate(series):
        ax.plot(np.arange(1, len(values) + 1), values, label=label, color=colors[k % len(colors)], lw=1.5)
    for y, k in hlines:
        ax.axhline(y, ls="--", color=colors[k % len(colors)], lw=1.5)
    if logy:
        ax.set_yscale("log")
    elif not any(v < 0 for _, vals in series for v in vals):
        ax.set_ylim(bottom=0)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_bars(path: Path, title: str, labels: list[str], values: list[float], ylabel: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(labels) + 2), 4.5))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
