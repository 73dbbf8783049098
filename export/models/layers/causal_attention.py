"""Causal self-attention with grouped-query heads (GQA, Ainslie et al. 2023): H query heads
share H_kv key/value heads (H_kv divides H), each kv head serving H/H_kv query heads.

    attn(Q, K, V) = softmax(Q Kᵀ / √d_h + M) V,   M[i, j] = −∞ where key j comes after query i

Keys from before the queries (a KV cache, or a trainable prefix) are visible to every query:
with P of them, query i sees keys 0..P+i. Shapes stay symbolic for the ONNX tracer.
"""

from __future__ import annotations

import torch
from torch import Tensor


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, H_kv, N, d) → (B, H_kv·groups, N, d), each kv head repeated for its query heads."""
    if groups == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, groups, n, d).reshape(b, h * groups, n, d)


def causal_mask(n_queries: int | Tensor, n_keys: int | Tensor, dtype: torch.dtype) -> Tensor:
    """(Nq, Nk): 0 where query i may see key j (j ≤ Nk − Nq + i), the dtype's minimum elsewhere."""
    q = torch.arange(n_queries)[:, None] + (n_keys - n_queries)
    k = torch.arange(n_keys)[None, :]
    return (k > q).to(dtype) * torch.finfo(dtype).min


def causal_attention(q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None = None) -> Tensor:
    """q: (B, H, Nq, d); k, v: (B, H_kv, Nk, d) with Nk ≥ Nq (the earlier keys first);
    key_bias: (B, Nk) added to every query's scores (padding: a large negative number).
    Returns the context (B, H, Nq, d); softmax in float32."""
    groups = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    scores = scores + causal_mask(q.shape[2], k.shape[2], scores.dtype)
    if key_bias is not None:
        scores = scores + key_bias[:, None, None, :]
    probs = scores.float().softmax(dim=-1).to(q.dtype)
    return torch.matmul(probs, v)
