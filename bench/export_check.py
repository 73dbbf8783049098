"""Export check: minilm-l6 + LoRA and vit-small + LoRA, static vs adaptive mode, one run.

For each model: export the bundle (timed), graph sizes per mode folder, parity of the loss and
of every trainable gradient between static mode, adaptive mode and torch autograd (same batch,
same parameters: LoRA B is set to small random values in all three so every gradient is
non-zero), then the step time of both modes with every layer trained and every token kept
(steps interleaved static/adaptive in one process, median after warm-up) and each mode's
peak RSS (a fresh subprocess per mode, so the modes do not pollute each other).

    python bench/export_check.py [--quick] [--steps N] [--out DIR] [--models minilm-l6 vit-small]

Shapes: minilm-l6 at batch 32 x 64 tokens (random token ids, no padding), vit-small at 224 px,
batch 8 (random pixels). Offline: the only model needed is the installed all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgetune.bundle import MODES

SETUPS = {  # model → (batch, text tokens or None)
    "minilm-l6": (32, 64),
    "vit-small": (8, None),
}
LABELS = 2


# ---- batches and engines (no torch: the workers import only the device side) ---------------
def make_batch(name: str, batch: int, tokens: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if tokens:
        ids = rng.integers(1000, 30000, (batch, tokens), dtype=np.int64)
        ids[:, 0] = 101  # [CLS]
        ids[:, -1] = 102  # [SEP]
        out = {"input_ids": ids, "attention_mask": np.ones((batch, tokens), np.int64)}
    else:
        out = {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    out["labels"] = rng.integers(0, LABELS, batch).astype(np.int64)
    return out


def full_keep(bundle, batch: dict) -> np.ndarray:
    from edgetune.train.trainer import token_count

    return np.full(bundle.num_layers, token_count(batch, bundle), np.int64)


def open_engines(path: str, modes, threads: int):
    from edgetune.bundle import Bundle
    from edgetune.train.modes import open_engine

    bundle = Bundle.open(path, verify=False)
    return bundle, {m: open_engine(bundle, m, threads) for m in modes}


def worker(args) -> None:
    """Run in a subprocess: time ``--worker-modes`` interleaved; print JSON on the last line."""
    spec = json.loads(args.worker)
    import onnxruntime  # noqa: F401 - the baseline includes the runtime itself

    base = peak_rss_mb()
    bundle, engines = open_engines(spec["bundle"], spec["modes"], spec["threads"])
    mb = make_batch(spec["model"], spec["batch"], spec["tokens"])
    keep = full_keep(bundle, mb)
    trained = np.ones(bundle.num_layers, bool)
    times: dict[str, list[float]] = {m: [] for m in engines}
    order = list(engines)
    for i in range(spec["warmup"] + spec["steps"]):
        for m in (order if i % 2 == 0 else order[::-1]):  # alternate who goes first
            t = time.perf_counter()
            engines[m].train_step([mb], keep, trained, 1e-5)
            if i >= spec["warmup"]:
                times[m].append(time.perf_counter() - t)
    print(json.dumps({"times": times, "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base}))


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB (2^20 B). VmHWM belongs to the address space exec made, whereas
    ru_maxrss survives fork + exec and would report the parent's peak (torch and all)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_worker(model: str, path: Path, modes, steps: int, warmup: int, threads: int) -> dict:
    batch, tokens = SETUPS[model]
    spec = {"bundle": str(path), "model": model, "batch": batch, "tokens": tokens,
            "modes": list(modes), "steps": steps, "warmup": warmup, "threads": threads}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"worker for {model} {modes} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- export and graph sizes ----------------------------------------------------------------
def export(model: str, out: Path) -> tuple[Path, float]:
    from edgetune.export import export_bundle

    _, tokens = SETUPS[model]
    t = time.perf_counter()
    path = export_bundle(model, "lora", out / model, num_classes=LABELS, overwrite=True,
                         **({"max_tokens": tokens} if tokens else {}))
    return path, time.perf_counter() - t


def graph_sizes(path: Path) -> dict[str, tuple[float, int]]:
    """Per mode folder: (MB on disk, number of .onnx graphs)."""
    out = {}
    for mode in MODES:
        files = [p for p in (path / mode).rglob("*") if p.is_file()]
        out[mode] = (sum(p.stat().st_size for p in files) / 1e6,
                     sum(p.suffix == ".onnx" for p in files))
    return out


# ---- parity ---------------------------------------------------------------------------------
def parity(model_name: str, path: Path, threads: int) -> dict[str, tuple[float, float]]:
    """Max abs and max relative (to the reference's max |value|) difference of the loss and of
    every trainable gradient, for each pair of static / adaptive / torch."""
    import torch

    from edgetune.bundle import Bundle
    from edgetune.export.onnx import prepare_model
    from edgetune.runtime import AdaptiveRunner
    from edgetune.train.engines import StaticEngine

    batch, tokens = SETUPS[model_name]
    mb = make_batch(model_name, batch, tokens, seed=1)
    labels = mb["labels"]
    inputs = {k: v for k, v in mb.items() if k != "labels"}
    bundle = Bundle.open(path, verify=False)
    keep = full_keep(bundle, mb)

    model = prepare_model(model_name, "lora", num_classes=LABELS, seed=0)
    params = dict(model.named_parameters())
    trainable = [n for n, p in params.items() if p.requires_grad]
    rng = np.random.default_rng(7)
    new = {}  # LoRA B is zero at init (A's gradient would be 0): make every gradient non-zero
    for n in trainable:
        if "lora_B" in n:
            new[n] = (0.02 * rng.standard_normal(tuple(params[n].shape))).astype(np.float32)
    with torch.no_grad():
        for n, v in new.items():
            params[n].copy_(torch.from_numpy(v))

    # torch autograd
    model.zero_grad()
    logits = model(*[torch.from_numpy(inputs[n]) for n in model.input_names])
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    ref = {"loss": loss.item(), **{n: params[n].grad.numpy().copy() for n in trainable}}

    # static: one forward/backward through ORT's training module, gradients from the state
    st = StaticEngine(bundle.mode_dir("static"), bundle.index("static"), threads)
    for n, v in new.items():
        st.state.parameters[n].data = v
    st.module.train()
    outs = st.module(*st._feeds(st._train_inputs, mb, keep))
    static = {"loss": float(outs[0]), **{n: np.array(st.state.parameters[n].grad) for n in trainable}}

    # adaptive
    runner = AdaptiveRunner(bundle.mode_dir("adaptive"), threads=threads)
    for n, v in new.items():
        runner.params[n][...] = v
    res = runner.step(inputs, labels, [int(k) for k in keep])
    adaptive = {"loss": res.loss, **{n: res.grads[n] for n in trainable}}

    def diff(a: dict, b: dict) -> tuple[float, float, float, float]:
        la = abs(a["loss"] - b["loss"])
        ga = max(float(np.abs(a[n] - b[n]).max()) for n in trainable)
        gr = max(float(np.abs(a[n] - b[n]).max() / max(np.abs(b[n]).max(), 1e-30)) for n in trainable)
        return la, la / abs(b["loss"]), ga, gr

    return {"static-torch": diff(static, ref), "adaptive-torch": diff(adaptive, ref),
            "adaptive-static": diff(adaptive, static)}


# ---- main -----------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    ap.add_argument("--steps", type=int, help="timed steps per mode (default 10, quick 4)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    ap.add_argument("--out", type=Path, help="keep the bundles here (default: a temp folder)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    steps = args.steps or (4 if args.quick else 10)
    rss_steps = 2 if args.quick else 3
    t_all = time.perf_counter()
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="export_check-")
    out = args.out or Path(tmp.name)
    rows = []
    for model in args.models:
        batch, tokens = SETUPS[model]
        shape = f"batch {batch} x {tokens} tokens" if tokens else f"batch {batch} x 224 px"
        print(f"== {model} + lora ({shape}, {args.threads} threads)", flush=True)
        path, secs = export(model, out)
        sizes = graph_sizes(path)
        print(f"export {secs:.1f} s; graphs: " + ", ".join(
            f"{m} {mb:.1f} MB in {n} graphs" for m, (mb, n) in sizes.items()), flush=True)
        par = parity(model, path, args.threads)
        for pair, (la, lr, ga, gr) in par.items():
            print(f"parity {pair:16s} loss abs {la:.1e} rel {lr:.1e} | grads max abs {ga:.1e} "
                  f"max rel {gr:.1e}", flush=True)
        timing = run_worker(model, path, MODES, steps, args.warmup, args.threads)
        med = {m: float(np.median(v)) for m, v in timing["times"].items()}
        print("steps (s): " + "; ".join(f"{m} " + " ".join(f"{t:.2f}" for t in v)
                                        for m, v in timing["times"].items()), flush=True)
        rss = {}
        for m in MODES:
            got = run_worker(model, path, (m,), rss_steps, 1, args.threads)
            rss[m], base = got["peak_rss_mb"], got["base_rss_mb"]
        print(f"peak RSS (MiB, fresh process per mode): static {rss['static']:.0f}, adaptive "
              f"{rss['adaptive']:.0f} (python + numpy + onnxruntime alone: {base:.0f})", flush=True)
        worst = max(v[3] for v in par.values())
        rows.append((model, secs, sizes, worst, med, rss))
    print()
    head = (f"{'model':10s} {'export':>7s} {'static graphs':>14s} {'adaptive graphs':>16s} "
            f"{'parity':>8s} {'static s':>9s} {'adapt s':>8s} {'ratio':>6s} "
            f"{'static MiB':>10s} {'adapt MiB':>9s} {'ratio':>6s}")
    print(head)
    print("-" * len(head))
    for model, secs, sizes, worst, med, rss in rows:
        s_mb, s_n = sizes["static"]
        a_mb, a_n = sizes["adaptive"]
        print(f"{model:10s} {secs:6.1f}s {s_mb:7.1f}MB/{s_n:<3d}   {a_mb:7.1f}MB/{a_n:<4d}   "
              f"{worst:8.1e} {med['static']:9.3f} {med['adaptive']:8.3f} "
              f"{med['adaptive'] / med['static']:6.2f} {rss['static']:10.0f} "
              f"{rss['adaptive']:9.0f} {rss['adaptive'] / rss['static']:6.2f}")
    print(f"\nparity: worst relative gradient difference of the three pairs; step time: median of "
          f"{steps} interleaved steps after {args.warmup} warm-up, every layer trained, every token "
          f"kept; ratio = adaptive / static. Total {time.perf_counter() - t_all:.0f} s.")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
