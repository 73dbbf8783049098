"""What the RAM, energy and power caps add to the training loop, as one object the
:class:`~edgetune.train.Trainer` composes: :class:`Uncapped` (nothing to observe, no pause) or
:class:`Capped` (feeds the :class:`~edgetune.caps.planner.CapPlanner` what the run
measures and asks it for pauses, smaller plans and leave to validate)."""

from __future__ import annotations

import numpy as np

from edgetune.caps.planner import CapPlanner, CapReached
from edgetune.caps.units import format_bytes, format_joules
from edgetune.errors import EdgetuneError
from edgetune.runtime.ort_env import ArenaFull
from edgetune.schedule.base import Planner, StepPlan
from edgetune.sensors.memory import process_rss_bytes
from edgetune.sensors.peak import peak_rss_bytes
from edgetune.train.engines import Batch, Engine


class ValidationStopped(EdgetuneError):
    """The energy cap stopped a validation part way; ``per_pass``: its extrapolated joules."""

    def __init__(self, per_pass: float):
        super().__init__("validation stopped by the energy cap "
                         f"(about {format_joules(per_pass, True)} a pass)")
        self.per_pass = per_pass


class Uncapped:
    def __init__(self, planner: Planner):
        self.planner = planner

    def prepare(self, engine: Engine, sample: Batch, n_tokens: int) -> None:
        """Before the first step (after a resume): nothing to measure."""

    def plan(self, n_tokens: int, batch_size: int, step: int) -> StepPlan:
        """The plan of step ``step + 1``; :class:`CapReached` where the run ends before it."""
        return self.planner.plan(n_tokens, batch_size)

    def observe_startup(self, joules: float) -> None:
        pass

    def observe_overhead(self, joules: float, final: bool = True) -> None:
        pass

    def observe_step(self, joules: float, seconds: float) -> float:
        """After a step: the pause it needs (seconds)."""
        return 0.0

    def observe_validation(self, joules: float) -> None:
        pass

    def observe_checkpoint(self, joules: float) -> None:
        pass

    def affords_checkpoint(self) -> bool:
        """Whether the energy cap leaves enough for a checkpoint write."""
        return True

    def smaller(self, refused: StepPlan, error: ArenaFull, step: int) -> StepPlan:
        """The arena refused step ``step``'s plan: the plan to try instead, or an error."""
        raise EdgetuneError(f"out of memory at step {step}: {error}") from None

    def affords(self, joules: float | None, samples: int, batch: int) -> bool:
        """Whether a validation of ``samples`` in batches of ``batch`` (last measured at
        ``joules``) fits the caps."""
        return True

    def check_validation(self, joules: float, done: int, total: int, passes: int) -> None:
        """Part way through a validation (``done`` of ``total`` samples, ``passes`` passes, it
        has cost ``joules``): :class:`ValidationStopped` where its rest no longer fits."""

    def eval_batch(self, size: int) -> int:
        return size


class Capped(Uncapped):
    planner: CapPlanner

    def __init__(self, planner: CapPlanner):
        super().__init__(planner)

    def prepare(self, engine: Engine, sample: Batch, n_tokens: int) -> None:
        """Calibrate on a warm-up pass of the smallest plan (what any plan needs at least), and
        refuse caps that even that cannot meet."""
        least = self.planner.smallest(n_tokens, 1).plan
        try:
            engine.warmup(sample, least.keep, least.trained)
        except ArenaFull:
            raise EdgetuneError(f"--ram-cap {format_bytes(self.planner.caps.ram_bytes or 0)}: one sample "
                                "of the smallest plan does not fit; raise the cap") from None
        self.planner.observe_memory(max(process_rss_bytes(), peak_rss_bytes()))
        self.planner.check_feasible()

    def plan(self, n_tokens: int, batch_size: int, step: int) -> StepPlan:
        try:
            return self.planner.plan(n_tokens, batch_size)
        except CapReached as e:
            if step == 0:  # nothing trained: a refusal, not a run
                raise EdgetuneError(f"{e}; loading and the warm-up alone took "
                                    f"{format_joules(self.planner.spent_joules, True)}") from None
            raise

    def observe_startup(self, joules: float) -> None:
        self.planner.observe_startup(joules)

    def observe_overhead(self, joules: float, final: bool = True) -> None:
        self.planner.observe_overhead(joules, final)

    def observe_step(self, joules: float, seconds: float) -> float:
        self.planner.observe_memory(peak_rss_bytes())
        self.planner.observe_energy(joules, seconds)
        return self.planner.pause_seconds(seconds)

    def observe_validation(self, joules: float) -> None:
        self.planner.observe_validation(joules)

    def observe_checkpoint(self, joules: float) -> None:
        self.planner.observe_checkpoint()
        self.planner.observe_checkpoint_energy(joules)

    def affords_checkpoint(self) -> bool:
        return self.planner.can_checkpoint()

    def smaller(self, refused: StepPlan, error: ArenaFull, step: int) -> StepPlan:
        plan = self.planner.replan_smaller()
        if plan.to_dict() == refused.to_dict():  # nothing smaller to try
            raise EdgetuneError(f"step {step}: {error}; no smaller plan is left: raise --ram-cap") from None
        return plan

    def affords(self, joules: float | None, samples: int, batch: int) -> bool:
        """Its estimate (the last one measured, else FLOPs), and never less than its first
        batch's bound: the checks before each later batch cannot stop that one. A forward
        batch is taken to cost at most what the costliest training step cost per sample."""
        first = self.planner.max_step_joules * batch / self.planner.batch_size
        return self.planner.can_afford(max(joules or self._val_estimate(samples), first))

    def check_validation(self, joules: float, done: int, total: int, passes: int) -> None:
        """The rest extrapolated from the cost so far, (total − done)·joules/done; the first
        batch holds any warm-up, so the extrapolation errs high."""
        rest = joules * (total - done) / done
        if not self.planner.can_afford(joules + rest):
            raise ValidationStopped((joules + rest) / passes)

    def eval_batch(self, size: int) -> int:
        last = self.planner.last
        return size if last is None else min(size, last.plan.micro_batch)

    def _val_estimate(self, samples: int) -> float:
        """A validation's energy before one was measured: its forward FLOPs at every token."""
        n, L = self.planner.costs.tokens, self.planner.costs.num_layers
        est = self.planner.estimate(np.full(L, n), np.ones(L, bool), 1, n, samples)
        return est.joules * float(est.flops.forward.sum() / max(est.flops.total, 1.0))
