"""AdamW's hyperparameters (Loshchilov & Hutter 2019, arXiv 1711.05101), shared by the numpy
update (edgetune/train/optim.py) and the accelerator's (edgetune/runtime/device_optim.py)."""

from __future__ import annotations

from dataclasses import dataclass

from edgetune.config import check_float


@dataclass
class AdamWConfig:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6           # ONNX Runtime's AdamW default, so both engines agree
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_float(self, "lr", lo=0.0, lo_open=True)
        check_float(self, "beta1", lo=0.0, hi=1.0, hi_open=True)
        check_float(self, "beta2", lo=0.0, hi=1.0, hi_open=True)
        check_float(self, "eps", lo=0.0, lo_open=True)
        check_float(self, "weight_decay", lo=0.0)
