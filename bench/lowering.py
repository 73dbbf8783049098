"""What lowering ORT's training ops to standard ONNX costs: step time, side by side in one run.

Exports one model + method twice in adaptive mode: with ORT's own gradient kernels (the graphs
only the training build runs) and lowered (what bundles ship). Each is timed in a fresh
process (its peak RSS measured from outside) — every layer trained, every token kept, the
same batch — on the training build, and
the lowered one also on stock onnxruntime (``--stock-python``, a venv with stock onnxruntime
and no torch). Rounds alternate the configurations; the table prints medians and ratios.

    .venv/bin/python bench/lowering.py --model minilm-l6 --method lora --stock-python .venv-stock/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from unittest import mock

CHILD = r"""
import json, statistics, sys, time
import numpy as np
from edgetune.runtime import AdaptiveRunner
import onnxruntime
folder, batch, tokens, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = AdaptiveRunner(folder)
rng = np.random.default_rng(0)
names = r.parts["stem"]["inputs"]
if "pixel_values" in names:
    side = int(sys.argv[5])
    inputs = {"pixel_values": rng.standard_normal((batch, 3, side, side)).astype(np.float32)}
else:
    inputs = {"input_ids": rng.integers(1000, 2000, (batch, tokens)),
              "attention_mask": np.ones((batch, tokens), np.int64)}
labels = rng.integers(0, 2, batch)
manifest = json.load(open(folder + "/../manifest.json"))
keep = [manifest["tokens"] + manifest.get("extra_tokens", 0)] * r.num_layers
times = []
for _ in range(steps + 1):
    t = time.perf_counter()
    r.step(inputs, labels, keep)
    times.append(time.perf_counter() - t)
print(json.dumps({"ort": onnxruntime.__version__, "median": statistics.median(times[1:])}))
"""


def export(model: str, method: str, out: Path, lowered: bool, tokens: int) -> Path:
    from edgetune.export import export_bundle
    from edgetune.export.models.registry import create_model

    text = {} if create_model(model, 2).family == "vit" else {"max_tokens": tokens}
    if lowered:
        return export_bundle(model, method, out, mode="adaptive", overwrite=True, **text) / "adaptive"
    with mock.patch("edgetune.export.onnx.adaptive.lower", lambda graph, what="": graph):
        return export_bundle(model, method, out, mode="adaptive", overwrite=True, **text) / "adaptive"


def time_child(python: str, folder: Path, args) -> dict:
    from edgetune.sensors.child import run_measured

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = run_measured([python, "-c", CHILD, str(folder), str(args.batch), str(args.tokens),
                        str(args.steps), str(args.image_size)], env=env)
    if run.returncode != 0:
        raise SystemExit(f"{python} on {folder}: {run.stderr[-1500:]}")
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "peak_mb": run.peak_rss_bytes / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--method", default="lora")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64, help="text: sequence length")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--stock-python", default="", help="python of a venv with stock onnxruntime")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lowering-") as tmp:
        raw = export(args.model, args.method, Path(tmp) / "raw", lowered=False, tokens=args.tokens)
        low = export(args.model, args.method, Path(tmp) / "lowered", lowered=True, tokens=args.tokens)
        configs = {"training build, ORT grad ops": (sys.executable, raw),
                   "training build, lowered": (sys.executable, low)}
        if args.stock_python:
            configs["stock onnxruntime, lowered"] = (args.stock_python, low)
        times: dict[str, list[float]] = {k: [] for k in configs}
        peaks: dict[str, list[float]] = {k: [] for k in configs}
        versions = {}
        for _ in range(args.rounds):
            for name, (python, folder) in configs.items():
                res = time_child(python, folder, args)
                times[name].append(res["median"])
                peaks[name].append(res["peak_mb"])
                versions[name] = res["ort"]
    base = statistics.median(times["training build, ORT grad ops"])
    print(f"\n{args.model} + {args.method}, batch {args.batch}, every layer and token, "
          f"median of {args.rounds} rounds × {args.steps} steps")
    print("| configuration | onnxruntime | s/step | vs ORT grad ops | peak RSS (VmHWM) |\n"
          "|---|---|---:|---:|---:|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {versions[name]} | {m:.3f} | {m / base:.2f}× | "
              f"{statistics.median(peaks[name]):.0f} MB |")


if __name__ == "__main__":
    main()
