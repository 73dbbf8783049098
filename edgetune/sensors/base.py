"""The common interface of energy readers, and the two ways they count.

- :class:`CounterMeter`: the hardware keeps an energy counter (RAPL, NVML total energy);
  energy = Σ per-counter deltas, a counter that went down wrapped at its range:
  Δ = e1 − e0 if e1 ≥ e0, else (range − e0) + e1.
- :class:`PowerMeter`: the hardware reports power (INA3221, NVML power, the model);
  energy is integrated at each :meth:`PowerMeter.sample` by the trapezoid rule,
  E += (P_prev + P_now)/2 · (t_now − t_prev). Call ``sample()`` once a step or so.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TypeVar

from edgetune.errors import EdgetuneError, UsageError

T = TypeVar("T")


def pick_named(found: Sequence[T], names: Sequence[str] | None, key: Callable[[T], str],
               defaults: Callable[[Sequence[T]], list[T]], what: str, root: object) -> list[T]:
    """``names`` picked from ``found`` by ``key`` (an error lists what exists), or the defaults."""
    if names is None:
        return defaults(found)
    by_name = {key(item): item for item in found}
    for name in names:
        if name not in by_name:
            raise UsageError(f"{what} {name!r}: not under {root} "
                             f"(found: {', '.join(sorted(by_name)) or 'none'})")
    return [by_name[name] for name in names]


class EnergyMeter(ABC):
    """Joules used since :meth:`start`. ``available()`` never raises."""

    name: str = "meter"

    @abstractmethod
    def available(self) -> bool:
        """Whether this reader works here (files exist and are readable, library present)."""

    @abstractmethod
    def start(self) -> None:
        """Zero the count."""

    @abstractmethod
    def read_joules(self) -> float:
        """Joules since :meth:`start`."""

    def sample(self) -> None:  # noqa: B027 (an optional hook: a no-op unless a meter integrates)
        """Take a reading now (power meters integrate between samples; counters need none)."""

    def describe(self) -> str:
        return self.name

    def _not_started(self) -> EdgetuneError:
        return EdgetuneError(f"{self.name} energy meter: call start() before read_joules()")


class CounterMeter(EnergyMeter):
    """Sums the deltas of monotonic counters that wrap at a known range."""

    joules_per_unit: float = 1.0

    def __init__(self) -> None:
        self._last: list[int] | None = None
        self._units = 0

    @abstractmethod
    def read_counters(self) -> Sequence[tuple[int, int]]:
        """(value, range) per counter, in a fixed order; range 0 means "does not wrap"."""

    def start(self) -> None:
        self._last = [v for v, _ in self.read_counters()]
        self._units = 0

    def sample(self) -> None:
        if self._last is None:
            raise self._not_started()
        now = self.read_counters()
        for i, (value, rng) in enumerate(now):
            self._units += counter_delta(self._last[i], value, rng)
            self._last[i] = value

    def read_joules(self) -> float:
        self.sample()
        return self._units * self.joules_per_unit


def counter_delta(before: int, after: int, max_range: int) -> int:
    """Δ of a counter in [0, max_range] that wraps to 0: after − before, plus range if it wrapped."""
    if after >= before:
        return after - before
    if max_range <= 0:
        raise EdgetuneError(f"energy counter went down ({before} → {after}) and has no wrap range")
    return max_range - before + after


class PowerMeter(EnergyMeter):
    """Integrates sampled power (watts) over time by the trapezoid rule."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._t: float | None = None
        self._p = 0.0
        self._joules = 0.0

    @abstractmethod
    def read_watts(self) -> float:
        """Power now, in watts."""

    def start(self) -> None:
        self._p = self.read_watts()
        self._t = self.clock()
        self._joules = 0.0

    def sample(self) -> None:
        if self._t is None:
            raise self._not_started()
        p, t = self.read_watts(), self.clock()
        self._joules += 0.5 * (self._p + p) * (t - self._t)
        self._p, self._t = p, t

    def read_joules(self) -> float:
        self.sample()
        return self._joules
