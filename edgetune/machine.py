"""What this machine has: RAM and CPU cores, as a process here can use them.

    RAM   = min(MemTotal of /proc/meminfo, the cgroup's memory.max)     (cgroup v2, then v1)
    cores = CPUs in this process's affinity mask, capped by the cgroup's cpu.max quota

A detected device profile takes these instead of its file's figures (devices.detect), so a
2-core container is planned as 2 cores, not the 8 a generic profile assumes. ``root`` lets
tests pass a fake tree; a file that is missing or unreadable leaves that figure unknown.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

_CGROUP_MEMORY = ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes")


@dataclass(frozen=True)
class Machine:
    ram_bytes: int | None = None
    cores: int | None = None

    def describe(self) -> str:
        parts = []
        if self.ram_bytes:
            parts.append(f"RAM {self.ram_bytes / 2**30:.1f} GiB")
        if self.cores:
            parts.append(f"{self.cores} cores")
        return " and ".join(parts) + " read from this machine" if parts else ""


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def meminfo_total(root: Path) -> int | None:
    for line in (_text(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            try:
                return int(line.split()[1]) * 1024  # kB
            except (IndexError, ValueError):
                return None
    return None


def cgroup_memory_limit(root: Path) -> int | None:
    """The cgroup's memory limit in bytes; None where unlimited ("max", or v1's huge value)."""
    for rel in _CGROUP_MEMORY:
        text = _text(root / rel)
        if text and text.isdigit() and int(text) < 2**62:
            return int(text)
    return None


def cgroup_cpu_limit(root: Path) -> int | None:
    """⌈quota / period⌉ from cgroup v2's ``cpu.max`` ("200000 100000" → 2); None if unlimited."""
    parts = (_text(root / "sys/fs/cgroup/cpu.max") or "").split()
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[1]) > 0:
        return max(1, math.ceil(int(parts[0]) / int(parts[1])))
    return None


def affinity_cores(root: Path) -> int | None:
    """CPUs this process may run on; under a fake root, the ``processor`` lines of cpuinfo."""
    if root.resolve() == Path("/") and hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    if root.resolve() == Path("/"):
        return os.cpu_count()
    n = sum(line.startswith("processor") for line in (_text(root / "proc/cpuinfo") or "").splitlines())
    return n or None


def read_machine(root: str | Path = "/") -> Machine:
    root = Path(root)
    rams = [v for v in (meminfo_total(root), cgroup_memory_limit(root)) if v]
    cores = [v for v in (affinity_cores(root), cgroup_cpu_limit(root)) if v]
    return Machine(min(rams) if rams else None, min(cores) if cores else None)
