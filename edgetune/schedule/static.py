"""``StaticPlanner``: every token kept, every layer trained, the whole batch at once."""

from __future__ import annotations

import numpy as np

from edgetune.schedule.base import StepPlan


class StaticPlanner:
    def __init__(self, num_layers: int):
        self.num_layers = num_layers

    def plan(self, n_tokens: int, batch_size: int) -> StepPlan:
        L = self.num_layers
        return StepPlan(np.full(L, n_tokens, np.int64), np.ones(L, bool), batch_size)

    @property
    def budgets(self) -> None:
        return None

    def observe(self, cls_delta: np.ndarray, cls_norm: np.ndarray | None = None) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
