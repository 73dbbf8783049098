"""Progress on stderr (one line, rewritten in place) and per-step metrics as JSON lines."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

from edgetune.atomic import atomic_write_text
from edgetune.errors import DiskFullError, is_disk_full

METRICS = "metrics.jsonl"


class ProgressBar:
    def __init__(self, total: int, stream: IO[str] | None = None, width: int = 24):
        self.total, self.width = total, width
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self._last = 0.0

    def update(self, step: int, loss: float, samples_per_s: float, rss_mb: float, extra: str = "",
               unit: str = "samples/s") -> None:
        """``samples_per_s``: the rate in ``unit`` (a language model's: target tokens, tok/s)."""
        now = time.monotonic()
        if self.tty and now - self._last < 0.1 and step < self.total:
            return
        if not self.tty and step % max(1, self.total // 20) and step < self.total:
            return  # a log file gets ~20 lines, a terminal a live bar
        self._last = now
        filled = int(self.width * step / max(1, self.total))
        bar = "█" * filled + "·" * (self.width - filled)
        line = (f"{bar} {step}/{self.total}  loss {loss:.4f}  {samples_per_s:.1f} {unit}  "
                f"RSS {rss_mb:.0f} MB{('  ' + extra) if extra else ''}")
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, rows past the checkpoint are dropped, and so
    are lines a kill or a full disk left torn (or otherwise unreadable)."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            kept = [json.dumps(row) for row in read_rows(path) if row["step"] <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        elif resume_step is None and path.exists():
            path.unlink()
        self._f = open(path, "a")

    def write(self, row: dict[str, Any]) -> None:
        try:
            self._f.write(json.dumps(row) + "\n")
            self._f.flush()
        except OSError as e:
            with contextlib.suppress(OSError):
                self._f.close()  # drops the unwritten rest; close() then has nothing to flush
            if is_disk_full(e):
                raise DiskFullError(f"no space left on device while writing {self.path}: "
                                    "free space and rerun with --resume") from None
            raise

    def close(self) -> None:
        self._f.close()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The readable rows of a ``metrics.jsonl``: JSON objects with an integer ``step``."""
    rows = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # torn by a kill or a full disk mid-write
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows
