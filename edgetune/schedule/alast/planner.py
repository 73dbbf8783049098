"""``AlastPlanner``: the ALaST schedule (arXiv 2408.08670) as a planner
(:class:`~edgetune.schedule.base.Planner`), fed with each step's class-token importance.
"""

from __future__ import annotations

import numpy as np

from edgetune.schedule.alast.config import AlastConfig
from edgetune.schedule.alast.scheduler import AlastScheduler
from edgetune.schedule.base import StepPlan


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
