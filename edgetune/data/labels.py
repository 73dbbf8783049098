"""Labels to class indices: integers as they are, names through a sorted label vocabulary."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgetune.data.errors import DataError

_INT = re.compile(r"^[+-]?\d+$")


def check_range(labels: np.ndarray, num_classes: int, path, where: Callable[[int], str]) -> None:
    """Every label in ``[0, num_classes)``, else name the first one that is not."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(path, f"{where(i)}: label {int(labels[i])} out of range [0, {num_classes}) "
                              f"(the model has {num_classes} classes; {bad.size} bad labels)")


def _one(value, path, at: str) -> int | str:
    """A raw label (JSON value or CSV cell) as an int or a class name."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise DataError(path, f"{at}: label {value!r} is not an integer or a class name")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(path, f"{at}: label is {value} (NaN/inf)")
        if not value.is_integer():
            raise DataError(path, f"{at}: non-integer label {value}")
        return int(value)
    text = str(value).strip()
    if not text:
        raise DataError(path, f"{at}: empty label")
    if _INT.match(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return _one(number, path, at)


def to_indices(
    raw: Sequence, path, where: Callable[[int], str], num_classes: int,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Map raw labels to int64 indices; returns ``(indices, names)``.

    With ``names`` (from the spec, say the training set's) a label equal to a name maps to its
    position. Without, all-integer labels are used as they are, and all-name labels get the
    sorted set of names as their vocabulary, which is returned so that val/test data reuse it.
    """
    lookup = {n: i for i, n in enumerate(names)} if names is not None else None
    values: list[Any] = []  # ints and names; ints only once the names are mapped
    for i, value in enumerate(raw):
        if lookup is not None and isinstance(value, str) and value.strip() in lookup:
            values.append(lookup[value.strip()])
        else:
            values.append(_one(value, path, where(i)))
    first_name = next((i for i, v in enumerate(values) if isinstance(v, str)), None)
    if first_name is not None:
        if lookup is not None:
            raise DataError(path, f"{where(first_name)}: unknown label {values[first_name]!r} "
                                  f"(known: {', '.join(names or ())})")
        first_int = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if first_int is not None:
            raise DataError(path, f"{where(first_int)}: label {values[first_int]} is a number "
                                  f"but {where(first_name)} has the name {values[first_name]!r}")
        names = tuple(sorted(set(values)))
        if len(names) > num_classes:
            raise DataError(path, f"{len(names)} distinct labels ({_short(names)}) but the model "
                                  f"has {num_classes} classes")
        lookup = {n: i for i, n in enumerate(names)}
        values = [lookup[v] for v in values]
    bad = [i for i, v in enumerate(values) if not 0 <= v < num_classes]
    if bad:
        raise DataError(path, f"{where(bad[0])}: label {values[bad[0]]} out of range "
                              f"[0, {num_classes}) (the model has {num_classes} classes; "
                              f"{len(bad)} bad labels)")
    out = np.asarray(values, dtype=np.int64).reshape(-1)
    return out, (tuple(names) if names is not None else None)


def _short(names: Sequence[str], k: int = 6) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... {len(names) - k} more" if len(names) > k else "")
