"""The merge recipe's ops: how ``edgetune merge`` folds a trained adapter into a base tensor (numpy).

A recipe (``inference/graphs.json`` → ``merge.tensors``) maps each merged tensor to an entry
``{"op": NAME, "base": <base tensor's name>, ...}``; NAME is one registered here:

    copy   W' = W                                      {"op": "copy", "base"}
    lora   W' = W + scale · B A                        {"op": "lora", "base", "A", "B", "scale"}
    scale  W' = W ⊙ s^power along axis (rows 0/cols 1)  {"op": "scale", "base", "by", "axis", "power"}

A new op is one function here, registered with the entry keys that name trained tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetune.errors import EdgetuneError

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class MergeOp:
    fold: Callable[[dict[str, Any], np.ndarray, Arrays], np.ndarray]  # (entry, base, trained)
    reads: tuple[str, ...]  # entry keys that name trained tensors


MERGE_OPS: dict[str, MergeOp] = {}


def merge_op(name: str, reads: tuple[str, ...] = ()):
    """Decorator on ``fold(entry, base, trained) -> merged``."""

    def wrap(fold):
        MERGE_OPS[name] = MergeOp(fold, reads)
        return fold

    return wrap


def _op(entry: dict[str, Any]) -> MergeOp:
    op = entry["op"]
    if op not in MERGE_OPS:
        raise EdgetuneError(f"merge recipe: unknown op {op!r} (a newer exporter?)")
    return MERGE_OPS[op]


def apply_recipe(entry: dict[str, Any], base: np.ndarray, trained: Arrays) -> np.ndarray:
    """One merged tensor from its base value and the trained adapter."""
    return _op(entry).fold(entry, np.asarray(base, np.float32), trained)


def recipe_inputs(entries: Iterable[dict[str, Any]]) -> set[str]:
    """The trained tensors the entries read."""
    return {e[k] for e in entries for k in _op(e).reads if k in e}


@merge_op("copy")
def fold_copy(entry, base, trained):
    """W' = W."""
    return base


@merge_op("lora", reads=("A", "B"))
def fold_lora(entry, base, trained):
    """W' = W + scale · B A."""
    update = trained[entry["B"]].astype(np.float32) @ trained[entry["A"]].astype(np.float32)
    return (base + np.float32(entry["scale"]) * update).astype(np.float32)


@merge_op("scale", reads=("by",))
def fold_scale(entry, base, trained):
    """W' = W ⊙ s^power: a vector scales a 1-D base, else its rows (axis 0) or columns (axis 1)."""
    s = trained[entry["by"]].astype(np.float32).reshape(-1) ** int(entry["power"])
    if base.ndim == 1:
        return base * s
    return base * (s[:, None] if int(entry["axis"]) == 0 else s[None, :])
