"""Modelled energy from a device profile, for machines without a power sensor.

:class:`ModelledMeter`: P = idle + (active − idle)·u, E += P·Δt per sample, u the mean
utilisation over the interval (default for CPU devices: this process's share of all cores
since the last call, so other programs' load does not spend a run's energy cap, which a
hardware sensor could not tell apart; 1, i.e. busy, for GPU devices, whose load the CPU
share does not show).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil

from edgetune.devices import DeviceProfile
from edgetune.sensors.base import EnergyMeter


class ProcessCpuShare:
    """This process's mean share of the cores it may use since the previous call, in [0, 1]:
    u = Δ(user + system CPU time) / (Δt · cores)."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        try:  # the CPUs it may run on (an affinity-limited container), else the machine's
            self._cores = len(self._process.cpu_affinity()) or 1
        except (AttributeError, OSError):
            self._cores = psutil.cpu_count() or 1

    def __call__(self) -> float:
        return min(self._process.cpu_percent(interval=None) / (100.0 * self._cores), 1.0)


class ModelledMeter(EnergyMeter):
    """Energy from the profile's power model, integrated over wall time."""

    name = "model"

    def __init__(self, profile: DeviceProfile,
                 utilisation: float | Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.profile = profile
        if utilisation is None:
            utilisation = ProcessCpuShare() if profile.accelerator == "cpu" else 1.0
        self.utilisation = utilisation
        self.clock = clock
        self._t: float | None = None
        self._joules = 0.0

    def _u(self) -> float:
        return float(self.utilisation() if callable(self.utilisation) else self.utilisation)

    def available(self) -> bool:
        return True

    def start(self) -> None:
        self._u()  # starts psutil's interval
        self._t = self.clock()
        self._joules = 0.0

    def sample(self) -> None:
        if self._t is None:
            raise self._not_started()
        t = self.clock()
        self._joules += self.profile.power_watts(self._u()) * (t - self._t)
        self._t = t

    def read_joules(self) -> float:
        self.sample()
        return self._joules

    def describe(self) -> str:
        p = self.profile
        return f"model ({p.name}: {p.idle_watts:g}-{p.active_watts:g} W)"

