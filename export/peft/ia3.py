"""IA3: learned rescaling of activations (Liu et al. 2022, arXiv 2205.05638).

Attention keys/values: y = l ⊙ (W x + b). Feed-forward: y = W (l ⊙ x) + b. l = 1 at init.
Merged: W' = diag(l) W, b' = l ⊙ b (output scaling); W' = W diag(l) (input scaling). Shapes
and names mirror Hugging Face PEFT (``ia3_l`` of (out, 1) or, feed-forward, (1, in)).
On ViT's fused ``qkv`` the vector scales queries too (one vector over the fused output).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgetune.config import check_names
from edgetune.export.peft.base import default_targets, find_targets, matches, register_method, replace_module

# PEFT's defaults (llama: k, v and the MLP's down projection)
DEFAULT_TARGETS = {"vit": ("qkv", "mlp.fc2"), "bert": ("key", "value", "output.dense"),
                   "llama": ("k_proj", "v_proj", "down_proj"), "gpt2": ("c_attn", "mlp.c_proj")}
DEFAULT_FEEDFORWARD = {"vit": ("mlp.fc2",), "bert": ("output.dense",), "llama": ("down_proj",),
                       "gpt2": ("mlp.c_proj",)}


@dataclass
class IA3Config:
    target_modules: tuple[str, ...] = ()       # empty: the model family's default
    feedforward_modules: tuple[str, ...] = ()  # of those, the ones scaled on their input

    def __post_init__(self) -> None:
        check_names(self, "target_modules", allow_empty=True)
        check_names(self, "feedforward_modules", allow_empty=True)


class IA3Linear(nn.Module):
    def __init__(self, base_layer: nn.Linear, feedforward: bool):
        super().__init__()
        self.base_layer = base_layer
        self.feedforward = feedforward
        shape = (1, base_layer.in_features) if feedforward else (base_layer.out_features, 1)
        self.ia3_l = nn.Parameter(torch.ones(shape))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.ia3_l.flatten()
        return self.base_layer(x * scale) if self.feedforward else self.base_layer(x) * scale

    def adapter_params(self) -> list[str]:
        return ["ia3_l"]

    def merge(self) -> nn.Linear:
        base = self.base_layer
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(base.weight * self.ia3_l)  # (1,in) scales columns, (out,1) rows
            if base.bias is not None:
                out.bias.copy_(base.bias if self.feedforward else base.bias * self.ia3_l.flatten())
        return out

    def merge_recipe(self, name: str) -> dict[str, dict]:
        """W' = W diag(l) (feed-forward) or diag(l) W and b' = l ⊙ b."""
        by, src = f"{name}.ia3_l", f"{name}.base_layer"
        out = {f"{name}.weight": {"op": "scale", "base": f"{src}.weight", "by": by,
                                  "axis": 1 if self.feedforward else 0, "power": 1}}
        if self.base_layer.bias is not None and not self.feedforward:
            out[f"{name}.bias"] = {"op": "scale", "base": f"{src}.bias", "by": by, "axis": 0, "power": 1}
        return out


def hf_config(model, cfg: IA3Config) -> dict:
    """PEFT's ``IA3Config`` fields; whole paths, as a short name can be ambiguous (BERT's two
    ``output.dense``)."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, IA3Linear)]
    return dict(target_modules=sorted(n for n, _ in wrapped),
                feedforward_modules=sorted(n for n, m in wrapped if m.feedforward),
                fan_in_fan_out=False, init_ia3_weights=True)


@register_method("ia3", IA3Config, "learned scaling l ⊙ activation of keys, values, feed-forward",
                 mergeable=True, hf_peft_type="IA3", hf_config=hf_config)
def inject(model, cfg: IA3Config) -> None:
    targets = default_targets(cfg.target_modules, DEFAULT_TARGETS, model)
    ff = cfg.feedforward_modules or (DEFAULT_FEEDFORWARD[model.family] if not cfg.target_modules else ())
    for name, module in find_targets(model, targets, (nn.Linear,)):
        replace_module(model, name, IA3Linear(module, feedforward=matches(name, ff)))
