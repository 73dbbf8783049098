"""The shrinking search (planner.py's docstring): the preferred plan that fits the caps."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from edgetune.caps.estimate import StepEstimate, StepEstimator
from edgetune.caps.feasibility import ram_message
from edgetune.errors import EdgetuneError
from edgetune.schedule.base import StepPlan

_BISECT = 24


def masks(trained: np.ndarray, shrink_layers: bool) -> list[np.ndarray]:
    """The inner mask, then minus its lowest layers one by one, then the top layer alone."""
    if not shrink_layers:
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


def micro_batches(m: int) -> list[int]:
    out = [m]
    while out[-1] > 1:
        out.append(math.ceil(out[-1] / 2))
    return out


def scaled(keep: np.ndarray, floor: int, s: float) -> np.ndarray:
    """keep_l(s) = min(keep_l, max(f, ⌈s·keep_l⌉)): non-increasing when keep is."""
    return np.minimum(keep, np.maximum(floor, np.ceil(s * keep - 1e-9).astype(np.int64)))


def describe(base: StepPlan, keep, mask, mb, s) -> tuple:
    out = []
    if s < 1.0 and not np.array_equal(keep, base.keep):
        out.append(f"keep x{s:.2f}")
    k0, k1 = int(base.trained.sum()), int(mask.sum())
    if not np.array_equal(mask, base.trained):
        out.append(f"trained {k0}->{k1} layers")
    if mb != base.micro_batch:
        out.append(f"micro-batch {base.micro_batch}->{mb}")
    return tuple(out)


def fit_plan(model: StepEstimator, base: StepPlan, n_tokens: int, batch_size: int,
             allowance: float, steps_done: int) -> StepEstimate:
    """The preferred plan that fits, or the cheapest that fits RAM; ``steps_done`` for the error."""
    inner_keep = np.minimum(np.asarray(base.keep, np.int64), n_tokens)
    trained = np.asarray(base.trained, bool)
    floor = model.floor_tokens(n_tokens)
    ram_only: StepEstimate | None = None
    for mb in micro_batches(max(1, min(int(base.micro_batch), batch_size))):
        for mask in masks(trained, model.settings.shrink_layers):
            def at(s: float, mask: np.ndarray = mask, mb: int = mb) -> StepEstimate:
                keep = scaled(inner_keep, floor, s)
                return model.estimate(keep, mask, mb, n_tokens, batch_size, allowance,
                                      describe(base, keep, mask, mb, s))

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
    least = model.smallest(n_tokens, batch_size)
    cap = model.ram_limit / (1.0 - model.settings.safety)
    if model.fits_arena(least.memory) and least.memory.total <= cap:
        # inside the cap, not inside the margin: run it rather than stop a run that fits
        return replace(least, changes=describe(base, least.plan.keep, least.plan.trained,
                                               1, 0.0) + ("inside the safety margin",))
    raise EdgetuneError(ram_message(model, least, steps_done, during=True))
