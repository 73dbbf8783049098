"""Bottleneck adapters (Houlsby et al. 2019, arXiv 1902.00751).

After a sub-layer's output projection, before the residual add:

    h ← h + W_up σ(W_down h + b_down) + b_up,   W_up = 0, b_up = 0 at init (exact identity).

Not mergeable: σ is non-linear.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from edgetune.config import check_choice, check_int, check_names
from edgetune.export.peft.base import default_targets, find_targets, register_method, replace_module

# Houlsby's two places: after attention's output projection and after the feed-forward's.
DEFAULT_TARGETS = {"vit": ("attn.proj", "mlp.fc2"), "bert": ("output.dense",),
                   "llama": ("o_proj", "down_proj"), "gpt2": ("attn.c_proj", "mlp.c_proj")}
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass
class AdapterConfig:
    bottleneck: int = 64
    activation: str = "gelu"
    target_modules: tuple[str, ...] = ()  # empty: the model family's default

    def __post_init__(self) -> None:
        check_int(self, "bottleneck", lo=1)
        check_choice(self, "activation", sorted(ACTIVATIONS))
        check_names(self, "target_modules", allow_empty=True)


class BottleneckAdapter(nn.Module):
    """Wraps a linear layer: y = base(x); y + up(σ(down(y)))."""

    def __init__(self, base_layer: nn.Linear, bottleneck: int, activation: str):
        super().__init__()
        self.base_layer = base_layer
        d = base_layer.out_features
        self.adapter_down = nn.Linear(d, bottleneck)
        self.act = ACTIVATIONS[activation]()
        self.adapter_up = nn.Linear(bottleneck, d)
        nn.init.normal_(self.adapter_down.weight, std=0.02)
        nn.init.zeros_(self.adapter_down.bias)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base_layer(x)
        return y + self.adapter_up(self.act(self.adapter_down(y)))

    def adapter_params(self) -> list[str]:
        return ["adapter_down.weight", "adapter_down.bias", "adapter_up.weight", "adapter_up.bias"]


@register_method("adapter", AdapterConfig, "Houlsby bottleneck adapters after output projections",
                 mergeable=False)
def inject(model, cfg: AdapterConfig) -> None:
    targets = default_targets(cfg.target_modules, DEFAULT_TARGETS, model)
    for name, module in find_targets(model, targets, (nn.Linear,)):
        replace_module(model, name, BottleneckAdapter(module, cfg.bottleneck, cfg.activation))
