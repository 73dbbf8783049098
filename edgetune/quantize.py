"""Symmetric int8 quantization of a weight matrix (numpy only: the exporter and ``edgetune
merge`` on the device both use it). Jacob et al. 2018 (arXiv 1712.05877), symmetric, no zero
point:

    s = max|b| / L over a group,   q = round(b / s) ∈ [−L, L],   |q·s − b| ≤ s / 2.

``quantize_columns``: one scale per column of a (K, N) matrix, L = 63 (7 bits: onnxruntime's
``DynamicQuantizeMatMul`` weights; why 7, see export/onnx/quantize.py). ``quantize_blocks``:
``MatMulNBits``' 8-bit layout, one scale per block of :data:`BLOCK` along K, L = 127.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32  # MatMulNBits' block along K (a power of two, >= 16)
COLUMN_LEVELS = 63  # DynamicQuantizeMatMul's weights: 7 bits
BLOCK_LEVELS = 127  # MatMulNBits' weights: 8 bits, stored as q + 128 (its default zero point)


def _symmetric(values: np.ndarray, axis: int, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(q as int16, s) with s = max|values| / levels along ``axis`` (1 where all are zero),
    q = round(values / s) ∈ [−levels, levels]."""
    amax = np.abs(values).max(axis=axis, keepdims=True)
    s = np.where(amax > 0, amax / levels, 1.0).astype(np.float32)
    return np.clip(np.rint(values / s), -levels, levels).astype(np.int16), s


def quantize_columns(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q as int8 in [−63, 63], s float32 per column) of a (K, N) matrix; an all-zero column
    gets s = 1."""
    q, s = _symmetric(np.asarray(b, dtype=np.float32), 0, COLUMN_LEVELS)
    return q.astype(np.int8), s.reshape(-1)


def quantize_blocks(b: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits' 8-bit layout of a (K, N) matrix: (uint8 (N, ⌈K/block⌉, block) holding
    q + 128, float32 scales (N·⌈K/block⌉,)); per block s = max|b| / 127 (1 for a zero block),
    K padded with zeros."""
    b = np.asarray(b, dtype=np.float32)
    k, n = b.shape
    nb = -(-k // block)
    cols = np.zeros((n, nb * block), np.float32)
    cols[:, :k] = b.T
    q, s = _symmetric(cols.reshape(n, nb, block), 2, BLOCK_LEVELS)
    return (q + 128).astype(np.uint8), s.reshape(-1)
