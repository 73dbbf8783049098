"""Images from ``.npz`` files: ``x`` uint8 N×H×W or N×H×W×C, ``y`` integer class indices."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import cast

import numpy as np

from edgetune.data.base import Dataset
from edgetune.data.errors import DataError, check_file, first_line
from edgetune.data.labels import check_range, to_indices
from edgetune.data.resize import normalize, resize
from edgetune.data.spec import ImageSpec


class ArrayImageDataset(Dataset):
    """Images held in memory as N×H×W×C; resized and normalized per batch."""

    input_names = ("pixel_values",)

    def __init__(self, path: Path, x: np.ndarray, labels: np.ndarray, spec: ImageSpec,
                 scale: float = 1.0 / 255.0, label_names: tuple[str, ...] | None = None):
        self.path, self.x, self.labels, self.spec = Path(path), x, labels, spec
        self.scale, self.label_names = scale, label_names

    def _inputs(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        x = resize(self.x[idx], cast(tuple[int, int], self.spec.image_size))  # a pair after __post_init__
        if x.shape[-1] != self.spec.channels:  # grayscale data, colour model
            x = np.repeat(x, self.spec.channels, axis=-1)
        return {"pixel_values": normalize(x, self.spec.mean, self.spec.std, self.scale)}


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(path, f"not a valid .npz file ({first_line(e)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(path, "holds a single array, not arrays x and y "
                              "(save with numpy.savez(path, x=images, y=labels))")
    with archive:
        arrays = {}
        for key in ("x", "y"):
            if key not in archive.files:
                have = ", ".join(archive.files) or "none"
                raise DataError(path, f"no array {key!r} (arrays: {have}; expected x = images, "
                                      "y = labels)")
            try:
                arrays[key] = archive[key]
            except ValueError:
                raise DataError(path, f"array {key!r} holds Python objects; save numeric arrays "
                                      "(pickled data is never loaded)") from None
            except Exception as e:  # a damaged member: zlib, CRC, truncated
                raise DataError(path, f"cannot read array {key!r} ({first_line(e)})") from None
    return arrays["x"], arrays["y"]


def _check_pixels(path: Path, x: np.ndarray, spec: ImageSpec) -> tuple[np.ndarray, float]:
    """Validated images as N×H×W×C and the scale that maps them to [0, 1]."""
    if x.dtype.kind not in "uif":
        raise DataError(path, f"x has dtype {x.dtype}; expected uint8 pixels 0..255 "
                              "(or floats in [0, 1])")
    if x.ndim not in (3, 4):
        raise DataError(path, f"x has shape {x.shape}; expected N×H×W or N×H×W×C")
    if x.shape[0] == 0:
        raise DataError(path, "empty: x has 0 images")
    if x.ndim == 3:
        x = x[..., None]
    n, h, w, c = x.shape
    if h == 0 or w == 0:
        raise DataError(path, f"x has shape {x.shape}: images of size 0")
    if c not in (1, 3):
        hint = (" (it looks channels-first; store N×H×W×C, channels last)"
                if x.ndim == 4 and h in (1, 3) else "")
        raise DataError(path, f"x has shape {x.shape}: {c} channels, expected 1 or 3{hint}")
    if c != spec.channels and c != 1:
        raise DataError(path, f"x has {c} channels but the model takes {spec.channels}")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.flatnonzero(bad.reshape(n, -1).any(axis=1))[0])
            raise DataError(path, f"x has {int(bad.sum())} NaN/inf values (first in image {first})")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(path, f"float x must be in [0, 1], found values in [{lo:g}, {hi:g}] "
                                  "(store uint8 0..255 instead)")
        return x.astype(np.float32, copy=False), 1.0
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > 255:
        raise DataError(path, f"x has values in [{lo}, {hi}]; expected uint8 pixels 0..255")
    return x.astype(np.uint8, copy=False), 1.0 / 255.0


def _check_labels(path: Path, y: np.ndarray, n: int, spec: ImageSpec):
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(path, f"y has shape {y.shape}; expected one label per image, shape ({n},)")
    if y.shape[0] != n:
        raise DataError(path, f"y has {y.shape[0]} labels but x has {n} images")
    where = lambda i: f"y[{i}]"  # noqa: E731
    if y.dtype.kind in "US":  # class names
        return to_indices([str(v) for v in y], path, where, spec.num_classes, spec.labels)
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            raise DataError(path, f"y has {bad.size} NaN/inf labels (first at y[{int(bad[0])}])")
        frac = np.flatnonzero(y != np.round(y))
        if frac.size:
            i = int(frac[0])
            raise DataError(path, f"non-integer label y[{i}] = {y[i]:g}")
    elif y.dtype.kind not in "ui":
        raise DataError(path, f"y has dtype {y.dtype}; expected integer class indices")
    if y.size and (float(y.min()) < 0 or float(y.max()) >= spec.num_classes):
        check_range(y.astype(np.float64), spec.num_classes, path, where)
    return y.astype(np.int64), spec.labels


def load_npz(path: str | Path, spec: ImageSpec) -> ArrayImageDataset:
    """Read and check ``path``; images are resized and normalized per batch."""
    path = Path(path)
    check_file(path)
    x, y = _read_arrays(path)
    x, scale = _check_pixels(path, x, spec)
    labels, names = _check_labels(path, y, x.shape[0], spec)
    ds = ArrayImageDataset(path, x, labels, spec, scale, names)
    ds.notes = conversion_notes({tuple(x.shape[1:3]): x.shape[0]}, {x.shape[3]: x.shape[0]}, spec)
    return ds


KINDS = {1: "grayscale", "L": "grayscale", "LA": "grayscale + alpha (alpha dropped)", "P": "palette",
         "RGBA": "RGBA (alpha dropped)", "1": "1-bit", "CMYK": "CMYK", "I;16": "16-bit grayscale"}


def conversion_notes(sizes: dict[tuple[int, int], int], channels: dict, spec: ImageSpec) -> tuple[str, ...]:
    """What loading does to images of these ``sizes`` (h, w) → count and ``channels`` (a
    count, or a Pillow mode) → count, for a model taking ``spec``'s: resized, channels made."""
    h, w = cast(tuple[int, int], spec.image_size)
    notes = []
    other = {s: n for s, n in sizes.items() if s != (h, w)}
    if other:
        shown = ", ".join(f"{a}×{b}" for a, b in sorted(other, key=lambda s: -other[s])[:3])
        shown += " …" if len(other) > 3 else ""
        notes.append(f"{sum(other.values())} of {sum(sizes.values())} images are not {h}×{w} "
                     f"(the bundle's input: {shown}); each is resized to {h}×{w}, bilinear, "
                     f"aspect ratio not kept")
    want = "RGB" if spec.channels == 3 else "L"
    other_c = {c: n for c, n in channels.items() if c not in (spec.channels, want)}
    if other_c:
        shown = ", ".join(f"{n} {KINDS.get(c, c)}" for c, n in other_c.items())
        notes.append(f"images converted to {spec.channels} channel{'s' if spec.channels > 1 else ''} "
                     f"({want}): {shown}")
    return tuple(notes)
