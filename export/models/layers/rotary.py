"""Rotary position embeddings (RoPE, Su et al. 2021, arXiv 2104.09864), as LLaMA applies them.

For position p and frequency θ_i = base^(−2i/d) (i < d/2), each query/key pair of halves
(x₁, x₂) rotates by the angle p·θ_i:

    rope(x) = x · cos(pθ) + rotate_half(x) · sin(pθ),   rotate_half([x₁, x₂]) = [−x₂, x₁]

``llama3`` scaling (Llama 3.1/3.2) stretches the low frequencies by ``factor`` and blends the
middle band (Hugging Face's ``_compute_llama3_parameters``). Positions are computed in the
graph from the sequence length (plus an ``offset``: the tokens before these, a KV cache's),
so a traced model keeps the length symbolic.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from edgetune.errors import UsageError

SCALINGS = ("default", "llama3")


def inverse_frequencies(head_dim: int, base: float, scaling: dict | None = None) -> Tensor:
    """θ_i for i < head_dim/2 (float32), scaled as ``scaling`` says (None or type default: as is)."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv.float()
    if kind != "llama3":
        raise UsageError(f"rope_scaling type {kind!r}: supported are {', '.join(SCALINGS)}")
    factor = float(scaling["factor"])
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    mid = (1 - smooth) * scaled / factor + smooth * scaled
    is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_mid, mid, scaled).float()


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Rotary(nn.Module):
    """cos and sin tables for ``n`` positions from ``offset``: (n, head_dim) each."""

    def __init__(self, head_dim: int, base: float, scaling: dict | None = None):
        super().__init__()
        self.register_buffer("inv_freq", inverse_frequencies(head_dim, base, scaling), persistent=False)

    def forward(self, n: int | Tensor, offset: int | Tensor = 0) -> tuple[Tensor, Tensor]:
        positions = torch.arange(n, dtype=torch.float32, device=self.inv_freq.device) + offset
        freqs = positions[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos(), emb.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, H, N, head_dim); cos, sin: (N, head_dim)."""
    return x * cos + rotate_half(x) * sin
