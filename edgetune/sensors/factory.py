"""Pick the best energy reader for a device: its profile's sensors in order, then the model."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.devices import DeviceProfile, detect_device
from edgetune.errors import EdgetuneError
from edgetune.registry import Registry
from edgetune.sensors.base import EnergyMeter
from edgetune.sensors.ina3221 import Ina3221Meter
from edgetune.sensors.modelled import ModelledMeter
from edgetune.sensors.nvml import NvmlMeter
from edgetune.sensors.rapl import RaplMeter


@dataclass
class SensorEnv:
    """Where readers look: the sysfs root, a pynvml stand-in, the clock (tests swap all three)."""

    sysfs_root: Path = Path("/sys")
    nvml: Any = None
    clock: Callable[[], float] = time.monotonic


# name → builder(profile, env); "psutil" in a profile is memory, not energy
ENERGY_READERS: Registry[Callable[[DeviceProfile, SensorEnv], EnergyMeter]] = Registry("energy sensor")
ENERGY_READERS.add("rapl", lambda p, e: RaplMeter(e.sysfs_root / "class/powercap"))
ENERGY_READERS.add("ina3221", lambda p, e: Ina3221Meter(e.sysfs_root, clock=e.clock))
ENERGY_READERS.add("nvml", lambda p, e: NvmlMeter(nvml=e.nvml, clock=e.clock))
ENERGY_READERS.add("model", lambda p, e: ModelledMeter(p, clock=e.clock))


@dataclass
class SensorStatus:
    name: str
    available: bool
    detail: str  # what it reads, or why it cannot


def _why(meter: EnergyMeter) -> str | None:
    why = getattr(meter, "why_unavailable", None)
    if why is not None:
        return why()
    return None if meter.available() else "not available"


def _order(profile: DeviceProfile) -> list[str]:
    return [s for s in profile.sensors if s in ENERGY_READERS] + ["model"]


def probe_sensors(profile: DeviceProfile | None = None,
                  env: SensorEnv | None = None) -> list[SensorStatus]:
    """Each energy reader the profile lists (then the model), whether it works here and why."""
    profile = profile or detect_device()
    env = env or SensorEnv()
    out = []
    for name in _order(profile):
        meter = ENERGY_READERS.get(name)(profile, env)
        why = _why(meter)
        out.append(SensorStatus(name, why is None, meter.describe() if why is None else why))
    return out


def make_energy_meter(profile: DeviceProfile | None = None, prefer: str | None = None,
                      env: SensorEnv | None = None) -> EnergyMeter:
    """The first available reader in the profile's order, falling back to the model.

    ``prefer`` names one reader (rapl, ina3221, nvml, model); it must work here.
    """
    profile = profile or detect_device()
    env = env or SensorEnv()
    if prefer is not None:
        meter = ENERGY_READERS.get(prefer)(profile, env)  # did-you-mean on typos
        why = _why(meter)
        if why is not None:
            raise EdgetuneError(f"energy sensor {prefer!r} is not available here: {why}")
        return meter
    for name in _order(profile):
        meter = ENERGY_READERS.get(name)(profile, env)
        if meter.available():
            return meter
    raise AssertionError("unreachable: the model is always available")  # pragma: no cover
