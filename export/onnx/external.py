"""Constant initializers written once for several graphs: ONNX external data in one file beside
them, each distinct tensor one aligned byte range that every graph holding it points at.

An int8 base puts its frozen weights into its graphs as constants (so MLAS pre-packs them), and a
block has up to 25 graphs (variants × dense twin × saving or recomputing): inline, each would
carry its own copy of the block's weights on disk. Small initializers (scales, shapes) stay
inline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx.external_data_helper import set_external_data

MIN_BYTES = 4096  # initializers from this size up go to the shared file
ALIGN = 4096      # each range starts on a page: onnxruntime may map it rather than copy it


class SharedData:
    """One external-data file (``path``) that graphs in its folder share."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.ranges: dict[str, tuple[int, int]] = {}  # content key → (offset, length)
        self.size = 0

    def externalize(self, model: onnx.ModelProto) -> int:
        """Move ``model``'s large initializers into the file (appending the ones not in it
        yet), in place; returns the bytes of the file ``model`` reads (a session holds them)."""
        reads = 0
        for t in model.graph.initializer:
            if len(t.raw_data) < MIN_BYTES:
                continue
            key = hashlib.sha256(t.name.encode() + bytes(str((t.data_type, list(t.dims))), "ascii")
                                 + t.raw_data).hexdigest()
            if key not in self.ranges:
                offset = -(-self.size // ALIGN) * ALIGN
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "ab") as f:
                    f.write(b"\0" * (offset - self.size))
                    f.write(t.raw_data)
                self.ranges[key] = (offset, len(t.raw_data))
                self.size = offset + len(t.raw_data)
            offset, length = self.ranges[key]
            set_external_data(t, self.path.name, offset, length)
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            reads += length
        return reads
