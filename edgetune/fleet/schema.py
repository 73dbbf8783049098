"""What a fleet's server accepts from a client: the bundle's trainable set, exactly.

:class:`TrainableSchema` is read from the bundle's files alone (the adaptive mode's index and
its safetensors), so the server needs neither torch nor an ONNX Runtime build. An update is
accepted when it names the same bundle (the manifest's sha256), exactly the trainable names,
float32 arrays of their shapes, every value finite; otherwise it is refused with the field.
No flwr here: this module is the contract, the Flower apps carry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.bundle import Bundle
from edgetune.errors import EdgetuneError, UsageError
from edgetune.runtime.sessions import load_params, read_index
from edgetune.train.exchange import checked_state

DTYPE = np.dtype(np.float32)


@dataclass(frozen=True)
class TrainableSchema:
    bundle_id: str                         # sha256 of the bundle's manifest
    shapes: dict[str, tuple[int, ...]]     # the trainable parameters, in the bundle's order

    @classmethod
    def of(cls, bundle: Bundle) -> TrainableSchema:
        names, params = _trainable(bundle)
        return cls(bundle.sha256, {n: tuple(params[n].shape) for n in names})

    @property
    def nbytes(self) -> int:
        """Bytes of one update's arrays (float32)."""
        return sum(int(np.prod(s)) for s in self.shapes.values()) * DTYPE.itemsize

    def check(self, arrays: Mapping[str, object], bundle_id: object) -> dict[str, np.ndarray]:
        """``arrays`` as float32 arrays in the bundle's order, or :class:`UsageError` naming the
        first field that differs (bundle id, a name, a shape, a dtype, non-finite values)."""
        if bundle_id != self.bundle_id:
            raise UsageError(f"bundle id {str(bundle_id)[:16]!r}: the server's bundle is "
                             f"{self.bundle_id[:16]!r}")
        return checked_state(arrays, self.shapes, dtype=DTYPE)


def initial_arrays(bundle: Bundle) -> dict[str, np.ndarray]:
    """The bundle's trainable parameters as exported: a fleet's round-0 state."""
    names, params = _trainable(bundle)
    return {n: params[n] for n in names}


def _trainable(bundle: Bundle) -> tuple[list[str], dict[str, np.ndarray]]:
    if "adaptive" not in bundle.modes:
        raise EdgetuneError(f"{bundle.path}: a fleet needs the bundle's adaptive mode (exported: "
                            f"{', '.join(bundle.modes)}); re-export with --mode adaptive or both")
    folder = Path(bundle.mode_dir("adaptive"))
    index = read_index(folder)
    params = load_params(folder / index["params"])
    names = list(index["trainable"])
    missing = [n for n in names if n not in params]
    if missing:
        raise EdgetuneError(f"{bundle.path}: trainable parameter {missing[0]!r} is not in "
                            f"{index['params']}")
    return names, params
