"""ALaST token selection: keep the tokens the class token attends to most.

Layer l keeps the class token plus the top ``keep - 1`` other tokens ranked by the class
token's attention (ALaST, arXiv 2408.08670, following EViT). Dropped tokens stay dropped for
the layers above. ``keep`` is a tensor so it can be a graph input that changes every step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgetune.schedule.alast.tokens import MIN_KEEP


def keep_top_tokens(
    x: Tensor, cls_attn: Tensor, keep: Tensor, key_bias: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """x: (B, N, D); cls_attn: (B, N) over x's tokens; keep: int64 scalar in [1, N], the number
    of tokens to keep including the class token. Returns the kept x and key bias.

    The graph does not clamp ``keep`` (a clamp against a traced size would be baked in as a
    constant): callers pass valid counts, and eager mode checks them.
    """
    if not torch.jit.is_tracing() and not 1 <= int(keep) <= x.shape[1]:
        raise ValueError(f"keep={int(keep)}: must be in [1, {x.shape[1]}] (tokens in this layer)")
    k = keep.reshape(()) - 1
    idx = torch.topk(cls_attn[:, 1:], k, dim=1).indices + 1  # (B, k)
    cls = x[:, :1]
    kept = torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    x = torch.cat([cls, kept], dim=1)
    if key_bias is not None:
        key_bias = torch.cat([key_bias[:, :1], torch.gather(key_bias, 1, idx)], dim=1)
    return x, key_bias


def budget_keep(budgets: Tensor, x: Tensor) -> Tensor:
    """Keep counts (L,) int64 from per-layer budgets (L,) for the tokens of ``x`` (B, N, D):
    the torch twin of :func:`edgetune.schedule.alast.tokens.step_keep`, which owns the rule

        keep_l = max(min(2, N), min(keep_{l−1}, max(1, ⌈b_{l+1}·N⌉))),   keep_{L−1} = keep_{L−2},

    in float64 like it (so both give the same counts for float32 budgets). N is read from the
    data, not its traced shape, so a graph with a dynamic sequence length keeps it dynamic.
    """
    n = torch.ones_like(x[0, :, 0], dtype=torch.float64).sum()
    want = torch.ceil(budgets.to(torch.float64) * n - 1e-9)
    want = torch.minimum(torch.maximum(want, torch.ones_like(want)), n)
    counts, prev = [], n
    for nxt in [*want[1:], n]:
        prev = torch.minimum(prev, nxt)
        counts.append(prev)
    floor = torch.minimum(n, torch.full_like(n, float(MIN_KEEP)))
    return torch.maximum(torch.stack(counts), floor).to(torch.int64)
