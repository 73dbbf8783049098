"""Training on the device: engines, the loop, checkpoints, metrics."""

from edgetune.engine_caps import pick_mode
from edgetune.train.config import TrainConfig
from edgetune.train.inputs import data_spec, load_data
from edgetune.train.modes import open_engine
from edgetune.train.run_folder import RunFolder
from edgetune.train.trainer import Trainer, TrainResult

__all__ = ["RunFolder", "TrainConfig", "TrainResult", "Trainer", "data_spec", "load_data", "open_engine",
           "pick_mode"]
