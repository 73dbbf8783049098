"""What one training step runs, and the protocol every planner follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class StepPlan:
    keep: np.ndarray      # (L,) int64, tokens leaving each layer (class token included)
    trained: np.ndarray   # (L,) bool, layers whose weights update
    micro_batch: int      # samples per forward/backward; the step accumulates gradients

    def to_dict(self) -> dict[str, Any]:
        return {"keep": self.keep.tolist(), "trained": np.flatnonzero(self.trained).tolist(),
                "micro_batch": self.micro_batch}


class Planner(Protocol):
    def plan(self, n_tokens: int, batch_size: int) -> StepPlan: ...

    @property
    def budgets(self) -> np.ndarray | None:
        """(L,) the ALaST budgets in force (keep ratio per layer), or None without them."""

    def observe(self, cls_delta: np.ndarray, cls_norm: np.ndarray | None = None) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
