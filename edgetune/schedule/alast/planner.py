"""Planners decide what each step runs: tokens kept per layer, layers trained, micro-batch.

``StaticPlanner`` keeps everything and trains every layer. ``AlastPlanner`` follows the ALaST
schedule (arXiv 2408.08670), fed with each step's class-token importance. The RAM/energy cap
solver wraps a planner and shrinks its plans (issue [4/6]).
"""

from __future__ import annotations

import numpy as np

from edgetune.schedule.alast import AlastScheduler
from edgetune.schedule.config import AlastConfig
from edgetune.schedule.plan import Planner, StepPlan  # noqa: F401  (re-exported)


class StaticPlanner:
    def __init__(self, num_layers: int):
        self.num_layers = num_layers

    def plan(self, n_tokens: int, batch_size: int) -> StepPlan:
        L = self.num_layers
        return StepPlan(np.full(L, n_tokens, np.int64), np.ones(L, bool), batch_size)

    def observe(self, cls_delta: np.ndarray, cls_norm: np.ndarray | None = None) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class AlastPlanner:
    """Budgets → keep counts for this batch's token count; K layers trained (sampled)."""

    def __init__(self, num_layers: int, n_tokens: int, config: AlastConfig | None = None):
        self.scheduler = AlastScheduler(config or AlastConfig(), num_layers, n_tokens)

    def plan(self, n_tokens: int, batch_size: int) -> StepPlan:
        p = self.scheduler.plan
        keep = np.maximum(p.keep_for(n_tokens), min(2, n_tokens)).astype(np.int64)
        return StepPlan(keep, p.trained.copy(), batch_size)

    @property
    def budgets(self) -> np.ndarray:
        """(L,) the ALaST budgets of the plan in force (keep ratio per layer, before flooring)."""
        return self.scheduler.plan.budgets.copy()

    def observe(self, cls_delta: np.ndarray, cls_norm: np.ndarray | None = None) -> None:
        self.scheduler.step_importance(np.maximum(np.asarray(cls_delta, np.float64), 0.0), cls_norm)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)
