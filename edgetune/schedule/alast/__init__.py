"""Per-step schedules, pure numpy: ALaST (Devoto et al. 2024, arXiv 2408.08670).

Each step the scheduler turns the class tokens of the forward pass into a :class:`Plan`:
how many tokens each layer keeps and which layers train.
"""

from edgetune.schedule.alast import AlastScheduler, Plan
from edgetune.schedule.allocation import nonincreasing, waterfill
from edgetune.schedule.budgets import (
    BUDGET_RULES, initial_budgets, relative_importance, relative_target, update_budgets)
from edgetune.schedule.config import SELECTIONS, AlastConfig
from edgetune.schedule.freezing import lowest_trained, select_trained
from edgetune.schedule.importance import class_token_importance, class_token_norms
from edgetune.schedule.tokens import keep_counts

__all__ = [
    "BUDGET_RULES", "SELECTIONS", "AlastConfig", "AlastScheduler", "Plan", "class_token_importance",
    "class_token_norms", "initial_budgets", "keep_counts", "lowest_trained", "nonincreasing",
    "relative_importance", "relative_target", "select_trained", "update_budgets", "waterfill",
]
