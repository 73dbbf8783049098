"""Per-layer compute budgets (ALaST, arXiv 2408.08670): one registry of budget rules.

A budget b_l ∈ [b_min, 1] is the share of the tokens layer l is trained on (tokens.py), and
its weight when the layers to train are drawn. All budgets start at 1. Each step a rule moves
them from that step's class-token importance:

- ``"paper"``: the paper's update on the raw class-token change Δ_l = ‖CLS_l − CLS_{l−1}‖²,
      b_l ← clip(b_l + α·(Δ_l^i − Δ_l^{i−1}), b_min, 1).
  It only moves a budget when Δ changes between steps, by an amount in Δ's own units.
- ``"relative"`` (default): importance made scale-free, r_l = Δ_l / ‖CLS_{l−1}‖² (the relative
  magnitude of a layer's update to the class token), then a target that spends a mean budget
  β where r is largest: layer 0 takes in every token (b*_0 = 1), and the other layers share
  the rest, b*_{1:} = nonincreasing(waterfill(r_{1:}, mean=(β·L − 1)/(L − 1), [b_min, 1]));
  the budgets move towards it at rate α: b ← b + α·(b* − b).

Why ``"relative"``: on MiniLM-L6 the raw Δ of the six layers differ by 40× in level and their
step-to-step changes by ~1000×, so no single α moves every layer, and Δ barely changes while a
frozen backbone is tuned (see bench/alast.py); the relative magnitudes are stable and rank the
layers (first and last high, middle low), as in the paper's motivation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from edgetune.errors import UsageError
from edgetune.registry import Registry
from edgetune.schedule.alast.allocation import nonincreasing, waterfill


def initial_budgets(n_layers: int) -> np.ndarray:
    """All budgets start at 1: the first step keeps every token."""
    if n_layers < 1:
        raise UsageError(f"n_layers={n_layers}: must be an integer >= 1")
    return np.ones(n_layers, dtype=np.float64)


def update_budgets(
    budgets: np.ndarray, importance: np.ndarray, previous: np.ndarray | None,
    alpha: float, b_min: float,
) -> np.ndarray:
    """The paper's step, b ← clip(b + α·(Δ^i − Δ^{i−1}), b_min, 1); no ``previous``: no move."""
    b = np.asarray(budgets, dtype=np.float64)
    imp = np.asarray(importance, dtype=np.float64)
    if imp.shape != b.shape:
        raise UsageError(f"importance shape {imp.shape}: must match the budgets' {b.shape}")
    if previous is None:
        return np.clip(b, b_min, 1.0)
    prev = np.asarray(previous, dtype=np.float64)
    if prev.shape != b.shape:
        raise UsageError(f"previous importance shape {prev.shape}: must match {b.shape}")
    return np.clip(b + alpha * (imp - prev), b_min, 1.0)


def relative_importance(delta: np.ndarray, base: np.ndarray) -> np.ndarray:
    """r_l = Δ_l / ‖CLS_{l−1}‖² (0 where the incoming class token is 0)."""
    d = np.asarray(delta, dtype=np.float64)
    n = np.asarray(base, dtype=np.float64)
    if n.shape != d.shape or not np.all(np.isfinite(n)) or np.any(n < 0):
        raise UsageError(f"class-token norms {n.tolist()}: must be {d.size} finite numbers >= 0")
    return np.divide(d, n, out=np.zeros_like(d), where=n > 0)


def relative_target(delta: np.ndarray, base: np.ndarray, token_budget: float, b_min: float) -> np.ndarray:
    """b*_0 = 1 (layer 0 takes in every token), and for l ≥ 1
    b*_{1:} = nonincreasing(waterfill(r_{1:}, mean=(β·L − 1)/(L − 1), [b_min, 1])),
    so that mean(b*) = β where the bounds allow; r is the relative importance."""
    r = relative_importance(delta, base)
    target = np.ones(r.size)
    if r.size > 1:
        rest = (token_budget * r.size - 1.0) / (r.size - 1)
        target[1:] = nonincreasing(waterfill(r[1:], rest, b_min, 1.0))
    return target


class RuleSettings(Protocol):
    """What a rule is built from: the fields it reads of
    :class:`~edgetune.schedule.alast.config.AlastConfig`. config.py imports this module for the
    rule names; naming the fields rather than the class keeps that import one-way."""

    alpha: float
    b_min: float
    token_budget: float


class BudgetRule(Protocol):
    """Moves the budgets one step; its state is JSON-ready (resume). A rule is built from the
    :class:`RuleSettings` (an ``AlastConfig``) and reads the fields it needs."""

    def update(self, budgets: np.ndarray, delta: np.ndarray, base: np.ndarray | None) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


BUDGET_RULES: Registry[type] = Registry("budget rule")


@BUDGET_RULES.register("paper")
class PaperRule:
    """b ← clip(b + α·(Δ^i − Δ^{i−1}), b_min, 1) on the raw Δ (arXiv 2408.08670, eq. 6)."""

    def __init__(self, config: RuleSettings):
        self.alpha, self.b_min = config.alpha, config.b_min
        self.previous: np.ndarray | None = None

    def update(self, budgets, delta, base=None):
        new = update_budgets(budgets, delta, self.previous, self.alpha, self.b_min)
        self.previous = np.asarray(delta, dtype=np.float64).copy()
        return new

    def state_dict(self):
        return {"previous": None if self.previous is None else self.previous.tolist()}

    def load_state_dict(self, state):
        prev = state.get("previous")
        self.previous = None if prev is None else np.asarray(prev, dtype=np.float64)


@BUDGET_RULES.register("relative")
class RelativeRule:
    """b ← b + α·(b* − b), b* = relative_target(...) (mean β, layer 0 at 1), r = Δ/‖CLS‖²."""

    def __init__(self, config: RuleSettings):
        self.alpha, self.b_min, self.token_budget = config.alpha, config.b_min, config.token_budget

    def update(self, budgets, delta, base=None):
        if base is None:
            raise UsageError("budget rule 'relative' needs the class-token norms ‖CLS_{l−1}‖² "
                             "(pass cls_norm, or use the class tokens)")
        b = np.asarray(budgets, dtype=np.float64)
        target = relative_target(delta, base, self.token_budget, self.b_min)
        return np.clip(b + self.alpha * (target - b), self.b_min, 1.0)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass
