"""``AlastPlanner``: the ALaST schedule (arXiv 2408.08670) as a planner
(:class:`~edgetune.schedule.base.Planner`), fed with each step's class-token importance.
"""

from __future__ import annotations

import math

import numpy as np

from edgetune.schedule.alast.config import AlastConfig
from edgetune.schedule.alast.scheduler import AlastScheduler
from edgetune.schedule.alast.tokens import step_keep
from edgetune.schedule.base import StepPlan


class AlastPlanner:
    """Budgets → keep counts for this batch's token count; K layers trained (sampled). With
    ``full_tail`` and ``total_steps``, the last ⌈full_tail·total_steps⌉ steps keep every token.

    ``drop_tokens=False`` (a language model): every layer keeps every token; the budgets still
    rank the layers and choose the K trained ones, and no token budgets reach inference."""

    def __init__(self, num_layers: int, n_tokens: int, config: AlastConfig | None = None,
                 total_steps: int | None = None, drop_tokens: bool = True):
        config = config or AlastConfig()
        self.drop_tokens = drop_tokens
        self.scheduler = AlastScheduler(config, num_layers, n_tokens)
        tail = math.ceil(config.full_tail * total_steps - 1e-9) if total_steps else 0
        self.full_from = None if tail <= 0 or total_steps is None else total_steps - tail

    def plan(self, n_tokens: int, batch_size: int) -> StepPlan:
        p = self.scheduler.plan
        if not self.drop_tokens or (self.full_from is not None and self.scheduler.steps >= self.full_from):
            keep = np.full(len(p.budgets), n_tokens, np.int64)
        else:
            keep = step_keep(p.budgets, n_tokens)
        return StepPlan(keep, p.trained.copy(), batch_size)

    @property
    def budgets(self) -> np.ndarray | None:
        """(L,) the ALaST budgets of the plan in force (keep ratio per layer, before flooring);
        None when no token is dropped."""
        return self.scheduler.plan.budgets.copy() if self.drop_tokens else None

    def observe(self, cls_delta: np.ndarray, cls_norm: np.ndarray | None = None) -> None:
        self.scheduler.step_importance(np.maximum(np.asarray(cls_delta, np.float64), 0.0), cls_norm)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)
