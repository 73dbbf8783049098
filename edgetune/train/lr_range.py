"""``--lr auto``: a learning-rate range test before training (Smith 2017, "Cyclical Learning Rates
for Training Neural Networks", arXiv 1506.01186, §3.3), on the run's own data and under its caps.

From the run's initial parameters, ``steps`` optimizer steps at learning rates growing
geometrically from ``lo`` to ``hi``,

    lr_i = lo · (hi / lo)^(i / (steps − 1)),

record each step's training loss, smoothed by an exponential moving average (bias-corrected,
weight ``beta``); the test stops early once the smoothed loss passes ``diverge`` × its minimum
(or is not finite). The pick is the rate where the smoothed loss bottoms out, divided by
``divisor`` (10: the rule Smith's test is commonly read with, one decade below the minimum,
where the loss still falls fastest without diverging). The parameters and AdamW's state are then
restored, so training starts from the same point at the picked rate with its warm-up and
cosine schedule. The probes are real steps: they count against the energy cap and run under the
RAM cap's plan.

The range test alone is a coarse bracket: it takes one step per rate, so a method whose loss
stays flat until the rate is large enough to learn the class prior (LoRA on a balanced binary
task) puts its minimum on the edge of divergence, and minimum / 10 still diverges over a whole
run; and a method that learns through a few scales (IA3 on ViT) wants more than minimum / 10.
So short **trials** follow (``Trials``), a bracket search on the grid

    lr_k = pick · ratio^k,   |k| ≤ reach   (ratio √10, reach 2: from pick / 10 up to the
                                            smoothed minimum itself),

first at k = 1, 0, −1, then one more half-decade past the winner while it sits on the edge of
what was tried (3 to 5 trials). Each trial runs, from the same starting point, the run's first
``steps`` steps (its warm-up and schedule) and is scored by its loss on held-out data (the run's
validation data, at most ``max_examples`` of it; without any, the mean training loss of the
trial's last quarter of steps, taken before each batch is stepped on, so on batches that trial
had not seen). The lowest loss wins; losses within ``tie`` (relative) of it count as tied and the
lower rate wins a tie. Trials must outlast the early lead of a rate too high to hold: LoRA on
Rotten Tomatoes at 2.9e-3 is ahead of 9.2e-4 after 50 steps (held-out loss 0.616 vs 0.659) and
back at ln 2 by step 100, while 9.2e-4 goes on down (docs/methods.md); so 100 steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetune.config import check_float, check_int
from edgetune.errors import UsageError


@dataclass
class RangeTest:
    lo: float = 1e-6
    hi: float = 1.0
    steps: int = 40
    beta: float = 0.8       # EMA weight of the past smoothed loss
    diverge: float = 4.0    # stop once the smoothed loss passes diverge × its minimum
    divisor: float = 10.0   # pick = the rate at the smoothed minimum / divisor

    def __post_init__(self) -> None:
        check_float(self, "lo", lo=0.0, lo_open=True)
        check_float(self, "hi", lo=0.0, lo_open=True)
        if not self.hi > self.lo:
            raise UsageError(f"RangeTest.hi={self.hi}: must be above lo={self.lo}")
        check_int(self, "steps", lo=5)
        check_float(self, "beta", lo=0.0, hi=1.0, hi_open=True)
        check_float(self, "diverge", lo=1.0, lo_open=True)
        check_float(self, "divisor", lo=1.0)

    def rates(self) -> np.ndarray:
        """lr_i for i = 0 … steps − 1."""
        return self.lo * (self.hi / self.lo) ** (np.arange(self.steps) / (self.steps - 1))


def smooth(losses: list[float], beta: float) -> list[float]:
    """Bias-corrected EMA: s_i = (β·a_{i−1} + (1−β)·x_i) / (1 − β^{i+1})."""
    out, avg = [], 0.0
    for i, x in enumerate(losses):
        avg = beta * avg + (1 - beta) * x
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def run_range_test(test: RangeTest, step: Callable[[float], float]) -> dict[str, Any]:
    """Run ``step(lr) -> loss`` at each rate until the end or divergence; returns what
    run.json records: ``{"lr", "rule", "rates", "losses", "smoothed", "stopped"}``."""
    rates, losses, smoothed = [], [], []
    stopped = None
    for lr in test.rates():
        loss = float(step(float(lr)))
        rates.append(float(lr))
        losses.append(loss)
        if not math.isfinite(loss):
            stopped = f"loss {loss} at lr {lr:.3g}"
            break
        smoothed = smooth(losses, test.beta)
        if len(smoothed) > 1 and smoothed[-1] > test.diverge * min(smoothed):
            stopped = f"smoothed loss above {test.diverge:g}x its minimum at lr {lr:.3g}"
            break
    finite = [(s, r) for s, r in zip(smoothed, rates) if math.isfinite(s)]
    if not finite:
        raise UsageError(f"--lr auto: the range test's first step already diverged ({stopped}); "
                         f"give --lr")
    best, at = min(finite)
    lr = max(test.lo, at / test.divisor)
    return {"lr": lr, "rule": f"smoothed loss lowest ({best:.4g}) at lr {at:.3g}, / {test.divisor:g}",
            "rates": rates, "losses": losses, "smoothed": smoothed, "stopped": stopped}


@dataclass
class Trials:
    steps: int = 100             # each trial: the run's first steps (never more than it has)
    ratio: float = 10 ** 0.5     # between neighbouring trial rates (a half-decade)
    reach: int = 2               # trials go at most this many ratios above or below the pick
    tie: float = 0.01            # losses within this fraction of the lowest are tied
    max_examples: int = 512      # held-out examples each trial is scored on

    def __post_init__(self) -> None:
        check_int(self, "steps", lo=1)
        check_float(self, "ratio", lo=1.0, lo_open=True)
        check_int(self, "reach", lo=0)
        check_float(self, "tie", lo=0.0)
        check_int(self, "max_examples", lo=1)

    def first(self) -> list[int]:
        """The grid steps tried first, highest rate first: 1, 0, −1 (within the reach)."""
        return [k for k in (1, 0, -1) if abs(k) <= self.reach]


def run_trials(trials: Trials, pick: float, trial: Callable[[float], float]) -> dict[str, Any]:
    """``trial(lr) -> held-out loss`` at ``pick × ratio^k``: k = 1, 0, −1, then k + 1 past a winner
    on the top of the tried range (or k − 1 past one on the bottom) while |k| ≤ reach. The winner
    is the lowest finite loss, the lowest rate among those within ``tie`` of it; while no trial is
    finite, the lowest rate tried (so the search walks down). Returns ``{"lr", "rates", "losses"}``
    (highest rate first); where every trial diverged, the lowest rate with ``"diverged": True``."""
    tried: dict[int, float] = {}

    def rate(k: int) -> float:
        return pick * trials.ratio ** k

    def winner() -> int:
        finite = {k: loss for k, loss in tried.items() if math.isfinite(loss)}
        if not finite:
            return min(tried)
        best = min(finite.values())
        return min(k for k, loss in finite.items() if loss <= best + trials.tie * abs(best))

    for k in trials.first():
        tried[k] = float(trial(rate(k)))
    while True:  # with nothing finite the winner is the lowest tried, so only the walk down runs
        w = winner()
        if w == max(tried) and w < trials.reach:
            k = w + 1
        elif w == min(tried) and w > -trials.reach:
            k = w - 1
        else:
            break
        tried[k] = float(trial(rate(k)))
    ks = sorted(tried, reverse=True)
    out = {"lr": rate(winner()), "rates": [rate(k) for k in ks], "losses": [tried[k] for k in ks]}
    if not any(math.isfinite(v) for v in tried.values()):
        out["diverged"] = True
    return out
