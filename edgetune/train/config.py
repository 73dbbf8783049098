"""The training run's settings, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgetune.config import check_choice, check_float, check_int
from edgetune.errors import UsageError
from edgetune.schedule import AlastConfig

SCHEDULES = ("static", "alast")


@dataclass
class TrainConfig:
    steps: int = 0              # optimizer steps; 0: from ``epochs``
    epochs: float = 0.0         # passes over the training data; used when ``steps`` is 0
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 0             # linear warm-up steps, then cosine decay
    weight_decay: float = 0.0   # AdamW's decoupled decay (adaptive mode only)
    schedule: str = "static"    # static: every layer, every token; alast: adaptive
    mode: str = ""              # bundle mode; "" picks adaptive for alast, static otherwise
    seed: int = 0
    threads: int = 0            # ONNX Runtime intra-op threads; 0: its default
    checkpoint_every: int = 0   # steps between "last" checkpoints; 0: only at the end
    eval_every: int = 0         # steps between validations (with --val); 0: once per epoch
    alast: AlastConfig = field(default_factory=AlastConfig)

    def __post_init__(self) -> None:
        check_int(self, "steps", lo=0)
        check_float(self, "epochs", lo=0.0)
        if (self.steps > 0) == (self.epochs > 0):
            raise UsageError(f"TrainConfig: give exactly one of steps (got {self.steps}) "
                             f"and epochs (got {self.epochs})")
        check_int(self, "batch_size", lo=1)
        check_float(self, "lr", lo=0.0, lo_open=True)
        check_int(self, "warmup", lo=0)
        check_float(self, "weight_decay", lo=0.0)
        check_choice(self, "schedule", SCHEDULES)
        check_choice(self, "mode", ("", "static", "adaptive"))
        if self.schedule == "alast" and self.mode == "static":
            raise UsageError("TrainConfig.mode='static': ALaST needs the adaptive mode's per-layer graphs")
        if self.weight_decay and self.engine_mode == "static":
            raise UsageError(f"TrainConfig.weight_decay={self.weight_decay}: static mode runs ORT's "
                             "AdamW graph, exported with weight decay 0; use mode='adaptive'")
        check_int(self, "seed", lo=0)
        check_int(self, "threads", lo=0)
        check_int(self, "checkpoint_every", lo=0)
        check_int(self, "eval_every", lo=0)

    @property
    def engine_mode(self) -> str:
        return self.mode or ("adaptive" if self.schedule == "alast" else "static")

    def total_steps(self, batches_per_epoch: int) -> int:
        return self.steps or max(1, round(self.epochs * batches_per_epoch))

