"""NVIDIA GPU energy through NVML (``pynvml``, optional: never a dependency).

Volta and newer keep a total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ);
older GPUs report power only (``nvmlDeviceGetPowerUsage``, mW), integrated by the trapezoid rule.
Measures the GPU board only, not the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edgetune.sensors.base import CounterMeter, EnergyMeter, PowerMeter


def _load_pynvml() -> Any:
    import pynvml  # optional; ImportError means "not available"

    return pynvml


class _EnergyCounter(CounterMeter):
    name = "nvml"
    joules_per_unit = 1e-3

    def __init__(self, lib: Any, handle: Any) -> None:
        super().__init__()
        self.lib, self.handle = lib, handle

    def available(self) -> bool:
        return True

    def read_counters(self) -> list[tuple[int, int]]:
        return [(int(self.lib.nvmlDeviceGetTotalEnergyConsumption(self.handle)), 0)]


class _PowerReader(PowerMeter):
    name = "nvml"

    def __init__(self, lib: Any, handle: Any, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.lib, self.handle = lib, handle

    def available(self) -> bool:
        return True

    def read_watts(self) -> float:
        return self.lib.nvmlDeviceGetPowerUsage(self.handle) / 1e3


class NvmlMeter(EnergyMeter):
    """GPU ``index``'s energy; ``nvml`` replaces the pynvml module (tests pass a fake)."""

    name = "nvml"

    def __init__(self, index: int = 0, nvml: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.index = index
        self.clock = clock
        self._lib = nvml
        self._inner: EnergyMeter | None = None
        self.mode = ""

    def _handle(self) -> tuple[Any, Any]:
        if self._lib is None:
            self._lib = _load_pynvml()
        self._lib.nvmlInit()
        return self._lib, self._lib.nvmlDeviceGetHandleByIndex(self.index)

    def why_unavailable(self) -> str | None:
        try:
            lib, h = self._handle()
            lib.nvmlDeviceGetPowerUsage(h)
        except ImportError:
            return "pynvml is not installed"
        except Exception as e:  # NVMLError and friends: no driver, no such GPU
            return f"NVML: {e}"
        return None

    def available(self) -> bool:
        return self.why_unavailable() is None

    def start(self) -> None:
        lib, h = self._handle()
        try:
            lib.nvmlDeviceGetTotalEnergyConsumption(h)
            self._inner, self.mode = _EnergyCounter(lib, h), "energy counter"
        except Exception:  # NVMLError_NotSupported before Volta
            self._inner, self.mode = _PowerReader(lib, h, self.clock), "power"
        self._inner.start()

    def sample(self) -> None:
        if self._inner is None:
            raise self._not_started()
        self._inner.sample()

    def read_joules(self) -> float:
        if self._inner is None:
            raise self._not_started()
        return self._inner.read_joules()

    def describe(self) -> str:
        return f"nvml (GPU {self.index}{', ' + self.mode if self.mode else ''})"
