"""Put a method on a model, list what it trains, merge it away."""

from __future__ import annotations

from typing import Any

from torch import nn

from edgetune.errors import UsageError
from edgetune.export.models.base import TransformerModel
from edgetune.export.peft.base import METHODS, AdapterModule, Mergeable, Method, replace_module


def get_method(name: str) -> Method:
    return METHODS.get(name)


def list_methods() -> list[Method]:
    return [m for _, m in METHODS.items()]


def apply_method(model: TransformerModel, method: str, config: Any = None) -> Any:
    """Inject ``method`` into ``model`` in place and set the trainable set: the method's
    parameters plus the task head; everything else frozen. Returns the validated config."""
    if getattr(model, "peft_method", None) is not None:
        raise UsageError(f"model already has method {model.peft_method!r}; build a fresh model")
    spec = METHODS.get(method)
    cfg = spec.make_config(config)
    for p in model.parameters():
        p.requires_grad_(False)
    spec.inject(model, cfg)
    for name in model.head_names:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    model.peft_method, model.peft_config = method, cfg
    return cfg


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def adapter_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Injected modules (LoRA layers, adapters, prefixes, prompts, ...) by name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdapterModule)]


def merge_model(model: TransformerModel) -> TransformerModel:
    """Fold the method into the base weights in place (merged output == unmerged output)."""
    method = getattr(model, "peft_method", None)
    if method is None:
        raise UsageError("model has no PEFT method to merge")
    spec = METHODS.get(method)
    if not spec.mergeable:
        raise UsageError(f"method {method!r} cannot be merged: it adds computation that no "
                         f"weight matrix can absorb; export the unmerged model instead")
    for name, module in [(n, m) for n, m in model.named_modules() if isinstance(m, Mergeable)]:
        replace_module(model, name, module.merge())
    model.peft_method = None
    return model
