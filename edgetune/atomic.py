"""Write folders and files so that an error or a kill never leaves half of them behind.

A folder is built under a temporary name beside its target and renamed into place only when
complete; a file is written to a temporary name, flushed to disk, then renamed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from edgetune.errors import UsageError


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target``, on error it is removed.

    Refuses an existing ``target`` unless ``overwrite`` (checked before any work starts).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise UsageError(f"{target} exists; pass --overwrite to replace it")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a flushed temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_temporaries(folder: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Remove what a killed writer left in ``folder``: the temporary files and folders above
    (``.NAME.tmp-*``, ``.NAME.old-*``), for every NAME or only those in ``names``. Call it only
    while no other process writes there (a run folder: while holding its lock). Returns what
    was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefixes = None if names is None else tuple(f".{n}." for n in names)
    removed = []
    for p in folder.iterdir():
        if not (p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)):
            continue
        if prefixes is not None and not p.name.startswith(prefixes):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
    return removed
