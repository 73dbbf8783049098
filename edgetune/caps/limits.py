"""Resource caps of a training run: ``--ram-cap``, ``--energy-cap``, ``--power-cap``.

    Caps.parse(ram="600MB", energy="5kJ")   # → Caps(ram_bytes=600000000, energy_joules=5000.0)

- ``ram_bytes``: the process's peak RSS must stay at or below it (a hard limit);
- ``energy_joules``: energy of the whole run (every training step);
- ``power_watts``: mean power over each step and the pause after it.

``None`` means no cap. The planner that enforces them is :mod:`edgetune.caps.planner`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgetune.caps.units import (
    format_bytes,
    format_joules,
    format_watts,
    parse_bytes,
    parse_joules,
    parse_watts,
)
from edgetune.config import check_float, check_int


@dataclass
class Caps:
    ram_bytes: int | None = None
    energy_joules: float | None = None
    power_watts: float | None = None

    def __post_init__(self) -> None:
        if self.ram_bytes is not None:
            check_int(self, "ram_bytes", lo=1)
        for name in ("energy_joules", "power_watts"):
            if getattr(self, name) is not None:
                check_float(self, name, lo=0.0, lo_open=True)

    @classmethod
    def parse(cls, ram: str | None = None, energy: str | None = None,
              power: str | None = None) -> Caps:
        """From the CLI's strings; each ``None`` or empty string leaves that cap off."""
        return cls(parse_bytes(ram) if ram else None, parse_joules(energy) if energy else None,
                   parse_watts(power) if power else None)

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.ram_bytes, self.energy_joules, self.power_watts))

    def describe(self) -> str:
        """``ram ≤ 600MB, energy ≤ 5kJ`` or ``none``."""
        parts = []
        if self.ram_bytes is not None:
            parts.append(f"ram <= {format_bytes(self.ram_bytes)}")
        if self.energy_joules is not None:
            parts.append(f"energy <= {format_joules(self.energy_joules)} per run")
        if self.power_watts is not None:
            parts.append(f"power <= {format_watts(self.power_watts)}")
        return ", ".join(parts) or "none"

    def to_dict(self) -> dict[str, Any]:
        return {"ram_bytes": self.ram_bytes, "energy_joules": self.energy_joules,
                "power_watts": self.power_watts}


def effective_ram(caps: Caps, device_ram_bytes: int) -> int:
    """The RAM limit planned against: the cap, and never more than the device has."""
    return min(caps.ram_bytes or math.inf, device_ram_bytes)  # type: ignore[return-value]
