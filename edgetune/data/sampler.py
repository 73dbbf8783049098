"""Deterministic, resumable batch order: (seed, epoch, batch index) fixes every batch.

The shuffle is our own splitmix64 hash sorted per epoch, not ``numpy.random``, so the order
does not depend on the numpy version either: a run resumed after an upgrade sees the same data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from edgetune.errors import UsageError

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15


def _mix(z):
    """The splitmix64 finalizer, on a Python int or a uint64 array (wrapping arithmetic)."""
    if isinstance(z, int):
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK
        return z ^ (z >> 31)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(n, seed, epoch)``."""
    base = _mix((_mix((seed + _GAMMA) & _MASK) ^ (epoch & _MASK)) + _GAMMA & _MASK)
    with np.errstate(over="ignore"):
        keys = np.arange(n, dtype=np.uint64) * np.uint64(_GAMMA) + np.uint64(base)
    return np.argsort(_mix(keys), kind="stable").astype(np.int64)


class BatchSampler:
    """Index batches for ``n`` examples; iterating goes from the current position to the
    epoch's end. The position is the *next* batch to hand out, so a checkpoint taken after
    training on a batch resumes with the one after it.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, drop_last: bool = False,
                 shuffle: bool = True):
        for name, v, lo in (("n", n, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise UsageError(f"{name}={v!r}: must be an integer >= {lo}")
        if drop_last and batch_size > n:
            raise UsageError(f"batch_size={batch_size} is more than the {n} examples and "
                             "drop_last is set: an epoch would have no batches")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.drop_last, self.shuffle = bool(drop_last), bool(shuffle)
        self.epoch, self.index = 0, 0
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its permutation)

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, permutation(self.n, self.seed, epoch))
        return self._order[1]

    def batch_indices(self, epoch: int, index: int) -> np.ndarray:
        """The example indices of batch ``index`` of ``epoch`` (a pure function of both)."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range: an epoch has {len(self)} batches")
        start = index * self.batch_size
        return self.order(epoch)[start:start + self.batch_size].copy()

    def __iter__(self) -> Iterator[np.ndarray]:
        epoch = self.epoch
        while self.epoch == epoch:
            idx = self.batch_indices(self.epoch, self.index)
            self.index += 1
            if self.index == len(self):
                self.epoch, self.index = self.epoch + 1, 0
            yield idx

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "n": self.n, "seed": self.seed,
                "batch_size": self.batch_size, "drop_last": self.drop_last,
                "shuffle": self.shuffle}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state``'s position; the rest must match this sampler, or the order would
        not be the one the checkpoint was trained with."""
        for key in ("n", "seed", "batch_size", "drop_last", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise UsageError(f"cannot resume: the checkpoint's data order has {key}="
                                 f"{state[key]!r}, this run has {key}={getattr(self, key)!r}")
        epoch: Any = state.get("epoch")
        index: Any = state.get("index")
        for name, v in (("epoch", epoch), ("index", index)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"cannot resume: sampler state {name}={v!r} must be an "
                                 "integer >= 0")
        if index >= len(self):
            raise UsageError(f"cannot resume: sampler state index={index} but an epoch has "
                             f"{len(self)} batches")
        self.epoch, self.index = epoch, index
