"""The trainable parameters a :class:`~edgetune.train.Trainer` hands out and takes in, what
a fleet's clients exchange: name → float32 array in the bundle's order. Frozen parameters
never travel; a state that does not match the bundle is refused whole, before anything
changes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgetune.errors import UsageError


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def checked_state(arrays: Mapping[str, object], shapes: Mapping[str, tuple[int, ...]],
                  dtype: np.dtype | None = None) -> dict[str, np.ndarray]:
    """``arrays`` as float32 C-contiguous arrays, in ``shapes``' order, after checking that the
    names are exactly ``shapes``' and every array is a finite float array of its shape (of
    exactly ``dtype`` where given: what a fleet's server accepts)."""
    if not isinstance(arrays, Mapping):
        raise UsageError(f"trainable state: expected a mapping of name -> array, got {type(arrays).__name__}")
    missing = [n for n in shapes if n not in arrays]
    if missing:
        raise UsageError(f"trainable state lacks {len(missing)} of the bundle's {len(shapes)} "
                         f"trainable parameters: {_names(missing)}")
    unexpected = [str(n) for n in arrays if n not in shapes]
    if unexpected:
        raise UsageError(f"trainable state names {len(unexpected)} parameters this bundle does not "
                         f"train: {_names(unexpected)} (frozen parameters never travel)")
    out = {}
    for name, shape in shapes.items():
        arr = np.asarray(arrays[name])
        if arr.dtype.kind != "f" or (dtype is not None and arr.dtype != dtype):
            want = f"must be {np.dtype(dtype)}" if dtype is not None else "must be a float array"
            raise UsageError(f"trainable state {name!r}: dtype {arr.dtype}; {want}")
        if tuple(arr.shape) != tuple(shape):
            raise UsageError(f"trainable state {name!r}: shape {tuple(arr.shape)}; "
                             f"the bundle's is {tuple(shape)}")
        arr = np.ascontiguousarray(arr, np.float32)
        bad = arr.size - int(np.isfinite(arr).sum())
        if bad:
            raise UsageError(f"trainable state {name!r}: {bad} of {arr.size} values are not finite")
        out[name] = arr
    return out
