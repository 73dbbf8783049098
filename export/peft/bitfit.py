"""BitFit: train only the bias terms (Ben Zaken et al. 2022, arXiv 2106.10199).

    y = W x + b,  only b trained.  Nothing to merge: the biases are updated in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgetune.errors import UsageError
from edgetune.export.peft.base import register_method


@dataclass
class BitFitConfig:
    """No options: every bias of the backbone is trained."""


@register_method("bitfit", BitFitConfig, "train only the biases", mergeable=True)
def inject(model, cfg: BitFitConfig) -> None:
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    if not biases:
        raise UsageError(f"method bitfit: {type(model).__name__} ({model.family}) has no biases to "
                         "train (LLaMA-style layers have none; Qwen2's q/k/v projections do)")
    for p in biases:
        p.requires_grad_(True)
