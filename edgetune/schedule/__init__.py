"""What each training step runs, decided by a planner, pure numpy.

A :class:`Planner` proposes each step's :class:`StepPlan` (tokens kept per layer, layers
trained, micro-batch): :class:`StaticPlanner` keeps everything, :class:`AlastPlanner` follows
ALaST (:mod:`edgetune.schedule.alast`, arXiv 2408.08670). The RAM/energy/power caps wrap a
planner and shrink its plans (:mod:`edgetune.caps`).
"""

from edgetune.schedule.alast import AlastConfig, AlastPlanner
from edgetune.schedule.base import Planner, StepPlan
from edgetune.schedule.static import StaticPlanner

__all__ = ["AlastConfig", "AlastPlanner", "Planner", "StaticPlanner", "StepPlan"]
