"""Budget → which layers train this step (ALaST, arXiv 2408.08670).

K of the L layers train; the others are frozen for the step, and the backward pass stops at the
lowest trained layer. Two rules, as sources differ:

- ``"sample"``: K layers drawn without replacement, P(l) ∝ b_l among the layers not yet drawn
  (keys log(u_l)/b_l, u_l uniform, the K largest win: Efraimidis & Spirakis 2006);
- ``"topk"``: the K highest budgets; ties go to the deeper layer (a shorter backward pass).
"""

from __future__ import annotations

import numpy as np

from edgetune.errors import UsageError

SELECTIONS = ("sample", "topk")


def select_trained(
    budgets: np.ndarray, k: int, selection: str = "sample",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Boolean mask (L,) with exactly ``k`` True entries."""
    b = np.asarray(budgets, dtype=np.float64)
    n = b.size
    if b.ndim != 1 or n < 1 or np.any(~np.isfinite(b)) or np.any(b < 0):
        raise UsageError(f"budgets {b.tolist()}: must be a non-empty 1-D array of numbers >= 0")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise UsageError(f"k={k!r}: must be an integer in [1, {n}]")
    if selection not in SELECTIONS:
        raise UsageError(f"selection={selection!r}: must be one of {', '.join(SELECTIONS)}")
    mask = np.zeros(n, dtype=bool)
    if k == n:
        mask[:] = True
        return mask
    if selection == "topk":
        # stable sort on -b, reversed index order: equal budgets favour deeper layers
        order = n - 1 - np.argsort(-b[::-1], kind="stable")
        mask[order[:k]] = True
    else:
        if rng is None:
            raise UsageError("selection='sample' needs a numpy Generator (rng)")
        if np.count_nonzero(b > 0) < k:
            raise UsageError(f"budgets {b.tolist()}: fewer than k={k} layers have a budget > 0")
        # Efraimidis–Spirakis: the K largest keys log(u_l)/b_l are a draw without replacement
        # with P(l) ∝ b_l among the layers not yet drawn (one uniform per layer).
        u = rng.random(n)
        with np.errstate(divide="ignore"):
            keys = np.where(b > 0, np.log(u) / np.where(b > 0, b, 1.0), -np.inf)
        mask[np.argsort(-keys, kind="stable")[:k]] = True
    return mask


def lowest_trained(trained: np.ndarray) -> int:
    """Index of the first (lowest) trained layer; the backward pass runs no layer below it."""
    t = np.asarray(trained, dtype=bool)
    idx = np.flatnonzero(t)
    if idx.size == 0:
        raise UsageError("trained mask: at least one layer must train")
    return int(idx[0])
