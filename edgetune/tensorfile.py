"""safetensors files written and read one tensor at a time, so a checkpoint costs no copy.

``safetensors.numpy.save_file`` builds the whole file in memory (a second copy of every
tensor); a checkpoint of full fine-tuning would then need twice its state on top of training.
:func:`save_tensors` writes the format directly: an 8-byte little-endian header length, the
JSON header (dtype, shape, byte offsets per tensor; padded with spaces to a multiple of 8),
then each array's bytes straight from its buffer. :func:`load_tensors` reads one tensor at a
time. Files are the standard format: ``safetensors`` reads them, and they read its files.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Mapping

import numpy as np

DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
          np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8",
          np.dtype(np.bool_): "BOOL"}


def save_tensors(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` (C-contiguous numpy arrays) to ``path`` in the safetensors format,
    flushed and fsynced; the caller makes it atomic (a temporary folder or name)."""
    import os

    header: dict[str, object] = {}
    offset = 0
    for name, arr in arrays.items():
        if arr.dtype not in DTYPES:
            raise TypeError(f"{name}: dtype {arr.dtype} is not one of {sorted(map(str, DTYPES))}")
        header[name] = {"dtype": DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays.values():
            f.write(memoryview(np.ascontiguousarray(arr)).cast("B"))
        f.flush()
        os.fsync(f.fileno())


def load_tensors(path: str | Path, into: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, read one at a time. With ``into``, tensors whose
    name is there are copied into that array in place (no second copy of the file)."""
    from safetensors import safe_open

    out: dict[str, np.ndarray] = {}
    with safe_open(str(path), "numpy") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            if into is not None and name in into:
                into[name][...] = t
                out[name] = into[name]
            else:
                out[name] = np.require(t, requirements=["C", "W"])
    return out
