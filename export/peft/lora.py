"""LoRA: low-rank updates of frozen linear layers (Hu et al. 2021, arXiv 2106.09685).

    y = W x + b + (α / r) · B A x,   A ∈ R^{r×in}, B ∈ R^{out×r}, B = 0 at init.

Merged: W' = W + (α / r) · B A. Names mirror Hugging Face PEFT (``base_layer``, ``lora_A``,
``lora_B``), so saved adapters load there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgetune.config import check_float, check_int, check_names
from edgetune.export.peft.base import default_targets, find_targets, register_method, replace_module

DEFAULT_TARGETS = {"vit": ("qkv",), "bert": ("query", "value"), "llama": ("q_proj", "v_proj"),
                   "gpt2": ("c_attn",)}  # PEFT's


@dataclass
class LoraConfig:
    r: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ()  # empty: the model family's default

    def __post_init__(self) -> None:
        check_int(self, "r", lo=1, hi=4096)
        check_float(self, "alpha", lo=0.0, lo_open=True)
        check_names(self, "target_modules", allow_empty=True)

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


class LoraLinear(nn.Module):
    def __init__(self, base_layer: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / r
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        # x·Wᵀ + b + (α/r)·(x·Aᵀ)·Bᵀ: W stays a product of its own, as an int8 frozen base needs
        self.factored = False

    def forward(self, x: Tensor) -> Tensor:
        if self.factored:
            return (F.linear(x, self.base_layer.weight, self.base_layer.bias)
                    + F.linear(F.linear(x, self.lora_A.weight), self.lora_B.weight) * self.scaling)
        # One product with the merged weight W + (α/r)·B·A (out×in, cheap), not x·Wᵀ + (α/r)·(x·Aᵀ)·Bᵀ:
        # the factored form adds two full-size products of inner dimension r (the B branch forward,
        # its input gradient backward), a full-size Add and a Sum of two input gradients, which
        # made LoRA slower than full fine-tuning; the merged one runs full fine-tuning's matmuls
        # less the frozen weights' own updates. The same sum, in another fp32 order.
        return F.linear(x, self.merged_weight(), self.base_layer.bias)

    def merged_weight(self) -> Tensor:
        return self.base_layer.weight + (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def adapter_params(self) -> list[str]:
        return ["lora_A.weight", "lora_B.weight"]

    def merge(self) -> nn.Linear:
        base = self.base_layer
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.merged_weight())
            if base.bias is not None:
                out.bias.copy_(base.bias)
        return out

    def merge_recipe(self, name: str) -> dict[str, dict]:
        """W' = W + scale · B A."""
        return {f"{name}.weight": {"op": "lora", "base": f"{name}.base_layer.weight",
                                   "A": f"{name}.lora_A.weight", "B": f"{name}.lora_B.weight",
                                   "scale": float(self.scaling)}}


def factor(model: nn.Module, on: bool = True) -> int:
    """Set every LoRA layer of ``model`` to the factored product (``on``) or the merged one;
    returns how many layers."""
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    for m in layers:
        m.factored = on
    return len(layers)


def hf_config(model, cfg: LoraConfig) -> dict:
    """PEFT's ``LoraConfig`` fields; targets by their last name, as PEFT matches them."""
    targets = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, LoraLinear)})
    return dict(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, bias="none",
                target_modules=targets, init_lora_weights=True,
                # PEFT's flag for Hugging Face GPT-2's Conv1D base weights (in × out); the pairs
                # themselves have the same shapes either way
                fan_in_fan_out=model.family == "gpt2")


@register_method("lora", LoraConfig, "low-rank update W + (α/r)·B·A of linear layers",
                 mergeable=True, hf_peft_type="LORA", hf_config=hf_config)
def inject(model, cfg: LoraConfig) -> None:
    targets = default_targets(cfg.target_modules, DEFAULT_TARGETS, model)
    for name, module in find_targets(model, targets, (nn.Linear,)):
        replace_module(model, name, LoraLinear(module, cfg.r, cfg.alpha))
