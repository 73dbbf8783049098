"""One trainer per run folder: an OS lock on ``RUN/.lock`` while a trainer runs.

The lock is ``flock`` (non-blocking) on a file descriptor, so the kernel drops it when the
process ends, however it ends: a ``.lock`` file left by a killed process blocks nobody. The
holder writes its pid into the file so that a refused second trainer can name it.

    with RunLock(run):        # raises RunInUseError if another process holds it
        ...
    check_free(run)           # the same refusal, without taking the lock

Where ``fcntl`` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from edgetune.errors import EdgetuneError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"


class RunInUseError(EdgetuneError):
    """Another process holds the run folder's lock."""


class RunLock:
    def __init__(self, run: str | Path):
        self.run = Path(run)
        self.path = self.run / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None or self._fd is not None:
            return
        self.run.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd, self.run, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # before the unlock: a new holder's pid is never erased
        os.close(fd)  # closing the descriptor drops the lock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_free(run: str | Path) -> None:
    """Raise :class:`RunInUseError` if a process holds ``run``'s lock; take nothing."""
    path = Path(run) / LOCK
    if fcntl is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # a holder always has the file
    try:
        _lock(fd, Path(run), fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _lock(fd: int, run: Path, kind: int) -> None:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
        holder = f"pid {pid}" if pid.isdigit() else "pid unknown"
        raise RunInUseError(f"{run} is in use by another edgetune process ({holder}, holding "
                            f"{run / LOCK}); wait for it to end, or train into another --out") from None
