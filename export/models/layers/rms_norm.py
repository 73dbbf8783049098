"""RMSNorm (Zhang & Sennrich 2019), as LLaMA uses it: y = w · x / √(mean(x²) + ε), computed in
float32 whatever the input's dtype (Hugging Face's ``LlamaRMSNorm``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)
