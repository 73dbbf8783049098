"""Validation helpers for dataclass configs: errors name the field, the value and what is allowed.

Configs call these from ``__post_init__`` so an invalid config can never be constructed, and
build themselves from ``key=value`` strings (the CLI's ``--set``) without swallowing typos.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from edgetune.errors import UsageError
from edgetune.registry import unknown_name_message


def _where(obj: Any, field: str) -> str:
    return f"{type(obj).__name__}.{field}"


def check_int(obj: Any, field: str, lo: int | None = None, hi: int | None = None) -> None:
    v = getattr(obj, field)
    if isinstance(v, bool) or not isinstance(v, int):
        raise UsageError(f"{_where(obj, field)}={v!r}: must be an integer{_range(lo, hi)}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise UsageError(f"{_where(obj, field)}={v!r}: must be an integer{_range(lo, hi)}")


def check_float(
    obj: Any, field: str, lo: float | None = None, hi: float | None = None,
    lo_open: bool = False, hi_open: bool = False,
) -> None:
    v = getattr(obj, field)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        rng = f" in {lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{rb}"
        raise UsageError(f"{_where(obj, field)}={v!r}: must be a finite number{rng}")
    setattr(obj, field, float(v))


def check_choice(obj: Any, field: str, choices: Iterable[str]) -> None:
    v = getattr(obj, field)
    choices = list(choices)
    if v not in choices:
        raise UsageError(f"{_where(obj, field)}={v!r}: must be one of {', '.join(map(str, choices))}")


def check_names(obj: Any, field: str, allow_empty: bool = False) -> None:
    """A tuple of non-empty strings (module-name patterns, say); lists are turned into tuples."""
    v = getattr(obj, field)
    if isinstance(v, str):
        v = (v,)
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) and s for s in v):
        raise UsageError(f"{_where(obj, field)}={v!r}: must be a list of non-empty strings")
    if not v and not allow_empty:
        raise UsageError(f"{_where(obj, field)}=(): must name at least one module")
    setattr(obj, field, tuple(v))


def _range(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def _parse_value(text: str, annotation: Any) -> Any:
    """Parse a ``--set`` string into the field's type (int, float, bool, str or tuple of str)."""
    origin = typing.get_origin(annotation)
    if annotation is bool or annotation == "bool":
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true/false")
    if annotation is int or annotation == "int":
        return int(text)
    if annotation is float or annotation == "float":
        return float(text)
    if origin is tuple or (isinstance(annotation, str) and annotation.startswith("tuple")):
        return tuple(s.strip() for s in text.split(",") if s.strip())
    return text


def from_mapping(cls: type, values: Mapping[str, Any], what: str = "option") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys raise with "did you mean"."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in fields:
            raise UsageError(unknown_name_message(f"{cls.__name__} {what}", key, sorted(fields)))
    return cls(**values)


def from_strings(cls: type, pairs: Iterable[str]) -> Any:
    """Build dataclass ``cls`` from ``key=value`` strings, parsing each by the field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: expected key=value")
        if key not in fields:
            raise UsageError(unknown_name_message(f"{cls.__name__} option", key, sorted(fields)))
        try:
            values[key] = _parse_value(text.strip(), hints.get(key, str))
        except ValueError:
            raise UsageError(f"{cls.__name__}.{key}={text!r}: not a valid {hints.get(key)}") from None
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out
