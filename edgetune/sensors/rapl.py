"""CPU energy from Linux RAPL powercap: ``/sys/class/powercap/intel-rapl:*/energy_uj``.

Each domain directory has ``name`` (package-0, core, uncore, dram, psys), ``energy_uj`` (a µJ
counter) and ``max_energy_range_uj`` (where it wraps to 0). Domains are chosen so nothing is
counted twice: ``psys`` (whole platform) alone if present, else every top-level ``package-*``
plus ``dram`` sub-domains (the ``core``/``uncore`` sub-domains are inside the package).
AMD CPUs expose the same layout. Since Linux 5.10 ``energy_uj`` is readable by root only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from edgetune.sensors.base import CounterMeter, pick_named

POWERCAP = "/sys/class/powercap"
_DOMAIN = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


class RaplDomain:
    def __init__(self, path: Path) -> None:
        self.path = path
        m = _DOMAIN.match(path.name)
        self.top_level = bool(m and m.group(2) is None)
        try:
            self.name = (path / "name").read_text().strip()
        except OSError:
            self.name = path.name

    def energy_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())

    def max_range_uj(self) -> int:
        try:
            return int((self.path / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            return 0


def find_domains(root: str | Path = POWERCAP) -> list[RaplDomain]:
    """Every ``intel-rapl:N`` and ``intel-rapl:N:M`` directory under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [RaplDomain(p) for p in root.iterdir() if _DOMAIN.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda d: [int(x) for x in re.findall(r"\d+", d.path.name)])


def default_domains(domains: Sequence[RaplDomain]) -> list[RaplDomain]:
    """psys alone, else top-level packages plus dram sub-domains (no double counting)."""
    psys = [d for d in domains if d.name == "psys"]
    if psys:
        return psys[:1]
    return [d for d in domains
            if (d.top_level and d.name.startswith("package")) or d.name == "dram"]


class RaplMeter(CounterMeter):
    """Joules from RAPL counters, wraparound handled per domain."""

    name = "rapl"
    joules_per_unit = 1e-6

    def __init__(self, root: str | Path = POWERCAP, domains: Sequence[str] | None = None):
        super().__init__()
        self.root = Path(root)
        self.domains = pick_named(find_domains(self.root), domains, lambda d: d.name,
                                  default_domains, "RAPL domain", self.root)

    def why_unavailable(self) -> str | None:
        if not self.domains:
            return f"no RAPL package domains under {self.root}"
        for d in self.domains:
            try:
                d.energy_uj()
            except PermissionError:
                return f"{d.path / 'energy_uj'} is not readable (root only since Linux 5.10)"
            except (OSError, ValueError) as e:
                return f"{d.path / 'energy_uj'}: {e}"
        return None

    def available(self) -> bool:
        return self.why_unavailable() is None

    def read_counters(self) -> list[tuple[int, int]]:
        return [(d.energy_uj(), d.max_range_uj()) for d in self.domains]

    def describe(self) -> str:
        return f"rapl ({', '.join(d.name for d in self.domains) or 'no domains'})"
