"""``CapPlanner``: wraps any planner and shrinks its plans until RAM, energy and power caps hold.

Each step the inner planner proposes (keep, trained, micro-batch m); the cap planner returns
the first plan, in this order of preference, whose prediction fits:

1. the inner plan with its keep counts scaled down: keep_l(s) = min(keep_l, max(f, ⌈s·keep_l⌉)),
   the largest s ∈ [0, 1] that fits (bisection), f = max(min_tokens, ⌈keep_floor·N⌉);
2. the same with fewer trained layers, dropping the lowest trained layer first (the backward
   pass stops at the lowest trained layer, so this shortens it most), down to K = 1, then the
   top layer alone; for each mask the keep counts are again the largest that fit;
3. the same with the micro-batch halved (m, ⌈m/2⌉, ..., 1): the engine accumulates gradients
   over the micro-batches of a step, so the effective batch stays B.

What must fit (cost_model.py, calibration.py):

    RAM     base + M(plan) ≤ (1 − safety)·min(ram cap, device RAM)         — hard: if nothing
            fits, the smallest plan runs while its prediction is under the cap itself (inside
            the margin), else :meth:`plan` raises; :meth:`check_feasible` says so before training
    energy  ρ_E · FLOPs · J/GFLOP ≤ (1 − safety)·(cap − spent − R)/(steps left) − X — per-run
            budget spread evenly (R: the final checkpoint's, X: the most measured between two
            steps); if no plan fits, the cheapest plan that fits RAM runs; a step whose safe
            estimate (budget.py: ``EnergyBudget.need``) the budget left cannot pay for is not
            taken (:class:`CapReached`)
    arena   ρ_A·(A + W) ≤ the shared arena's limit (train/ram_guard.py), ρ_A ×1.5 each time
            ORT refuses an allocation (:meth:`replan_smaller`)
    power   a pause after the step: t_pause = max(0, (E − P_cap·t) / (P_cap − P_idle)), so that
            (E + P_idle·t_pause) / (t + t_pause) ≤ P_cap; t = ρ_t · FLOPs / CPU peak FLOP/s.
            Shrinking a plan cannot lower power under a FLOPs-proportional model (E/t is the
            same for every plan), so the power cap is met by pausing: :meth:`pause_seconds`.

Parts: estimate.py (a plan's predicted costs, the RAM and arena limits), budget.py (the energy
budget, the power pause), search.py (the shrinking above), feasibility.py (the error messages).

Trainer wiring (one call each per step)::

    planner = CapPlanner(inner, bundle.manifest, profile, caps, total_steps, batch_size)
    planner.observe_memory(process_rss_bytes())   # optional: engine loaded, before any step
    planner.check_feasible()                      # EdgetuneError with the smallest cap that works
    for each step:
        planner.observe_overhead(joules)          # energy since the last step (logging, checkpoints)
        plan = planner.plan(n_tokens, batch_size) # CapReached: the energy cap ends the run here
        ... engine.train_step(...) ...            # ArenaFull: plan = planner.replan_smaller(), again
        planner.observe(stats.cls_delta, stats.cls_norm)
        planner.observe_memory(peak_rss_bytes())  # edgetune.sensors.peak; or RSS after the step
        planner.observe_energy(joules, seconds)   # the step's own, from an energy meter; optional
        time.sleep(planner.pause_seconds(seconds))
    planner.observe_checkpoint_energy(joules)     # each checkpoint: kept for the final one
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgetune.caps.budget import CapReached, EnergyBudget
from edgetune.caps.cost_model import MemoryBreakdown, ModelCosts, static_bytes
from edgetune.caps.estimate import CapSettings, StepEstimate, StepEstimator
from edgetune.caps.feasibility import problems
from edgetune.caps.limits import Caps
from edgetune.caps.search import fit_plan
from edgetune.devices import DeviceProfile
from edgetune.errors import EdgetuneError, UsageError
from edgetune.schedule.base import Planner, StepPlan

__all__ = ["CapPlanner", "CapReached", "CapSettings", "StepEstimate"]

STATE_VERSION = 1


class _Part:
    """An attribute of one of the planner's parts, read and written through the planner."""

    def __init__(self, part: str, name: str = ""):
        self.part, self.name = part, name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class CapPlanner:
    """A :class:`~edgetune.schedule.base.Planner` whose plans respect :class:`Caps`."""

    costs, profile, caps, settings = _Part("model"), _Part("model"), _Part("model"), _Part("model")
    memory, energy, time = _Part("model"), _Part("model"), _Part("model")
    input_bytes_per_sample, arena_bytes, arena_factor = _Part("model"), _Part("model"), _Part("model")
    ram_limit = _Part("model")  # read-only: a property of StepEstimator
    spent_joules = _Part("budget", "spent")
    energy_reserve = _Part("budget", "reserve")
    overhead_joules = _Part("budget", "overhead")
    max_step_joules = _Part("budget", "max_step")

    def __init__(self, inner: Planner, manifest: Mapping[str, Any], profile: DeviceProfile,
                 caps: Caps, total_steps: int, batch_size: int,
                 settings: CapSettings | None = None, base_bytes: float | None = None):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise UsageError(f"total_steps={total_steps!r}: must be an integer >= 1")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size={batch_size!r}: must be an integer >= 1")
        self.inner = inner
        settings = settings or CapSettings()
        costs = ModelCosts.from_manifest(manifest)
        self.model = StepEstimator(costs, profile, caps, settings, base_bytes)
        self.total_steps, self.batch_size = total_steps, batch_size
        self.steps_done = 0
        self.last: StepEstimate | None = None
        self._checkpointed = False
        # Before anything is measured: a checkpoint write and the time between two steps at
        # the device's active power, for 20 ms + the checkpoint's bytes at 500 MB/s, and 20 ms.
        # A checkpoint holds every parameter and the moments (ORT's whole state) or the
        # trainable ones and their moments (numpy's)
        p, o = static_bytes(costs)
        written = p + o if settings.engine.ort_state else 1.5 * o
        self.budget = EnergyBudget(caps.energy_joules, total_steps, settings.safety,
                                   profile.active_watts * (0.02 + written / 5e8),
                                   profile.active_watts * 0.02)
        self._inner_plan: StepPlan | None = None
        self._shape: tuple[int, int] = (0, 0)

    # ---- limits and prediction ---------------------------------------------------------------
    def energy_allowance(self) -> float:
        """Joules this step may use: (cap − spent) / steps left; inf without an energy cap."""
        return self.budget.allowance(self.steps_done)

    def floor_tokens(self, n_tokens: int) -> int:
        return self.model.floor_tokens(n_tokens)

    def estimate(self, keep, trained, micro_batch: int, n_tokens: int, batch_size: int,
                 allowance: float = math.inf, changes: tuple = ()) -> StepEstimate:
        """Predicted memory, FLOPs, energy, time and pause of one plan."""
        return self.model.estimate(keep, trained, micro_batch, n_tokens, batch_size, allowance, changes)

    def _arena_use(self, mem: MemoryBreakdown) -> float:
        return self.model.arena_use(mem)

    def fit_plan(self, base: StepPlan, n_tokens: int, batch_size: int) -> StepEstimate:
        """The preferred plan that fits (module docstring), or the cheapest that fits RAM."""
        return fit_plan(self.model, base, n_tokens, batch_size, self.energy_allowance(), self.steps_done)

    def smallest(self, n_tokens: int | None = None, batch_size: int | None = None) -> StepEstimate:
        """The smallest plan: every layer at the keep floor, only the top layer trained, m = 1."""
        return self.model.smallest(self.model.costs.tokens if n_tokens is None else n_tokens,
                                   self.batch_size if batch_size is None else batch_size)

    def check_feasible(self, n_tokens: int | None = None,
                       batch_size: int | None = None) -> StepEstimate:
        """Raise :class:`EdgetuneError` (every violated cap, each with the smallest value that
        would work) if even :meth:`smallest` cannot meet the caps; return that estimate."""
        est = self.smallest(n_tokens, batch_size)
        found = problems(self.model, est, self.total_steps)
        if found:
            raise EdgetuneError("; ".join(found))
        return est

    # ---- Planner protocol --------------------------------------------------------------------
    def plan(self, n_tokens: int, batch_size: int) -> StepPlan:
        self._inner_plan, self._shape = self.inner.plan(n_tokens, batch_size), (n_tokens, batch_size)
        return self._fit_inner()

    def _fit_inner(self, refused: bool = False) -> StepPlan:
        """The inner plan fitted to the caps; ``refused``: the arena refused the last one, so
        the energy fallback is the smallest plan (micro-batch 1), not the cheapest."""
        n_tokens, batch_size = self._shape
        assert self._inner_plan is not None
        cheapest = None
        if self.budget.cap is not None:  # stop before a step the energy cap cannot pay for
            cheapest = self.smallest(n_tokens, batch_size) if refused else \
                self.model.cheapest(n_tokens, batch_size, self._inner_plan.micro_batch)
            self.budget.check_left(cheapest.joules, self.steps_done)
        est = self.fit_plan(self._inner_plan, n_tokens, batch_size)
        if cheapest is not None and not self.budget.covers(est.joules):
            est = cheapest  # the budget's even spread ran ahead of measurements
        self.last = est
        self.steps_done += 1
        self.budget.charge(est.joules)
        return est.plan

    def replan_smaller(self) -> StepPlan:
        """The arena refused the last plan: nothing was updated. Count its memory as larger
        (×1.5 on A + W) and fit the same inner plan again; :class:`EdgetuneError` when even the
        smallest plan cannot fit the arena."""
        if self.last is None:
            raise UsageError("replan_smaller: no step planned yet")
        self.steps_done -= 1
        self.budget.refund()
        self.model.arena_factor *= 1.5
        return self._fit_inner(refused=True)

    def observe_startup(self, joules: float) -> None:
        """Energy this process spent before its first step (loading, the warm-up)."""
        self.budget.observe_startup(joules)

    def observe_overhead(self, joules: float, final: bool = True) -> None:
        """Energy measured between two steps (logging, a power cap's pause, checkpoints): the
        run's end costs as much again, so the most of it is kept for every step's estimate.
        ``final=False``: a piece before a validation, summed with the rest at the next step."""
        self.budget.observe_overhead(joules, final)

    def observe_validation(self, joules: float) -> None:
        """A validation's energy (whole or stopped part way): spent, but not time between
        steps, since it asks for its own leave (:meth:`can_afford`)."""
        self.budget.observe_startup(joules)

    def can_afford(self, joules: float) -> bool:
        """Whether the energy left pays for ``joules`` of optional work (validation asks before
        it runs, and part way through) on top of the steps left, at the most a step has cost,
        the checkpoint it may write and the final one: the steps come first."""
        return self.budget.can_afford(joules, self.steps_done, self.last.joules if self.last else 0.0)

    def can_checkpoint(self) -> bool:
        """Whether the energy left pays for a checkpoint write (a fleet's rounds each write
        one, and only the run's last was kept back)."""
        return self.budget.covers_checkpoint()

    def observe_checkpoint_energy(self, joules: float) -> None:
        """A checkpoint write took ``joules``: keep as much for the final one."""
        self.budget.observe_checkpoint(joules)

    def observe(self, cls_delta: np.ndarray, cls_norm: np.ndarray | None = None) -> None:
        self.inner.observe(cls_delta, cls_norm)

    @property
    def budgets(self) -> np.ndarray | None:
        """The inner planner's ALaST budgets (before this planner shrinks them), or None."""
        return self.inner.budgets

    def observe_memory(self, rss_bytes: float) -> None:
        """Measured RSS: before any step, a floor for the base; after a step, its (peak) RSS."""
        if not isinstance(rss_bytes, (int, float)) or isinstance(rss_bytes, bool) or rss_bytes < 0:
            raise UsageError(f"rss_bytes={rss_bytes!r}: must be a number >= 0")
        memory = self.model.memory
        if self.last is None:
            memory.observe_idle(rss_bytes, self.model.static)
            return
        model = self.last.memory.model
        if self._checkpointed:
            # the high-water mark now holds a checkpoint write: the arena's largest step + C
            model = max(model, memory.max_model or 0.0) + self.last.memory.checkpoint
        memory.observe_step(rss_bytes, model)

    def observe_checkpoint(self) -> None:
        """A checkpoint was written: from now on the process's peak RSS includes its copy, so
        the base is not fitted as if the steps alone had reached it."""
        self._checkpointed = True

    def observe_energy(self, joules: float, seconds: float | None = None) -> None:
        """Measured energy (and duration) of the step just run; once per step."""
        if self.last is None:
            raise UsageError("observe_energy: no step planned yet")
        if not isinstance(joules, (int, float)) or isinstance(joules, bool) or joules < 0:
            raise UsageError(f"joules={joules!r}: must be a number >= 0")
        self.model.energy.observe(joules, self.last.model_joules)
        self.budget.observe_step(float(joules))
        if seconds is not None:
            self.model.time.observe(seconds, self.last.model_seconds)

    def pause_seconds(self, step_seconds: float | None = None) -> float:
        """Idle time after the last step that keeps mean power ≤ the power cap (0 without one),
        from its measured energy and duration where observed, else the predictions."""
        if self.last is None:
            return 0.0
        measured = self.budget.measured
        joules = self.last.joules if measured is None else measured
        seconds = self.last.seconds if step_seconds is None else float(step_seconds)
        return self.model.pause(joules, seconds)

    def state_dict(self) -> dict:
        b, m = self.budget, self.model
        return {"version": STATE_VERSION, "inner": self.inner.state_dict(),
                "steps_done": self.steps_done, "spent_joules": b.spent,
                "energy_reserve": b.reserve, "overhead_joules": b.overhead,
                "max_step_joules": b.max_step, "arena_factor": m.arena_factor,
                "memory": m.memory.state_dict(), "energy": m.energy.state_dict(),
                "time": m.time.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            got = state.get("version") if isinstance(state, Mapping) else state
            raise UsageError(f"cap planner state version {got!r}: expected {STATE_VERSION}")
        steps, spent = state.get("steps_done"), state.get("spent_joules")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise UsageError(f"cap planner state steps_done={steps!r}: must be an integer >= 0")
        if isinstance(spent, bool) or not isinstance(spent, (int, float)) or spent < 0:
            raise UsageError(f"cap planner state spent_joules={spent!r}: must be a number >= 0")
        b, m = self.budget, self.model
        self.inner.load_state_dict(state["inner"])
        m.memory.load_state_dict(state["memory"])
        m.energy.load_state_dict(state["energy"])
        m.time.load_state_dict(state["time"])
        self.steps_done, b.spent = steps, float(spent)
        if "energy_reserve" in state:
            b.reserve, b.reserve_measured = float(state["energy_reserve"]), True
        if "overhead_joules" in state:
            b.overhead, b.overhead_measured = float(state["overhead_joules"]), True
        b.max_step = float(state.get("max_step_joules", 0.0))
        m.arena_factor = max(1.0, float(state.get("arena_factor", 1.0)))
        b.pending, b.measured, self.last = 0.0, None, None
