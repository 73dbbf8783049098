"""The data a bundle expects: its input spec turned into a loader spec."""

from __future__ import annotations

from pathlib import Path

from edgetune.bundle import Bundle
from edgetune.data import ImageSpec, LMSpec, TextSpec, load_dataset
from edgetune.data.base import Dataset
from edgetune.errors import UsageError


def data_spec(bundle: Bundle, labels: tuple[str, ...] | None = None, text_column: str = "text",
              label_column: str = "label", pack: bool = False) -> ImageSpec | TextSpec | LMSpec:
    """``pack``: a language model's text rows packed into full-length rows (LMSpec)."""
    inp = bundle.inputs
    if inp["kind"] == "image":
        return ImageSpec(image_size=inp["image_size"], channels=inp["channels"], mean=tuple(inp["mean"]),
                         std=tuple(inp["std"]), num_classes=bundle.num_classes, labels=labels)
    tokenizer = bundle.tokenizer_path
    if tokenizer is None:  # what TextSpec says of a missing path
        raise UsageError("TextSpec.tokenizer_path=None: must be a path to a tokenizer.json")
    if bundle.is_lm:
        return LMSpec(tokenizer_path=tokenizer, max_length=inp["max_tokens"], eos_id=inp.get("eos_id"),
                      text_column=text_column, pack=pack)
    if pack:
        raise UsageError("pack: only a language model's text rows pack (this bundle is a "
                         f"{bundle.task} model)")
    return TextSpec(tokenizer_path=tokenizer, max_length=inp["max_tokens"],
                    num_classes=bundle.num_classes, text_column=text_column,
                    label_column=label_column, labels=labels)


def load_data(bundle: Bundle, path: str | Path, labels: tuple[str, ...] | None = None,
              text_column: str = "text", label_column: str = "label", pack: bool = False) -> Dataset:
    """Load and check ``path`` for ``bundle``; string labels map through ``labels`` if given;
    ``pack``: a language model's text rows packed into full-length rows."""
    return load_dataset(path, data_spec(bundle, labels, text_column, label_column, pack))
