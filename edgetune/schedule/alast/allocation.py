"""Spread a total token budget over layers by importance, as non-increasing keep ratios.

Two steps, both exact and pure numpy:

- :func:`waterfill`: b_l = clip(c·p_l, lo, hi) with the scale c chosen so that mean(b) = β
  (layers with a larger share p_l get a larger budget; saturated layers give the rest away);
- :func:`nonincreasing`: the least-squares projection onto b_1 ≥ b_2 ≥ … ≥ b_L (pool adjacent
  violators). Tokens dropped by a layer stay dropped, so only non-increasing keep ratios can be
  run as given; the projection keeps the sum, so the mean stays β.
"""

from __future__ import annotations

import numpy as np

from edgetune.errors import UsageError


def waterfill(shares: np.ndarray, mean: float, lo: float, hi: float = 1.0) -> np.ndarray:
    """b = clip(c·shares, lo, hi) with mean(b) = ``mean`` (clamped into [lo, hi])."""
    p = np.asarray(shares, dtype=np.float64)
    if p.ndim != 1 or p.size < 1 or not np.all(np.isfinite(p)) or np.any(p < 0):
        raise UsageError(f"shares {np.asarray(shares).tolist()}: must be a 1-D array of numbers >= 0")
    if not 0 < lo <= hi:
        raise UsageError(f"waterfill bounds lo={lo}, hi={hi}: need 0 < lo <= hi")
    target = min(max(float(mean), lo), hi)
    if p.sum() <= 0:
        p = np.ones_like(p)  # no signal: every layer alike
    if target >= hi:
        return np.full(p.size, hi)
    if target <= lo:
        return np.full(p.size, lo)

    def mean_at(c: float) -> float:
        return float(np.clip(c * p, lo, hi).mean())

    # mean_at is continuous and non-decreasing in c; from lo (c = 0) it reaches hi once every
    # positive share saturates. Bisection on c to float precision.
    c_lo, c_hi = 0.0, hi / p[p > 0].min()
    if mean_at(c_hi) < target:  # zero shares stay at lo, so the mean cannot reach the target
        return np.clip(c_hi * p, lo, hi)
    for _ in range(200):
        c = 0.5 * (c_lo + c_hi)
        if mean_at(c) < target:
            c_lo = c
        else:
            c_hi = c
        if c_hi - c_lo <= 1e-15 * c_hi:
            break
    return np.clip(c_hi * p, lo, hi)


def nonincreasing(values: np.ndarray) -> np.ndarray:
    """Closest non-increasing sequence in least squares (pool adjacent violators); same sum."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 1 or not np.all(np.isfinite(v)):
        raise UsageError(f"values {np.asarray(values).tolist()}: must be a 1-D array of finite numbers")
    sums: list[float] = []
    counts: list[int] = []
    for x in v:
        sums.append(float(x))
        counts.append(1)
        # a block whose mean exceeds the one before it violates the order: pool the two
        while len(sums) > 1 and sums[-1] / counts[-1] > sums[-2] / counts[-2]:
            s, n = sums.pop(), counts.pop()
            sums[-1] += s
            counts[-1] += n
    return np.concatenate([np.full(n, s / n) for s, n in zip(sums, counts)])
