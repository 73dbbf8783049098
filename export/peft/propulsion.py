"""Propulsion: steer frozen layers by scaling their outputs (Kowsher et al. 2024, arXiv 2409.10927).

    y = F(x) ⊙ z^k,   z ∈ R^{out} one entry per output dimension, z = 1 at init,

on linear layers and embeddings (k is the "degree"; the paper uses k = 15 on SST-2-like tasks,
15–55 elsewhere). Merged: W' = diag(z^k) W, b' = z^k ⊙ b (an embedding's rows times z^k).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgetune.config import check_int, check_names
from edgetune.export.peft.base import default_targets, find_targets, register_method, replace_module

DEFAULT_TARGETS = {
    "vit": ("qkv", "attn.proj", "mlp.fc1", "mlp.fc2"),
    "bert": ("query", "key", "value", "attention.output.dense", "intermediate.dense",
             "output.dense", "word_embeddings"),
    # every linear layer of the blocks (not the embedding, which a tied head shares)
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
}


@dataclass
class PropulsionConfig:
    degree: int = 15
    target_modules: tuple[str, ...] = ()  # empty: the model family's default

    def __post_init__(self) -> None:
        check_int(self, "degree", lo=1, hi=100)
        check_names(self, "target_modules", allow_empty=True)


class PropulsionScale(nn.Module):
    """Wraps a Linear or Embedding: base_layer(x) * z**degree over the output features."""

    def __init__(self, base_layer: nn.Linear | nn.Embedding, degree: int):
        super().__init__()
        self.base_layer = base_layer
        self.degree = degree
        out = base_layer.out_features if isinstance(base_layer, nn.Linear) else base_layer.embedding_dim
        self.propulsion_z = nn.Parameter(torch.ones(out))

    def forward(self, x: Tensor) -> Tensor:
        return self.base_layer(x) * self.propulsion_z.pow(self.degree)

    def adapter_params(self) -> list[str]:
        return ["propulsion_z"]

    def merge(self) -> nn.Module:
        s = self.propulsion_z.detach().pow(self.degree)
        base = self.base_layer
        with torch.no_grad():
            if isinstance(base, nn.Embedding):
                out = nn.Embedding(base.num_embeddings, base.embedding_dim)
                out.weight.copy_(base.weight * s)
                return out
            out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
            out.weight.copy_(base.weight * s[:, None])
            if base.bias is not None:
                out.bias.copy_(base.bias * s)
        return out

    def merge_recipe(self, name: str) -> dict[str, dict]:
        """W' = diag(z^k) W, b' = z^k ⊙ b; an embedding scales its features (columns)."""
        by, k, src = f"{name}.propulsion_z", int(self.degree), f"{name}.base_layer"
        axis = 1 if isinstance(self.base_layer, nn.Embedding) else 0
        out = {f"{name}.weight": {"op": "scale", "base": f"{src}.weight", "by": by, "axis": axis, "power": k}}
        if getattr(self.base_layer, "bias", None) is not None:
            out[f"{name}.bias"] = {"op": "scale", "base": f"{src}.bias", "by": by, "axis": 0, "power": k}
        return out


@register_method("propulsion", PropulsionConfig, "output scaling F(x) ⊙ z^k of linear layers and embeddings",
                 mergeable=True)
def inject(model, cfg: PropulsionConfig) -> None:
    targets = default_targets(cfg.target_modules, DEFAULT_TARGETS, model)
    for name, module in find_targets(model, targets, (nn.Linear, nn.Embedding)):
        replace_module(model, name, PropulsionScale(module, cfg.degree))
