"""ALaST (Devoto et al. 2024, arXiv 2408.08670), pure numpy.

Each step the scheduler turns the class tokens of the forward pass into an :class:`AlastPlan`:
how many tokens each layer keeps and which layers train. :class:`AlastPlanner` runs it as a
planner (:mod:`edgetune.schedule`).
"""

from edgetune.schedule.alast.allocation import nonincreasing, waterfill
from edgetune.schedule.alast.budgets import (
    BUDGET_RULES,
    initial_budgets,
    relative_importance,
    relative_target,
    update_budgets,
)
from edgetune.schedule.alast.config import AlastConfig
from edgetune.schedule.alast.freezing import SELECTIONS, lowest_trained, select_trained
from edgetune.schedule.alast.importance import (
    class_token_delta,
    class_token_importance,
    class_token_norm,
    class_token_norms,
)
from edgetune.schedule.alast.planner import AlastPlanner
from edgetune.schedule.alast.scheduler import AlastPlan, AlastScheduler
from edgetune.schedule.alast.tokens import keep_counts

__all__ = [
    "BUDGET_RULES", "SELECTIONS", "AlastConfig", "AlastPlan", "AlastPlanner", "AlastScheduler",
    "class_token_delta", "class_token_importance", "class_token_norm", "class_token_norms",
    "initial_budgets", "keep_counts", "lowest_trained", "nonincreasing", "relative_importance",
    "relative_target", "select_trained", "update_budgets", "waterfill",
]
