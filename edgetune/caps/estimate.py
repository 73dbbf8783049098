"""One plan's predicted costs: :class:`StepEstimator` (memory, FLOPs, energy, time) and its inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgetune.bundle import drops_tokens
from edgetune.caps.budget import power_pause
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
from edgetune.config import check_float, check_int
from edgetune.devices import DeviceProfile
from edgetune.schedule.base import StepPlan


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

    @classmethod
    def for_bundle(cls, manifest: Mapping[str, Any], engine: EngineMemory) -> CapSettings:
        """The defaults, with the keep floor at every token for a model that drops none."""
        return cls(engine=engine, keep_floor=0.1 if drops_tokens(dict(manifest)) else 1.0)

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


class StepEstimator:
    """The cost model with its calibrations and the RAM / arena limits a plan must fit."""

    def __init__(self, costs: ModelCosts, profile: DeviceProfile, caps: Caps, settings: CapSettings,
                 base_bytes: float | None = None):
        self.costs, self.profile, self.caps, self.settings = costs, profile, caps, settings
        params, optimizer = static_bytes(costs)
        self.static = params + optimizer
        self.memory = MemoryCalibration(base_prior(params, optimizer) if base_bytes is None else base_bytes)
        self.energy = RatioCalibration()
        self.time = RatioCalibration()
        self.input_bytes_per_sample = 0.0      # the batch's inputs per sample (the trainer's)
        self.arena_bytes: float | None = None  # the shared arena's limit, when one is set
        self.arena_factor = 1.0                # × A + W; grows each time the arena refuses

    @property
    def ram_limit(self) -> float:
        """Largest predicted peak RSS allowed: (1 − safety)·min(cap, device RAM)."""
        return (1.0 - self.settings.safety) * effective_ram(self.caps, self.profile.ram_bytes)

    def floor_tokens(self, n_tokens: int) -> int:
        s = self.settings
        return min(n_tokens, max(s.min_tokens, math.ceil(s.keep_floor * n_tokens - 1e-9)))

    def estimate(self, keep, trained, micro_batch: int, n_tokens: int, batch_size: int,
                 allowance: float = math.inf, changes: tuple = ()) -> StepEstimate:
        """Predicted memory, FLOPs, energy, time and pause of one plan."""
        keep = np.asarray(keep, np.int64)
        trained = np.asarray(trained, bool)
        mem = step_memory(self.costs, keep, trained, n_tokens, micro_batch, self.memory.base,
                          engine=self.settings.engine, batch_size=batch_size,
                          input_bytes_per_sample=self.input_bytes_per_sample)
        flops = step_flops(self.costs, keep, trained, n_tokens, batch_size)
        model_j = self.profile.flops_joules(flops.total)
        peak = self.profile.cpu_peak_gflops
        assert peak is not None  # DeviceProfile.__post_init__ fills it in (peak_gflops)
        model_s = flops.total / (float(peak) * 1e9)  # ORT runs on the CPU
        joules, seconds = model_j * self.energy.ratio, model_s * self.time.ratio
        plan = StepPlan(keep, trained, int(micro_batch))
        return StepEstimate(plan, n_tokens, batch_size, mem, flops, model_j, model_s, joules,
                            seconds, self.pause(joules, seconds),
                            mem.total <= self.ram_limit and self.fits_arena(mem), joules <= allowance,
                            tuple(changes))

    def arena_use(self, mem: MemoryBreakdown) -> float:
        """What a step asks of the arena: ρ·(A + W) and the gradients (numpy's state: ORT's
        outputs, which numpy views without a copy; ORT's: its buffers, with the AdamW moments)."""
        state = mem.gradients + (mem.optimizer if self.settings.engine.ort_state else 0.0)
        return self.arena_factor * mem.arena + state

    def fits_arena(self, mem: MemoryBreakdown) -> bool:
        return self.arena_bytes is None or self.arena_use(mem) <= self.arena_bytes

    def pause(self, joules: float, seconds: float) -> float:
        return power_pause(joules, seconds, self.caps.power_watts, self.profile.idle_watts)

    def smallest(self, n_tokens: int, batch_size: int) -> StepEstimate:
        """The smallest plan: every layer at the keep floor, only the top layer trained, m = 1."""
        L = self.costs.num_layers
        keep = np.full(L, self.floor_tokens(n_tokens), np.int64)
        top = np.zeros(L, bool)
        top[-1 if self.settings.shrink_layers else slice(None)] = True
        return self.estimate(keep, top, 1, n_tokens, batch_size)

    def cheapest(self, n_tokens: int, batch_size: int, micro_batch: int) -> StepEstimate:
        """The least energy: :meth:`smallest`'s tokens and layers at the largest micro-batch,
        halving from ``micro_batch``, that fits RAM (else m = 1). A smaller micro-batch saves
        memory, never energy: the same FLOPs in more graph calls (vit-micro at 64 samples a
        step: 43 ms at m = 1, 4 ms at m = 64)."""
        least = self.smallest(n_tokens, batch_size)
        m = max(1, min(int(micro_batch), batch_size))
        while m > 1:
            est = self.estimate(least.plan.keep, least.plan.trained, m, n_tokens, batch_size)
            if est.fits_ram:
                return est
            m = math.ceil(m / 2)
        return least
