"""The energy cap's per-run budget (:class:`EnergyBudget`) and the power cap's pause."""

from __future__ import annotations

import math

from edgetune.caps.units import format_joules
from edgetune.errors import EdgetuneError, UsageError


class CapReached(EdgetuneError):
    """The run's energy budget cannot pay for another step: the run ends here, checkpointed."""


def power_pause(joules: float, seconds: float, cap: float | None, idle_watts: float) -> float:
    """t_pause = max(0, (E − P_cap·t) / (P_cap − P_idle)); inf when the cap is at or under idle."""
    if cap is None or joules <= cap * seconds:
        return 0.0
    if cap <= idle_watts:
        return math.inf
    return (joules - cap * seconds) / (cap - idle_watts)


class EnergyBudget:
    """Joules spent and kept back under an energy cap (``cap`` None: no cap, every check passes).

    ``reserve``: the final checkpoint's write; ``overhead``: the time between two steps; both
    priors until measured, then the most measured.
    """

    def __init__(self, cap: float | None, total_steps: int, safety: float, reserve: float,
                 overhead: float):
        self.cap, self.total_steps, self.safety = cap, total_steps, safety
        self.spent = 0.0
        self.pending = 0.0                     # the planned step's estimate, until measured
        self.measured: float | None = None     # the last step's measured joules
        self.reserve, self.overhead = reserve, overhead
        self.reserve_measured = self.overhead_measured = False
        self.between = 0.0                     # time between steps measured so far (pieces)
        self.max_step = 0.0                    # the most a step has measured (a noisy meter's
                                               # worst case beats the calibrated mean)

    def allowance(self, steps_done: int) -> float:
        """Joules this step may use: (cap − spent) / steps left; inf without an energy cap."""
        if self.cap is None:
            return math.inf
        left = max(1, self.total_steps - steps_done)
        free = self.cap - self.spent - self.reserve
        # each step also costs the time around it, and a measured step may exceed its estimate
        return (1.0 - self.safety) * free / left - self.overhead

    def need(self, joules: float) -> float:
        """A step's energy on the safe side: its estimate with the margin, or the most a step
        has measured, and the time around it twice (before it, and the run's end)."""
        return max((1.0 + self.safety) * joules, self.max_step) + 2.0 * self.overhead

    def covers(self, joules: float) -> bool:
        """Whether the budget left pays for a step of ``joules`` and the final checkpoint."""
        return self.cap is None or self.spent + self.need(joules) + self.reserve <= self.cap

    def covers_checkpoint(self) -> bool:
        """Whether the budget left pays for a checkpoint (the most one has measured)."""
        return self.cap is None or self.spent + self.reserve <= self.cap

    def check_left(self, least_joules: float, steps_done: int) -> None:
        """Raise :class:`CapReached` if even the smallest step cannot be paid for."""
        if self.cap is None or self.covers(least_joules):
            return
        raise CapReached(
            f"--energy-cap {format_joules(self.cap)}: {format_joules(self.spent)} spent, "
            f"the next step needs {format_joules(self.need(least_joules), True)} at least and the "
            f"final checkpoint {format_joules(self.reserve, True)}; stopped before step {steps_done + 1}")

    def can_afford(self, joules: float, steps_done: int, last_joules: float) -> bool:
        """Whether ``joules`` of optional work fits on top of the steps left, each at the most
        one has cost, and two checkpoints: the one the work may write (a better validation
        accuracy writes ``best``) and the final one."""
        if self.cap is None:
            return True
        per_step = max(self.max_step, last_joules) + self.overhead
        left = max(0, self.total_steps - steps_done)
        return self.spent + joules + left * per_step + 2.0 * self.reserve <= self.cap

    def charge(self, joules: float) -> None:
        """A step was planned at ``joules``: count it until measured."""
        self.spent += joules
        self.pending, self.measured = joules, None

    def refund(self) -> None:
        """The planned step did not run."""
        self.spent -= self.pending
        self.pending = 0.0

    def observe_step(self, joules: float) -> None:
        """The planned step measured ``joules``: it replaces the estimate."""
        self.max_step = max(self.max_step, joules)
        self.spent += joules - self.pending
        self.pending, self.measured = 0.0, joules

    def observe_startup(self, joules: float) -> None:
        if joules < 0:
            raise UsageError(f"joules={joules!r}: must be >= 0")
        self.spent += float(joules)

    def observe_overhead(self, joules: float, final: bool = True) -> None:
        """Energy between two steps, spent now; ``final=False``: a piece of it (what came before
        a validation), added to the rest when the next step starts."""
        self.observe_startup(joules)
        self.between += float(joules)
        if final:
            prior = self.overhead if self.overhead_measured else 0.0
            self.overhead, self.overhead_measured = max(prior, self.between), True
            self.between = 0.0

    def observe_checkpoint(self, joules: float) -> None:
        prior = self.reserve if self.reserve_measured else 0.0
        self.reserve, self.reserve_measured = max(prior, float(joules)), True
