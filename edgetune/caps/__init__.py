"""Resource caps of a training run (``--ram-cap``, ``--energy-cap``, ``--power-cap``), pure numpy.

:class:`Caps` (limits.py, units.py) says what a run may use; :class:`CapPlanner` (planner.py)
wraps any planner (:mod:`edgetune.schedule`) and shrinks its plans until the cost model's
predictions (cost_model.py, calibrated on what the run measures: calibration.py) fit. The dry
run of ``edgetune plan`` (:mod:`edgetune.caps.dry_run`: the first step's plan without training)
picks the engine the run would use, so it is imported from there, not from this package.
"""

from edgetune.caps.limits import Caps
from edgetune.caps.planner import CapPlanner, CapReached, CapSettings

__all__ = ["CapPlanner", "CapReached", "CapSettings", "Caps"]
