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
            estimate (:meth:`_energy_need`) the budget left cannot pay for is not taken
            (:class:`CapReached`)
    arena   ρ_A·(A + W) ≤ the shared arena's limit (train/ram_guard.py), ρ_A ×1.5 each time
            ORT refuses an allocation (:meth:`replan_smaller`)
    power   a pause after the step: t_pause = max(0, (E − P_cap·t) / (P_cap − P_idle)), so that
            (E + P_idle·t_pause) / (t + t_pause) ≤ P_cap; t = ρ_t · FLOPs / CPU peak FLOP/s.
            Shrinking a plan cannot lower power under a FLOPs-proportional model (E/t is the
            same for every plan), so the power cap is met by pausing: :meth:`pause_seconds`.

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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgetune.caps.calibration import MemoryCalibration, RatioCalibration, base_prior
from edgetune.caps.cost_model import (
    EngineMemory,
    MemoryBreakdown,
    ModelCosts,
    StepFlops,
    check_engine,
    static_bytes,
    step_flops,
    step_memory,
)
from edgetune.caps.limits import Caps, effective_ram
from edgetune.caps.units import format_bytes, format_joules, format_watts
from edgetune.config import check_float, check_int
from edgetune.devices import DeviceProfile
from edgetune.errors import EdgetuneError, UsageError
from edgetune.schedule.base import Planner, StepPlan

STATE_VERSION = 1
_BISECT = 24


class CapReached(EdgetuneError):
    """The run's energy budget cannot pay for another step: the run ends here, checkpointed."""


@dataclass
class CapSettings:
    """How far plans may shrink and how much room to leave under the RAM cap.

    ``keep_floor``: smallest keep ratio, f = max(min_tokens, ⌈keep_floor·N⌉) tokens per layer;
    ``min_tokens``: at least this many tokens (the class token and one more);
    ``safety``: predicted peak RSS must stay under (1 − safety)·cap;
    ``engine``: the engine's memory behaviour (``EngineCaps.memory``): whether K may shrink
    (an engine that freezes layers per step), its gradients, optimizer and checkpoint writes.
    """

    keep_floor: float = 0.1
    min_tokens: int = 2
    safety: float = 0.05
    engine: EngineMemory = field(default_factory=EngineMemory)

    def __post_init__(self) -> None:
        check_float(self, "keep_floor", lo=0.0, hi=1.0, lo_open=True)
        check_int(self, "min_tokens", lo=1)
        check_float(self, "safety", lo=0.0, hi=1.0, hi_open=True)
        check_engine(self.engine, "CapSettings.engine")

    @property
    def shrink_layers(self) -> bool:
        return self.engine.freeze_per_step


@dataclass(frozen=True, eq=False)
class StepEstimate:
    """A plan with its predicted costs (energy and time calibrated) and what was shrunk."""

    plan: StepPlan
    n_tokens: int
    batch_size: int
    memory: MemoryBreakdown
    flops: StepFlops
    model_joules: float        # FLOPs · J/GFLOP, before calibration
    model_seconds: float       # FLOPs / CPU peak FLOP/s, before calibration
    joules: float              # ρ_E · model_joules
    seconds: float             # ρ_t · model_seconds
    pause_seconds: float       # after the step, for the power cap
    fits_ram: bool
    fits_energy: bool
    changes: tuple = field(default=())

    @property
    def fits(self) -> bool:
        return self.fits_ram and self.fits_energy


class CapPlanner:
    """A :class:`~edgetune.schedule.base.Planner` whose plans respect :class:`Caps`."""

    def __init__(self, inner: Planner, manifest: Mapping[str, Any], profile: DeviceProfile,
                 caps: Caps, total_steps: int, batch_size: int,
                 settings: CapSettings | None = None, base_bytes: float | None = None):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise UsageError(f"total_steps={total_steps!r}: must be an integer >= 1")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size={batch_size!r}: must be an integer >= 1")
        self.inner = inner
        self.costs = ModelCosts.from_manifest(manifest)
        self.profile, self.caps = profile, caps
        self.total_steps, self.batch_size = total_steps, batch_size
        self.settings = settings or CapSettings()
        params, optimizer = static_bytes(self.costs)
        self._static = params + optimizer
        self.memory = MemoryCalibration(base_prior(params, optimizer) if base_bytes is None else base_bytes)
        self.energy = RatioCalibration()
        self.time = RatioCalibration()
        self.steps_done = 0
        self.spent_joules = 0.0
        self._pending_joules = 0.0
        self._measured_joules: float | None = None
        self.last: StepEstimate | None = None
        self._checkpointed = False
        self.input_bytes_per_sample = 0.0      # the batch's inputs per sample (the trainer's)
        self.arena_bytes: float | None = None  # the shared arena's limit, when one is set
        self.arena_factor = 1.0                # × A + W; grows each time the arena refuses
        # Before anything is measured: a checkpoint write and the time between two steps at
        # the device's active power, for 20 ms + the checkpoint's bytes at 500 MB/s, and 20 ms.
        # A checkpoint holds every parameter and the moments (ORT's whole state) or the
        # trainable ones and their moments (numpy's)
        p, o = static_bytes(self.costs)
        written = p + o if self.settings.engine.ort_state else 1.5 * o
        self.energy_reserve = profile.active_watts * (0.02 + written / 5e8)
        self.overhead_joules = profile.active_watts * 0.02
        self._reserve_measured = self._overhead_measured = False
        self.max_step_joules = 0.0             # the most a step has measured (a noisy meter's
                                               # worst case beats the calibrated mean)
        self._inner_plan: StepPlan | None = None
        self._shape: tuple[int, int] = (0, 0)

    # ---- limits ------------------------------------------------------------------------------
    @property
    def ram_limit(self) -> float:
        """Largest predicted peak RSS allowed: (1 − safety)·min(cap, device RAM)."""
        return (1.0 - self.settings.safety) * effective_ram(self.caps, self.profile.ram_bytes)

    def energy_allowance(self) -> float:
        """Joules this step may use: (cap − spent) / steps left; inf without an energy cap."""
        if self.caps.energy_joules is None:
            return math.inf
        left = max(1, self.total_steps - self.steps_done)
        free = self.caps.energy_joules - self.spent_joules - self.energy_reserve
        # each step also costs the time around it, and a measured step may exceed its estimate
        return (1.0 - self.settings.safety) * free / left - self.overhead_joules

    def floor_tokens(self, n_tokens: int) -> int:
        s = self.settings
        return min(n_tokens, max(s.min_tokens, math.ceil(s.keep_floor * n_tokens - 1e-9)))

    # ---- prediction --------------------------------------------------------------------------
    def estimate(self, keep, trained, micro_batch: int, n_tokens: int, batch_size: int,
                 allowance: float = math.inf, changes: tuple = ()) -> StepEstimate:
        """Predicted memory, FLOPs, energy, time and pause of one plan."""
        keep = np.asarray(keep, np.int64)
        trained = np.asarray(trained, bool)
        mem = step_memory(self.costs, keep, trained, n_tokens, micro_batch, self.memory.base,
                          engine=self.settings.engine, batch_size=batch_size,
                          input_bytes_per_sample=self.input_bytes_per_sample)
        fits_arena = self.arena_bytes is None or self._arena_use(mem) <= self.arena_bytes
        flops = step_flops(self.costs, keep, trained, n_tokens, batch_size)
        model_j = self.profile.flops_joules(flops.total)
        peak = self.profile.cpu_peak_gflops
        assert peak is not None  # DeviceProfile.__post_init__ fills it in (peak_gflops)
        model_s = flops.total / (float(peak) * 1e9)  # ORT runs on the CPU
        joules, seconds = model_j * self.energy.ratio, model_s * self.time.ratio
        plan = StepPlan(keep, trained, int(micro_batch))
        return StepEstimate(plan, n_tokens, batch_size, mem, flops, model_j, model_s, joules,
                            seconds, self._pause(joules, seconds),
                            mem.total <= self.ram_limit and fits_arena, joules <= allowance,
                            tuple(changes))

    def _arena_use(self, mem: MemoryBreakdown) -> float:
        """What a step asks of the arena: ρ·(A + W) and the gradients (numpy's state: ORT's
        outputs, which numpy views without a copy; ORT's: its buffers, with the AdamW moments)."""
        state = mem.gradients + (mem.optimizer if self.settings.engine.ort_state else 0.0)
        return self.arena_factor * mem.arena + state

    def _pause(self, joules: float, seconds: float) -> float:
        cap = self.caps.power_watts
        if cap is None or joules <= cap * seconds:
            return 0.0
        if cap <= self.profile.idle_watts:
            return math.inf
        return (joules - cap * seconds) / (cap - self.profile.idle_watts)

    # ---- the search --------------------------------------------------------------------------
    def _masks(self, trained: np.ndarray) -> list[np.ndarray]:
        """The inner mask, then minus its lowest layers one by one, then the top layer alone."""
        if not self.settings.shrink_layers:
            return [trained]
        idx = np.flatnonzero(trained)
        L = trained.size
        out = []
        for j in range(idx.size):
            m = np.zeros(L, bool)
            m[idx[j:]] = True
            out.append(m)
        if idx[-1] != L - 1:
            top = np.zeros(L, bool)
            top[L - 1] = True
            out.append(top)
        return out

    @staticmethod
    def _micro_batches(m: int) -> list[int]:
        out = [m]
        while out[-1] > 1:
            out.append(math.ceil(out[-1] / 2))
        return out

    @staticmethod
    def _scaled(keep: np.ndarray, floor: int, s: float) -> np.ndarray:
        """keep_l(s) = min(keep_l, max(f, ⌈s·keep_l⌉)): non-increasing when keep is."""
        return np.minimum(keep, np.maximum(floor, np.ceil(s * keep - 1e-9).astype(np.int64)))

    def _describe(self, base: StepPlan, keep, mask, mb, s) -> tuple:
        out = []
        if s < 1.0 and not np.array_equal(keep, base.keep):
            out.append(f"keep x{s:.2f}")
        k0, k1 = int(base.trained.sum()), int(mask.sum())
        if not np.array_equal(mask, base.trained):
            out.append(f"trained {k0}->{k1} layers")
        if mb != base.micro_batch:
            out.append(f"micro-batch {base.micro_batch}->{mb}")
        return tuple(out)

    def fit_plan(self, base: StepPlan, n_tokens: int, batch_size: int) -> StepEstimate:
        """The preferred plan that fits (module docstring), or the cheapest that fits RAM."""
        inner_keep = np.minimum(np.asarray(base.keep, np.int64), n_tokens)
        trained = np.asarray(base.trained, bool)
        floor = self.floor_tokens(n_tokens)
        allowance = self.energy_allowance()
        ram_only: StepEstimate | None = None
        for mb in self._micro_batches(max(1, min(int(base.micro_batch), batch_size))):
            for mask in self._masks(trained):
                def at(s: float, mask: np.ndarray = mask, mb: int = mb) -> StepEstimate:
                    keep = self._scaled(inner_keep, floor, s)
                    return self.estimate(keep, mask, mb, n_tokens, batch_size, allowance,
                                         self._describe(base, keep, mask, mb, s))

                full = at(1.0)
                if full.fits:
                    return full
                low = at(0.0)
                if low.fits_ram:
                    ram_only = low  # the cheapest RAM-fitting plan so far (energy falls with it)
                if not low.fits:
                    continue
                lo, hi = 0.0, 1.0
                for _ in range(_BISECT):
                    mid = 0.5 * (lo + hi)
                    if at(mid).fits:
                        lo = mid
                    else:
                        hi = mid
                return at(lo)
            if ram_only is not None:
                # energy fails for every mask at this micro-batch; smaller ones cost the same
                # energy, so run the cheapest plan that fits RAM, over the energy budget
                return ram_only
        least = self.smallest(n_tokens, batch_size)
        arena_ok = self.arena_bytes is None or self._arena_use(least.memory) <= self.arena_bytes
        if arena_ok and least.memory.total <= self.ram_limit / (1.0 - self.settings.safety):
            # inside the cap, not inside the margin: run it rather than stop a run that fits
            return replace(least, changes=self._describe(base, least.plan.keep, least.plan.trained,
                                                         1, 0.0) + ("inside the safety margin",))
        raise EdgetuneError(self._ram_message(least, during=True))

    def smallest(self, n_tokens: int | None = None, batch_size: int | None = None) -> StepEstimate:
        """The smallest plan: every layer at the keep floor, only the top layer trained, m = 1."""
        n = self.costs.tokens if n_tokens is None else n_tokens
        L = self.costs.num_layers
        keep = np.full(L, self.floor_tokens(n), np.int64)
        top = np.zeros(L, bool)
        top[-1 if self.settings.shrink_layers else slice(None)] = True
        return self.estimate(keep, top, 1, n, self.batch_size if batch_size is None else batch_size)

    # ---- feasibility -------------------------------------------------------------------------
    def _ram_message(self, est: StepEstimate, during: bool = False) -> str:
        need = est.memory.total / (1.0 - self.settings.safety)
        device = self.profile.ram_bytes
        where = f"at step {self.steps_done + 1}, measured RSS puts " if during else ""
        layers = (f"train layer {self.costs.num_layers - 1} only" if self.settings.shrink_layers
                  else "every layer trained")
        msg = (f"{where}the smallest plan (keep {int(est.plan.keep[0])} of {est.n_tokens} tokens per "
               f"layer, {layers}, micro-batch 1) at a predicted "
               f"peak RSS of {format_bytes(est.memory.total, True)} (base "
               f"{format_bytes(est.memory.base, True)})")
        if need > device:
            return (f"{msg} does not fit in the {self.profile.name} device's "
                    f"{format_bytes(device)} of RAM")
        cap = format_bytes(self.caps.ram_bytes) if self.caps.ram_bytes else "?"
        return (f"--ram-cap {cap}: {msg} does not fit with a {self.settings.safety:.0%} safety "
                f"margin; the smallest cap that would work is --ram-cap {format_bytes(need, True)}")

    def check_feasible(self, n_tokens: int | None = None,
                       batch_size: int | None = None) -> StepEstimate:
        """Raise :class:`EdgetuneError` (every violated cap, each with the smallest value that
        would work) if even :meth:`smallest` cannot meet the caps; return that estimate."""
        est = self.smallest(n_tokens, batch_size)
        problems = []
        if not est.fits_ram:
            problems.append(self._ram_message(est))
        if self.caps.energy_joules is not None:
            need = est.joules * self.total_steps
            if need > self.caps.energy_joules:
                problems.append(
                    f"--energy-cap {format_joules(self.caps.energy_joules)}: {self.total_steps} steps "
                    f"of the smallest plan take a predicted {format_joules(need, True)} "
                    f"({format_joules(est.joules)} per step); the smallest cap that would work is "
                    f"--energy-cap {format_joules(need, True)}, or train fewer steps")
        cap = self.caps.power_watts
        if cap is not None and cap <= self.profile.idle_watts:
            problems.append(
                f"--power-cap {format_watts(cap)}: the {self.profile.name} device draws "
                f"{format_watts(self.profile.idle_watts)} idle; the cap must be above that "
                f"(pauses between steps bring the mean down to idle power at best)")
        if problems:
            raise EdgetuneError("; ".join(problems))
        return est

    # ---- Planner protocol --------------------------------------------------------------------
    def plan(self, n_tokens: int, batch_size: int) -> StepPlan:
        self._inner_plan, self._shape = self.inner.plan(n_tokens, batch_size), (n_tokens, batch_size)
        return self._fit_inner()

    def _fit_inner(self) -> StepPlan:
        n_tokens, batch_size = self._shape
        assert self._inner_plan is not None
        self._check_energy_left(n_tokens, batch_size)
        est = self.fit_plan(self._inner_plan, n_tokens, batch_size)
        if not self._energy_covers(est):  # the budget's even spread ran ahead of measurements
            est = self.smallest(n_tokens, batch_size)
        self.last = est
        self.steps_done += 1
        self.spent_joules += est.joules
        self._pending_joules = est.joules
        self._measured_joules = None
        return est.plan

    def _energy_covers(self, est: StepEstimate) -> bool:
        """Whether the budget left pays for ``est`` (with the margin), the time around it and
        the final checkpoint."""
        cap = self.caps.energy_joules
        if cap is None:
            return True
        return self.spent_joules + self._energy_need(est) + self.energy_reserve <= cap

    def _energy_need(self, est: StepEstimate) -> float:
        """A step's energy on the safe side: its estimate with the margin, or the most a step
        has measured, and the time around it twice (before it, and the run's end)."""
        return (max((1.0 + self.settings.safety) * est.joules, self.max_step_joules)
                + 2.0 * self.overhead_joules)

    def _check_energy_left(self, n_tokens: int, batch_size: int) -> None:
        """Stop before a step the energy cap cannot pay for (with the final checkpoint's)."""
        cap = self.caps.energy_joules
        if cap is None:
            return
        least = self.smallest(n_tokens, batch_size)
        need = self._energy_need(least)
        if not self._energy_covers(least):
            raise CapReached(
                f"--energy-cap {format_joules(cap)}: {format_joules(self.spent_joules)} spent, "
                f"the next step needs {format_joules(need, True)} at least and the final checkpoint "
                f"{format_joules(self.energy_reserve, True)}; stopped before step {self.steps_done + 1}")

    def replan_smaller(self) -> StepPlan:
        """The arena refused the last plan: nothing was updated. Count its memory as larger
        (×1.5 on A + W) and fit the same inner plan again; :class:`EdgetuneError` when even the
        smallest plan cannot fit the arena."""
        if self.last is None:
            raise UsageError("replan_smaller: no step planned yet")
        self.steps_done -= 1
        self.spent_joules -= self._pending_joules
        self._pending_joules = 0.0
        self.arena_factor *= 1.5
        return self._fit_inner()

    def observe_startup(self, joules: float) -> None:
        """Energy this process spent before its first step (loading, the warm-up)."""
        if joules < 0:
            raise UsageError(f"joules={joules!r}: must be >= 0")
        self.spent_joules += float(joules)

    def observe_overhead(self, joules: float) -> None:
        """Energy measured between two steps (logging, checkpoints): the run's end costs as
        much again, so the most of it is kept for every step's estimate."""
        self.observe_startup(joules)
        prior = self.overhead_joules if self._overhead_measured else 0.0
        self.overhead_joules, self._overhead_measured = max(prior, float(joules)), True

    def can_afford(self, joules: float) -> bool:
        """Whether the energy left pays for ``joules`` of optional work (validation asks before
        it runs) on top of the steps left, at the most a step has cost, and the final
        checkpoint: the steps come first."""
        cap = self.caps.energy_joules
        if cap is None:
            return True
        per_step = max(self.max_step_joules, self.last.joules if self.last else 0.0) + self.overhead_joules
        left = max(0, self.total_steps - self.steps_done)
        return self.spent_joules + joules + left * per_step + self.energy_reserve <= cap

    def observe_checkpoint_energy(self, joules: float) -> None:
        """A checkpoint write took ``joules``: keep as much for the final one."""
        prior = self.energy_reserve if self._reserve_measured else 0.0
        self.energy_reserve, self._reserve_measured = max(prior, float(joules)), True

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
        if self.last is None:
            self.memory.observe_idle(rss_bytes, self._static)
            return
        model = self.last.memory.model
        if self._checkpointed:
            # the high-water mark now holds a checkpoint write: the arena's largest step + C
            model = max(model, self.memory.max_model or 0.0) + self.last.memory.checkpoint
        self.memory.observe_step(rss_bytes, model)

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
        self.energy.observe(joules, self.last.model_joules)
        self.max_step_joules = max(self.max_step_joules, float(joules))
        self.spent_joules += float(joules) - self._pending_joules
        self._pending_joules = 0.0
        self._measured_joules = float(joules)
        if seconds is not None:
            self.time.observe(seconds, self.last.model_seconds)

    def pause_seconds(self, step_seconds: float | None = None) -> float:
        """Idle time after the last step that keeps mean power ≤ the power cap (0 without one),
        from its measured energy and duration where observed, else the predictions."""
        if self.last is None:
            return 0.0
        joules = self.last.joules if self._measured_joules is None else self._measured_joules
        seconds = self.last.seconds if step_seconds is None else float(step_seconds)
        return self._pause(joules, seconds)

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "inner": self.inner.state_dict(),
                "steps_done": self.steps_done, "spent_joules": self.spent_joules,
                "energy_reserve": self.energy_reserve, "overhead_joules": self.overhead_joules,
                "max_step_joules": self.max_step_joules, "arena_factor": self.arena_factor,
                "memory": self.memory.state_dict(), "energy": self.energy.state_dict(),
                "time": self.time.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            got = state.get("version") if isinstance(state, Mapping) else state
            raise UsageError(f"cap planner state version {got!r}: expected {STATE_VERSION}")
        steps, spent = state.get("steps_done"), state.get("spent_joules")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise UsageError(f"cap planner state steps_done={steps!r}: must be an integer >= 0")
        if isinstance(spent, bool) or not isinstance(spent, (int, float)) or spent < 0:
            raise UsageError(f"cap planner state spent_joules={spent!r}: must be a number >= 0")
        self.inner.load_state_dict(state["inner"])
        self.memory.load_state_dict(state["memory"])
        self.energy.load_state_dict(state["energy"])
        self.time.load_state_dict(state["time"])
        self.steps_done, self.spent_joules = steps, float(spent)
        if "energy_reserve" in state:
            self.energy_reserve, self._reserve_measured = float(state["energy_reserve"]), True
        if "overhead_joules" in state:
            self.overhead_joules, self._overhead_measured = float(state["overhead_joules"]), True
        self.max_step_joules = float(state.get("max_step_joules", 0.0))
        self.arena_factor = max(1.0, float(state.get("arena_factor", 1.0)))
        self._pending_joules, self._measured_joules, self.last = 0.0, None, None
