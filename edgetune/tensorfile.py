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
import os
import struct
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

DTYPES: dict[np.dtype, str] = {
    np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL"}


def save_tensors(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` (C-contiguous numpy arrays) to ``path`` in the safetensors format,
    flushed and fsynced; the caller makes it atomic (a temporary folder or name)."""

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
            f.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
        f.flush()
        os.fsync(f.fileno())


def load_tensors(path: str | Path, into: Mapping[str, np.ndarray] | None = None,
                 skip: Collection[str] = ()) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file but those named in ``skip``, read one at a time with
    plain reads (no mmap: a mapped file's pages would count in this process's RSS, a second
    copy at load). With ``into``, a tensor whose name is there is read straight into that array."""
    from edgetune.errors import EdgetuneError

    names = {v: k for k, v in DTYPES.items()}
    out: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > os.fstat(f.fileno()).st_size - 8:
                raise ValueError(f"header of {size} bytes in a shorter file")
            header = json.loads(f.read(size))
            for name, info in header.items():
                if name == "__metadata__" or name in skip:
                    continue
                dtype, shape = names[info["dtype"]], tuple(info["shape"])
                start, end = info["data_offsets"]
                if 8 + size + end > os.fstat(f.fileno()).st_size or start > end:
                    raise ValueError(f"{name}: bytes {start}..{end} lie past the end of the file")
                arr = into.get(name) if into is not None else None
                if arr is not None and arr.shape != shape:
                    raise ValueError(f"{name}: shape {shape} in the file, {arr.shape} expected")
                if arr is None or arr.dtype != dtype or not arr.flags.c_contiguous:
                    arr = np.empty(shape, dtype)
                if end - start != arr.nbytes:
                    raise ValueError(f"{name}: {end - start} bytes for shape {shape} {dtype}")
                f.seek(8 + size + start)
                if arr.nbytes and f.readinto(arr.reshape(-1).view(np.uint8).data) != arr.nbytes:
                    raise ValueError(f"{name}: the file ends early")
                if into is not None and name in into and into[name] is not arr:
                    into[name][...] = arr
                    arr = into[name]
                out[name] = arr
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise EdgetuneError(f"{path}: not a readable safetensors file ({e})") from None
    return out
