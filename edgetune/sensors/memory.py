"""Memory readings (psutil): the process's resident set and the memory still available."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil


def process_rss_bytes(pid: int | None = None) -> int:
    """Resident set size of ``pid`` (default: this process), bytes."""
    return int(psutil.Process(os.getpid() if pid is None else pid).memory_info().rss)


def available_memory_bytes() -> int:
    """Memory the system can give without swapping (``MemAvailable``), bytes."""
    return int(psutil.virtual_memory().available)


def total_memory_bytes() -> int:
    return int(psutil.virtual_memory().total)


@dataclass
class MemorySample:
    rss_bytes: int
    available_bytes: int


class MemoryMonitor:
    """Samples RSS and available memory; keeps the peak RSS and the lowest availability seen."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.peak_rss_bytes = 0
        self.min_available_bytes: int | None = None

    def sample(self) -> MemorySample:
        s = MemorySample(process_rss_bytes(self.pid), available_memory_bytes())
        self.peak_rss_bytes = max(self.peak_rss_bytes, s.rss_bytes)
        if self.min_available_bytes is None or s.available_bytes < self.min_available_bytes:
            self.min_available_bytes = s.available_bytes
        return s
