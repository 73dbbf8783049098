"""Budget → tokens kept per layer (ALaST, arXiv 2408.08670).

A budget is the share of the tokens a layer is trained on, its *input* tokens ("layers that
were allocated lower budgets are trained with a reduced number of input tokens"). A block
selects at its output, by its own class-token attention, the tokens the next layer takes in,
so with ``keep_l`` the tokens leaving layer l:

    keep_l = min(keep_{l−1}, max(1, ⌈b_{l+1}·N⌉))   for l < L−1,   keep_{−1} = N
    keep_{L−1} = keep_{L−2}                          (the head reads the class token only:
                                                      dropping after the last layer saves nothing)

so layer 0 always sees all N tokens and layer l ≥ 1 sees ⌈b_l·N⌉ at most. N counts every
token, the class token included, and so does keep_l; the class token is always kept. Dropped
tokens stay dropped, so the counts never grow with depth.
"""

from __future__ import annotations

import numpy as np

from edgetune.errors import UsageError

# ⌈0.7·10⌉ must be 7, not 8 (0.7·10 = 7.000000000000001 in floating point)
_EPS = 1e-9
# what a step keeps at least: the class token and one other (a training step's floor; inference
# at trained budgets uses the same, so both see the same tokens)
MIN_KEEP = 2


def keep_counts(budgets: np.ndarray, n_tokens: int) -> np.ndarray:
    """Tokens each layer keeps, int64 array (L,), non-increasing, each in [1, n_tokens]."""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or n_tokens < 1:
        raise UsageError(f"n_tokens={n_tokens!r}: must be an integer >= 1 (class token included)")
    b = np.asarray(budgets, dtype=np.float64)
    if b.ndim != 1 or b.size < 1:
        raise UsageError(f"budgets shape {b.shape}: must be (L,) with L >= 1")
    if np.any(~np.isfinite(b)) or np.any(b < 0) or np.any(b > 1):
        raise UsageError(f"budgets {b.tolist()}: must all lie in [0, 1]")
    want = np.ceil(b * n_tokens - _EPS).astype(np.int64)
    want = np.clip(want, 1, n_tokens)
    # layer l+1's budget sets what leaves layer l; the last layer passes on what it took in
    return np.minimum.accumulate(np.append(want[1:], n_tokens))


def step_keep(budgets: np.ndarray, n_tokens: int) -> np.ndarray:
    """:func:`keep_counts` floored at ``min(MIN_KEEP, n_tokens)``: the counts a step runs with."""
    return np.maximum(keep_counts(budgets, n_tokens), min(MIN_KEEP, n_tokens)).astype(np.int64)
