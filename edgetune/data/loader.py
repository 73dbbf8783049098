"""``load_dataset``: a data file or folder, by its suffix, as a :class:`Dataset`."""

from __future__ import annotations

from pathlib import Path

from edgetune.data.base import Dataset
from edgetune.data.errors import DataError
from edgetune.data.spec import ImageSpec, LMSpec, TextSpec

IMAGE_FILES = (".npz",)
TEXT_FILES = (".csv", ".tsv", ".jsonl")


def load_dataset(path: str | Path, spec: ImageSpec | TextSpec | LMSpec) -> Dataset:
    """``.npz`` or a folder of class subfolders for an :class:`ImageSpec`; ``.csv``, ``.tsv`` or
    ``.jsonl`` for a :class:`TextSpec` or an :class:`LMSpec`. Every problem is a one-line
    :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if not isinstance(spec, (ImageSpec, TextSpec, LMSpec)):
        raise TypeError(f"spec must be an ImageSpec, TextSpec or LMSpec, not {type(spec).__name__}")
    kind = "image" if isinstance(spec, ImageSpec) else "text"
    suffix = "folder" if path.is_dir() else path.suffix.lower()
    if suffix in ("folder", *IMAGE_FILES) and kind == "text":
        raise DataError(path, f"{'a folder' if path.is_dir() else suffix} holds images but the "
                              f"model takes text (give a {', '.join(TEXT_FILES)} file)")
    if suffix in TEXT_FILES and kind == "image":
        raise DataError(path, f"{suffix} holds text but the model takes images (give a .npz "
                              "file or a folder of class subfolders)")
    if suffix == "folder":
        from edgetune.data.folder import load_image_folder
        assert isinstance(spec, ImageSpec)  # the checks above: images need an ImageSpec
        return load_image_folder(path, spec)
    if suffix in IMAGE_FILES:
        from edgetune.data.images import load_npz
        assert isinstance(spec, ImageSpec)
        return load_npz(path, spec)
    if suffix in TEXT_FILES and isinstance(spec, LMSpec):
        from edgetune.data.lm import load_lm
        return load_lm(path, spec)
    if suffix in TEXT_FILES:
        from edgetune.data.text import load_text
        assert isinstance(spec, TextSpec)
        return load_text(path, spec)
    want = ".npz or a folder of class subfolders" if kind == "image" else ", ".join(TEXT_FILES)
    raise DataError(path, f"unsupported file type {suffix or '(no suffix)'!r}; "
                          f"for this {kind} model give {want}")

