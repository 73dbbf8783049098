"""What the model wants from the data: :class:`ImageSpec` for vision, :class:`TextSpec` for text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgetune.bundle import TOKENIZER_FILE
from edgetune.config import check_int
from edgetune.errors import UsageError

#: Tried in order when ``TextSpec.text_column`` is left at its default.
TEXT_COLUMNS = ("text", "sentence", "review", "content", "document")
#: Tried in order when ``TextSpec.label_column`` is left at its default.
LABEL_COLUMNS = ("label", "labels", "class")


def _check_labels(obj) -> None:
    """``labels`` is None or distinct non-empty strings, at most ``num_classes`` of them."""
    v = obj.labels
    if v is None:
        return
    name = f"{type(obj).__name__}.labels"
    if isinstance(v, str) or not isinstance(v, (list, tuple)) \
            or not all(isinstance(s, str) and s for s in v):
        raise UsageError(f"{name}={v!r}: must be a list of non-empty strings")
    if len(set(v)) != len(v):
        raise UsageError(f"{name}={list(v)!r}: names must be distinct")
    if len(v) > obj.num_classes:
        raise UsageError(f"{name}: {len(v)} names but num_classes={obj.num_classes}")
    obj.labels = tuple(v)


@dataclasses.dataclass
class ImageSpec:
    """Images as the model takes them: ``pixel_values`` float32 N×C×H×W, normalized."""

    image_size: int | tuple[int, int] = 224
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    num_classes: int = 2
    labels: tuple[str, ...] | None = None  # class names by index (image folders)

    input_names = ("pixel_values",)

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
            raise UsageError(f"ImageSpec.image_size={self.image_size!r}: must be an integer >= 1 "
                             "or a (height, width) pair")
        self.image_size = (int(size[0]), int(size[1]))
        check_int(self, "channels", 1, 4)
        if self.channels not in (1, 3):
            raise UsageError(f"ImageSpec.channels={self.channels!r}: must be one of 1, 3")
        check_int(self, "num_classes", 2)
        for field in ("mean", "std"):
            v = getattr(self, field)
            v = (v,) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
            ok = isinstance(v, (list, tuple)) and len(v) in (1, self.channels) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x == x
                and abs(x) != float("inf") for x in v)
            if ok and field == "std":
                ok = all(x > 0 for x in v)
            if not ok:
                what = "positive numbers" if field == "std" else "finite numbers"
                raise UsageError(f"ImageSpec.{field}={getattr(self, field)!r}: must be 1 or "
                                 f"{self.channels} {what} (one per channel)")
            v = tuple(float(x) for x in v)
            setattr(self, field, v * self.channels if len(v) == 1 else v)
        _check_labels(self)


@dataclasses.dataclass
class TextSpec:
    """Text as the model takes it: ``input_ids`` and ``attention_mask``, int64 N×L."""

    tokenizer_path: str | Path = TOKENIZER_FILE
    max_length: int = 128
    num_classes: int = 2
    text_column: str = "text"
    label_column: str = "label"
    labels: tuple[str, ...] | None = None  # string label names by index

    input_names = ("input_ids", "attention_mask")

    def __post_init__(self) -> None:
        if not isinstance(self.tokenizer_path, (str, Path)) or not str(self.tokenizer_path):
            raise UsageError(f"TextSpec.tokenizer_path={self.tokenizer_path!r}: must be a path "
                             "to a tokenizer.json")
        self.tokenizer_path = Path(self.tokenizer_path)
        check_int(self, "max_length", 2)
        check_int(self, "num_classes", 2)
        for field in ("text_column", "label_column"):
            v = getattr(self, field)
            if not isinstance(v, str) or not v:
                raise UsageError(f"TextSpec.{field}={v!r}: must be a non-empty column name")
        _check_labels(self)

    def text_columns(self) -> tuple[str, ...]:
        """Column names to try, in order: the fallbacks only when left at the default."""
        return TEXT_COLUMNS if self.text_column == "text" else (self.text_column,)

    def label_columns(self) -> tuple[str, ...]:
        return LABEL_COLUMNS if self.label_column == "label" else (self.label_column,)


@dataclasses.dataclass
class LMSpec:
    """Text for a language model: ``input_ids`` int64 N×L and next-token ``labels`` N×L.

    Rows hold ``text`` (every token is learned) or ``prompt`` + ``completion`` (only the
    completion's tokens are). ``eos_id``: appended to every row (the model learns to stop);
    None when the model declares none. ``max_length``: rows longer are cut (the prompt side
    first stays whole; a row left with no target is an error). ``pack`` (``text`` rows only):
    every row's tokens concatenated and cut into rows of ``max_length`` (no padding, nothing cut
    off; attention then spans the texts within a row)."""

    tokenizer_path: str | Path = TOKENIZER_FILE
    max_length: int = 256
    eos_id: int | None = None
    text_column: str = "text"
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    pack: bool = False

    input_names = ("input_ids",)

    def __post_init__(self) -> None:
        if not isinstance(self.tokenizer_path, (str, Path)) or not str(self.tokenizer_path):
            raise UsageError(f"LMSpec.tokenizer_path={self.tokenizer_path!r}: must be a path "
                             "to a tokenizer.json")
        self.tokenizer_path = Path(self.tokenizer_path)
        check_int(self, "max_length", 2)
        if self.eos_id is not None:
            check_int(self, "eos_id", 0)
        if not isinstance(self.pack, bool):
            raise UsageError(f"LMSpec.pack={self.pack!r}: must be True or False")
        for field in ("text_column", "prompt_column", "completion_column"):
            v = getattr(self, field)
            if not isinstance(v, str) or not v:
                raise UsageError(f"LMSpec.{field}={v!r}: must be a non-empty column name")
