"""The dataset interface every loader returns, subsets and the train/val split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgetune.errors import UsageError


class Dataset:
    """``len(ds)`` examples; ``ds.batch(indices)`` gives the model's inputs plus ``labels``.

    Subclasses set ``path``, ``labels`` (int64, one per example, or a row of next-token
    targets per example for a language model: data/lm.py), ``label_names`` (class names
    by index, or None for integer labels), ``input_names`` and implement :meth:`_inputs`.
    ``notes``: what the loader changes on the way to the model's inputs (a resize, channels
    repeated, texts cut), one line each, for the user to be told once (the CLI prints them).
    """

    path: Path
    labels: np.ndarray
    label_names: tuple[str, ...] | None = None
    input_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Inputs keyed by the model's input names, plus ``labels`` (int64)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"batch indices out of range for {len(self)} examples")
        out = self._inputs(idx)
        out["labels"] = self._labels(idx, out)
        return out

    def _inputs(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _labels(self, idx: np.ndarray, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The labels of examples ``idx`` for these ``inputs`` (a language model's: cut to the
        batch's length)."""
        return self.labels[idx]

    def subset(self, indices: Sequence[int] | np.ndarray) -> Subset:
        return Subset(self, indices)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, n={len(self)})"


class Subset(Dataset):
    """The examples ``indices`` of ``parent``, in that order."""

    def __init__(self, parent: Dataset, indices: Sequence[int] | np.ndarray):
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(parent)):
            raise IndexError(f"subset indices out of range for {len(parent)} examples")
        self.parent, self.indices = parent, idx
        self.path, self.labels = parent.path, parent.labels[idx]
        self.label_names, self.input_names = parent.label_names, parent.input_names
        self.notes = parent.notes

    def _inputs(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return self.parent._inputs(self.indices[idx])

    def _labels(self, idx: np.ndarray, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.parent._labels(self.indices[idx], inputs)


def split(dataset: Dataset, fraction: float, seed: int = 0) -> tuple[Subset, Subset]:
    """``(train, val)``: a seeded random ``fraction`` of the examples (at least one) is val."""
    from edgetune.data.sampler import permutation

    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 < fraction < 1.0:
        raise UsageError(f"split fraction={fraction!r}: must be a number in (0, 1)")
    n = len(dataset)
    if n < 2:
        raise UsageError(f"{dataset.path}: {n} example(s) cannot be split into train and val")
    n_val = min(max(1, int(round(n * fraction))), n - 1)
    order = permutation(n, seed, epoch=-1)  # its own stream, never an epoch's order
    return dataset.subset(np.sort(order[n_val:])), dataset.subset(np.sort(order[:n_val]))
