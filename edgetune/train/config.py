"""The training run's settings, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgetune.config import check_choice, check_float, check_int
from edgetune.engine_caps import MODE_CAPS, check_request
from edgetune.errors import UsageError
from edgetune.runtime.ort_build import PROVIDERS
from edgetune.schedule import AlastConfig

SCHEDULES = ("static", "alast")
VAL_SPLIT = 0.1  # an ALaST run's held-out validation slice by default (train/inference_tokens.py)
MIN_HELD_OUT = 20  # a default split needs this many examples to hold out (a smaller run decides by rule)


@dataclass
class TrainConfig:
    steps: int = 0              # optimizer steps; 0: from ``epochs``
    epochs: float = 0.0         # passes over the training data; used when ``steps`` is 0
    batch_size: int = 16
    lr: float = 1e-3
    lr_auto: bool = False       # a range test picks lr before the first step (train/lr_range.py)
    warmup: int = 0             # linear warm-up steps, then cosine decay
    weight_decay: float = 0.0   # AdamW's decoupled decay (engines that can: adaptive)
    schedule: str = "static"    # static: every layer, every token; alast: adaptive
    mode: str = ""              # bundle mode; "": engine_caps.pick_mode picks it
    provider: str = ""          # cpu | cuda; "": the device profile's accelerator where offered
    seed: int = 0
    threads: int = 0            # ONNX Runtime intra-op threads; 0: its default
    checkpoint_every: int = 0   # steps between "last" checkpoints; 0: only at the end
    eval_every: int = 0         # steps between validations (with --val); 0: once per epoch
    patience: int = 0           # stop after this many validations without a better accuracy; 0: never
    pad_multiple: int = 1       # text batches padded to a multiple of this many tokens (data/padding.py)
    val_split: float | None = None  # without val data: hold out this fraction of the training
    #                             data to validate on (never trained on); None: VAL_SPLIT for an
    #                             ALaST run (its token choice needs one), else 0; 0: none
    alast: AlastConfig = field(default_factory=AlastConfig)

    def __post_init__(self) -> None:
        check_int(self, "steps", lo=0)
        check_float(self, "epochs", lo=0.0)
        if (self.steps > 0) == (self.epochs > 0):
            raise UsageError(f"TrainConfig: give exactly one of steps (got {self.steps}) "
                             f"and epochs (got {self.epochs})")
        check_int(self, "batch_size", lo=1)
        check_float(self, "lr", lo=0.0, lo_open=True)
        if not isinstance(self.lr_auto, bool):
            raise UsageError(f"TrainConfig.lr_auto={self.lr_auto!r}: must be True or False")
        check_int(self, "warmup", lo=0)
        check_float(self, "weight_decay", lo=0.0)
        check_choice(self, "schedule", SCHEDULES)
        check_choice(self, "mode", ("", *MODE_CAPS))
        check_choice(self, "provider", ("", *PROVIDERS))
        if self.mode:  # else checked once picked (Trainer)
            check_request(self.mode, self.schedule, self.weight_decay)
        check_int(self, "seed", lo=0)
        check_int(self, "threads", lo=0)
        check_int(self, "checkpoint_every", lo=0)
        check_int(self, "eval_every", lo=0)
        check_int(self, "patience", lo=0)
        check_int(self, "pad_multiple", lo=1)
        if self.pad_multiple > 1 and self.schedule == "alast":
            raise UsageError(f"TrainConfig.pad_multiple={self.pad_multiple}: ALaST keeps a share of "
                             f"each batch's tokens, which padding would change; use 1 with alast")
        if self.val_split is not None:
            check_float(self, "val_split", lo=0.0, hi=0.5, hi_open=False)

    def held_out(self, has_val: bool, lm: bool = False) -> float:
        """The fraction of the training data to validate on (0: none): ``val_split`` where
        given, else :data:`VAL_SPLIT` for an ALaST run without validation data whose model
        drops tokens (a language model keeps them all: no choice to make)."""
        if has_val:
            return 0.0
        if self.val_split is not None:
            return self.val_split
        return VAL_SPLIT if self.schedule == "alast" and not lm else 0.0

    def total_steps(self, batches_per_epoch: int) -> int:
        return self.steps or max(1, round(self.epochs * batches_per_epoch))

