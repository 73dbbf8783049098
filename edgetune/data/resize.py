"""Pixel maths in numpy: bilinear resize (antialiased like Pillow's) and normalization."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def _weights(n_in: int, n_out: int) -> np.ndarray:
    """``n_out × n_in`` triangle-filter weights; widened when shrinking so every input pixel
    counts (Pillow's BILINEAR), identity when the size is unchanged."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    src = np.arange(n_in, dtype=np.float64) + 0.5
    w = np.clip(1.0 - np.abs(src[None, :] - centers[:, None]) / support, 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``images`` N×H×W×C (any real dtype) to float32 N×h×w×C, in the same value scale."""
    h, w = size
    x = images.astype(np.float32, copy=False)
    if x.shape[1:3] == (h, w):
        return x
    n, h0, w0, c = x.shape
    # two plain matrix products (fast BLAS), columns first: (n·h0·c × w0) @ (w0 × w)
    x = x.transpose(0, 1, 3, 2).reshape(-1, w0) @ _weights(w0, w).T            # n,h0,c,w
    x = x.reshape(n, h0, c * w).transpose(1, 0, 2).reshape(h0, -1)              # h0, n·c·w
    x = (_weights(h0, h) @ x).reshape(h, n, c, w)                               # rows
    return np.ascontiguousarray(x.transpose(1, 0, 3, 2), dtype=np.float32)      # n,h,w,c


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float],
              scale: float = 1.0 / 255.0) -> np.ndarray:
    """N×H×W×C pixels (``scale`` maps them to [0, 1]) to float32 N×C×H×W (x - mean) / std."""
    std32 = np.asarray(std, dtype=np.float32)
    mul, sub = np.float32(scale) / std32, np.asarray(mean, dtype=np.float32) / std32
    x = images.astype(np.float32) * mul - sub  # contiguous, channels last: fast
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
