"""A meter that counts only while its owner works: :class:`GatedMeter`.

A power reading or an energy counter sees the whole machine (or, for the modelled meter, the
whole process), so a run that waits between its ``fit()`` calls (a fleet client between
rounds) or shares its process with another trainer would be charged for the wait and for the
other's steps. The gate keeps the joules read while it is open and drops what passes while it
is closed:

    E = Σ over open intervals [a, b] of (E_inner(b) − E_inner(a))

Any :class:`~edgetune.sensors.base.EnergyMeter` works inside: it is read at each opening and
closing, so a power meter integrates nothing across a closed interval and the modelled meter's
CPU share restarts at each opening.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from edgetune.sensors.base import EnergyMeter


class GatedMeter(EnergyMeter):
    """``inner``'s joules over the intervals the gate was open (:meth:`open`, :meth:`close`,
    or ``with meter.counting():``). :meth:`start` zeroes the count and opens it."""

    def __init__(self, inner: EnergyMeter) -> None:
        self.inner = inner
        self.name = inner.name
        self._closed_total = 0.0       # joules of the intervals already closed
        self._opened_at: float | None = None  # inner's reading when the gate last opened

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def available(self) -> bool:
        return self.inner.available()

    def start(self) -> None:
        self.inner.start()
        self._closed_total = 0.0
        self._opened_at = self.inner.read_joules()

    def open(self) -> None:
        """Count from now on (a no-op while open)."""
        if self._opened_at is None:
            self._opened_at = self.inner.read_joules()

    def close(self) -> None:
        """Keep what was counted since :meth:`open` and count nothing until the next one."""
        if self._opened_at is not None:
            self._closed_total += self.inner.read_joules() - self._opened_at
            self._opened_at = None

    @contextlib.contextmanager
    def counting(self) -> Iterator[GatedMeter]:
        """Open for the ``with`` block, then back to the state before it."""
        was_open = self.is_open
        self.open()
        try:
            yield self
        finally:
            if not was_open:
                self.close()

    def sample(self) -> None:
        if self._opened_at is not None:
            self.inner.sample()

    def read_joules(self) -> float:
        if self._opened_at is None:
            return self._closed_total
        return self._closed_total + self.inner.read_joules() - self._opened_at

    def describe(self) -> str:
        return self.inner.describe()
