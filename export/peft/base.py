"""The PEFT method registry and what every method shares.

A method is a validated config dataclass plus ``inject(model, cfg)``, registered with
``register_method`` together with its hooks: its fields of Hugging Face PEFT's config and the
on-disk keys it names itself (``hf_format``). Injected modules follow one-method
protocols, torchtune-style: ``AdapterModule.adapter_params()`` names the parameters a method
trains, ``Mergeable.merge()`` returns a plain module computing the same function, and
``MergeRecipe.merge_recipe(name)`` says how the device folds it (``edgetune.merge_ops``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from edgetune.config import from_mapping, from_strings
from edgetune.errors import UsageError
from edgetune.export.models.base import TransformerModel
from edgetune.registry import Registry


@runtime_checkable
class AdapterModule(Protocol):
    def adapter_params(self) -> list[str]:
        """Names (relative to this module) of the parameters the method trains."""


@runtime_checkable
class Mergeable(Protocol):
    def merge(self) -> nn.Module:
        """A plain module (no adapter) that computes exactly what this one does."""


@runtime_checkable
class MergeRecipe(Protocol):
    def merge_recipe(self, name: str) -> dict[str, dict]:
        """Merged tensor name → recipe entry (an ``edgetune.merge_ops`` op) for the tensors this
        layer, called ``name``, changes; the others are copied from ``base_layer``."""


HfConfig = Callable[[TransformerModel, Any], dict]
AdapterKeys = Callable[[TransformerModel], dict[str, list[str]]]


@dataclass(frozen=True)
class Method:
    name: str
    config: type
    inject: Callable[[TransformerModel, Any], None]
    description: str
    mergeable: bool
    hf_peft_type: str | None = None  # set where Hugging Face PEFT has the method
    hf_config: HfConfig | None = None  # (model, cfg) → the method's fields of adapter_config.json
    adapter_keys: AdapterKeys | None = None  # model → its own on-disk keys: parameters joined on dim 1
    prompt_learning: bool = False  # PEFT keys its tensors under base_model., not base_model.model.

    def make_config(self, cfg: Any = None) -> Any:
        """A config from None (defaults), a mapping, ``key=value`` strings or a config."""
        if cfg is None:
            return self.config()
        if isinstance(cfg, self.config):
            return cfg
        if isinstance(cfg, Mapping):
            return from_mapping(self.config, cfg)
        if isinstance(cfg, (list, tuple)) and all(isinstance(s, str) for s in cfg):
            return from_strings(self.config, cfg)
        raise UsageError(f"config for method {self.name!r}: expected {self.config.__name__}, "
                         f"a dict or key=value strings, got {type(cfg).__name__}")


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, config: type, description: str, mergeable: bool,
                    hf_peft_type: str | None = None, hf_config: HfConfig | None = None,
                    adapter_keys: AdapterKeys | None = None, prompt_learning: bool = False):
    """Decorator on ``inject(model, cfg)``."""

    def wrap(inject):
        METHODS.add(name, Method(name, config, inject, description, mergeable, hf_peft_type,
                                 hf_config, adapter_keys, prompt_learning))
        return inject

    return wrap


# ------------------------------------------------------------------------ module targeting

def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Hugging Face PEFT's rule: a module matches a pattern equal to its name or to a
    dot-separated suffix of it (``output.dense`` matches ``encoder.layer.0.output.dense``)."""
    return any(name == p or name.endswith("." + p) for p in patterns)


def find_targets(model: nn.Module, patterns: tuple[str, ...], types: tuple[type, ...],
                 field: str = "target_modules") -> list[tuple[str, nn.Module]]:
    """Modules of ``types`` whose names match ``patterns``; an error if none does."""
    found = [(n, m) for n, m in model.named_modules() if matches(n, patterns) and isinstance(m, types)]
    if not found:
        kinds = "/".join(t.__name__ for t in types)
        names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, types)})
        raise UsageError(f"{field}={list(patterns)!r} matched no {kinds} module of "
                         f"{type(model).__name__}; names there: {', '.join(names)}")
    return found


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def default_targets(cfg_targets: tuple[str, ...], defaults: Mapping[str, tuple[str, ...]],
                    model: TransformerModel) -> tuple[str, ...]:
    """The config's targets, or the method's default for the model family."""
    if cfg_targets:
        return cfg_targets
    if model.family not in defaults:
        raise UsageError(f"no default target_modules for a {model.family!r} model: pass "
                         f"target_modules (families with defaults: {', '.join(defaults)})")
    return defaults[model.family]
