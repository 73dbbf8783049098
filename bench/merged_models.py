"""A merged folder's inference models side by side (``edgetune merge --int8``): file size,
test accuracy and time per batch of each, in one process, alternating.

    .venv-device/bin/python bench/merged_models.py RUN/merged --data test.csv [--batch 32]

Accuracy is ``edgetune eval``'s (the same loader); time is the median over ``--rounds`` of a
pass over the first ``--batches`` batches, the two models alternating each round.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    from edgetune.bundle import Bundle
    from edgetune.merged_folder import MergedModel
    from edgetune.train.evaluate import evaluate_merged
    from edgetune.train.inputs import load_data

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("merged", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    files = [f for f in ("inference.onnx", "inference.int8.onnx") if (a.merged / f).is_file()]
    models = {f: MergedModel(a.merged / f, a.threads) for f in files}
    bundle = Bundle.open(models[files[0]].bundle_path)
    labels = models[files[0]].info.get("labels")
    data = load_data(bundle, a.data, tuple(labels) if labels else None)
    batches = [data.batch(np.arange(i * a.batch, min((i + 1) * a.batch, len(data))))
               for i in range(min(a.batches, -(-len(data) // a.batch)))]
    times: dict[str, list[float]] = {f: [] for f in files}
    for r in range(a.rounds):
        for f in (files if r % 2 == 0 else files[::-1]):
            t0 = time.perf_counter()
            for b in batches:
                models[f].predict(b)
            times[f].append((time.perf_counter() - t0) / len(batches))
    out = {}
    for f in files:
        acc = evaluate_merged(a.merged / f, a.data, a.batch, a.threads)["accuracy"]
        out[f] = {"mb": (a.merged / f).stat().st_size / 1e6, "accuracy": acc,
                  "ms_per_batch": 1e3 * statistics.median(times[f])}
    base = out[files[0]]
    print(f"{'model':<22}{'MB':>8}{'accuracy':>10}{'ms/batch':>10}{'speed':>7}")
    for f, r in out.items():
        print(f"{f:<22}{r['mb']:>8.1f}{100 * r['accuracy']:>9.2f}%{r['ms_per_batch']:>10.1f}"
              f"{base['ms_per_batch'] / r['ms_per_batch']:>6.2f}x")
    print(f"  ({len(data)} examples; time: median of {a.rounds} alternating passes over "
          f"{len(batches)} batches of {a.batch})")
    return out


if __name__ == "__main__":
    main()
