"""PEFT methods, one file each, in one registry (``edgetune methods`` lists them)."""

# Importing a method's module registers it.
from edgetune.export.peft import adapter, bitfit, full, ia3, lora, prefix, prompt, propulsion  # noqa: F401
from edgetune.export.peft.apply import (
    adapter_modules,
    apply_method,
    get_method,
    list_methods,
    merge_model,
    trainable_names,
)
from edgetune.export.peft.base import METHODS, AdapterModule, Mergeable, Method, register_method
from edgetune.export.peft.hf_format import load_adapter, read_adapter, save_adapter

__all__ = [
    "METHODS", "AdapterModule", "Mergeable", "Method", "adapter_modules", "apply_method",
    "get_method", "list_methods", "load_adapter", "merge_model", "read_adapter",
    "register_method", "save_adapter", "trainable_names",
]
