"""Images from a folder with one subfolder per class (``root/<class>/<image>``), via Pillow."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np

from edgetune.data.base import Dataset
from edgetune.data.errors import DataError, first_line
from edgetune.data.images import conversion_notes
from edgetune.data.labels import to_indices
from edgetune.data.resize import normalize, resize
from edgetune.data.spec import ImageSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _pillow(path: Path):
    try:
        from PIL import Image
    except ImportError:
        raise DataError(path, "reading an image folder needs Pillow (pip install pillow); "
                              "or give the images as a .npz file") from None
    return Image


class ImageFolderDataset(Dataset):
    """Image files decoded per batch, converted to the model's channels (RGB or L), resized."""

    input_names = ("pixel_values",)

    def __init__(self, path: Path, files: list[Path], labels: np.ndarray, spec: ImageSpec,
                 label_names: tuple[str, ...] | None):
        self.path, self.files, self.labels, self.spec = Path(path), files, labels, spec
        self.label_names = label_names

    def _decode(self, file: Path, image_module) -> np.ndarray:
        mode = "RGB" if self.spec.channels == 3 else "L"
        try:
            with image_module.open(file) as im:
                a = np.asarray(im.convert(mode), dtype=np.uint8)
        except Exception as e:  # truncated or corrupt since it was listed
            raise DataError(file, f"cannot decode image ({first_line(e)})") from None
        a = a.reshape(a.shape[0], a.shape[1], -1)
        return resize(a[None], self._size())[0]

    def _size(self) -> tuple[int, int]:
        return cast(tuple[int, int], self.spec.image_size)  # a pair after ImageSpec.__post_init__

    def _inputs(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        image_module = _pillow(self.path)
        x = np.stack([self._decode(self.files[i], image_module) for i in idx]) if idx.size else \
            np.zeros((0, *self._size(), self.spec.channels), np.float32)
        return {"pixel_values": normalize(x, self.spec.mean, self.spec.std)}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(path: str | Path, spec: ImageSpec) -> ImageFolderDataset:
    """List and check ``path/<class>/<image>``; every file's header is read now, pixels later.

    Class folders are sorted by name; all-integer names (``0/``, ``1/``) are class indices,
    other names map through ``spec.labels`` or, without it, their sorted order.
    """
    path = Path(path)
    image_module = _pillow(path)
    classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(path, "no class subfolders (expected <folder>/<class name>/<image>.png)")
    where = lambda i: f"class folder {classes[i].name!r}"  # noqa: E731
    class_idx, names = to_indices([d.name for d in classes], path, where, spec.num_classes,
                                  spec.labels)
    files: list[Path] = []
    labels: list[int] = []
    sizes: dict[tuple[int, int], int] = {}
    modes: dict[str, int] = {}
    for folder, label in zip(classes, class_idx):
        found = _images_in(folder)
        if not found:
            raise DataError(folder, f"class folder has no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in found:
            if file.stat().st_size == 0:
                raise DataError(file, "empty file")
            try:
                with image_module.open(file) as im:
                    width, height = im.size
                    mode = im.mode
            except Exception as e:
                raise DataError(file, f"not a readable image ({first_line(e)})") from None
            if width == 0 or height == 0:
                raise DataError(file, f"image of size {width}×{height}")
            sizes[(height, width)] = sizes.get((height, width), 0) + 1
            modes[mode] = modes.get(mode, 0) + 1
        files += found
        labels += [int(label)] * len(found)
    ds = ImageFolderDataset(path, files, np.asarray(labels, dtype=np.int64), spec, names)
    ds.notes = conversion_notes(sizes, modes, spec)
    return ds
