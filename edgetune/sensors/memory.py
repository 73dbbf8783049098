"""Memory readings (psutil): the process's resident set and the memory still available."""

from __future__ import annotations

import os

import psutil


def process_rss_bytes(pid: int | None = None) -> int:
    """Resident set size of ``pid`` (default: this process), bytes."""
    return int(psutil.Process(os.getpid() if pid is None else pid).memory_info().rss)


def available_memory_bytes() -> int:
    """Memory the system can give without swapping (``MemAvailable``), bytes."""
    return int(psutil.virtual_memory().available)


def total_memory_bytes() -> int:
    return int(psutil.virtual_memory().total)

