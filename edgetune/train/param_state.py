"""The adaptive engine's trainable state, on the host or on a device (one interface, two homes).

:class:`HostState`: numpy parameters viewed by ORT, gradients summed in place in numpy, numpy
AdamW. :class:`DeviceState`: parameters, gradients and moments as ``OrtValue``s on the
placement's device, summed and updated by the bundle's ``accumulate`` and ``adamw`` graphs; only
checkpoints cross to the host. Both update as ``train/optim.py`` states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from edgetune.errors import EdgetuneError
from edgetune.optim_config import AdamWConfig
from edgetune.train.optim import AdamW


class TrainableState(Protocol):
    def accumulate(self, total: dict, grads: Mapping, weight: float) -> None:
        """``total[name] += weight · grads[name]`` for every name (first time: assignment)."""

    def step(self, grads: Mapping, lr: float) -> None: ...

    def arrays(self) -> dict[str, np.ndarray]:
        """The trainable parameters as host arrays (live views where they live on the host)."""

    def optimizer_arrays(self) -> dict[str, np.ndarray]: ...

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Every trainable parameter from ``params`` (shapes checked by the caller)."""

    def reset_optimizer(self) -> None:
        """The AdamW moments and step counts back to zero."""

    def load(self, params: Mapping[str, np.ndarray], optimizer: Mapping[str, np.ndarray]) -> None: ...


class HostState:
    def __init__(self, runner, names: list[str], cfg: AdamWConfig):
        self.runner, self.names = runner, names
        self.optimizer = AdamW({n: runner.params[n] for n in names}, cfg)

    def reset_optimizer(self) -> None:
        self.optimizer.reset()

    def accumulate(self, total, grads, weight) -> None:
        for name, g in grads.items():
            # in place: the step holds one numpy copy of each gradient, not three
            if name in total:
                total[name] += weight * g
            else:
                total[name] = g if weight == 1.0 else np.multiply(g, weight, out=g)

    def step(self, grads, lr) -> None:
        self.optimizer.step(grads, lr)

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: self.runner.params[n] for n in self.names}

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        return self.optimizer.state_arrays()

    def set_params(self, params) -> None:
        for n in self.names:
            if params[n] is not self.runner.params[n]:  # not already read into place
                self.runner.params[n][...] = params[n]  # in place: ORT's sessions view them

    def load(self, params, optimizer) -> None:
        self.set_params(params)
        self.optimizer.load_state_arrays(optimizer)


class DeviceState:
    def __init__(self, runner, names: list[str], cfg: AdamWConfig):
        from edgetune.runtime.device_optim import DeviceAdamW

        files = runner.index.get("optimizer", {})
        self.runner, self.names = runner, names
        self.optimizer = DeviceAdamW(runner.values, names, cfg, runner.sessions, files,
                                     runner.placement)

    def reset_optimizer(self) -> None:
        self.optimizer.reset()

    def accumulate(self, total, grads, weight) -> None:
        for name, g in grads.items():
            if name in total:
                total[name] = self.optimizer.accumulate(total[name], g, weight)
            else:
                total[name] = g if weight == 1.0 else self.optimizer.accumulate(None, g, weight)

    def step(self, grads, lr) -> None:
        self.optimizer.step(grads, lr)

    def arrays(self) -> dict:
        """Host views: a checkpoint write copies one tensor at a time."""
        from edgetune.runtime.placement import HostView

        return {n: HostView(self.runner.values[n]) for n in self.names}

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        return self.optimizer.state_arrays()

    def set_params(self, params) -> None:
        place = self.runner.placement
        for n in self.names:
            if tuple(params[n].shape) != tuple(self.runner.values[n].shape()):
                raise EdgetuneError(f"checkpoint tensor {n!r}: shape {params[n].shape}, the "
                                    f"bundle's is {self.runner.values[n].shape()}")
            self.runner.values[n] = place.upload(np.asarray(params[n], np.float32))

    def load(self, params, optimizer) -> None:
        self.set_params(params)
        self.optimizer.load_state_arrays(optimizer)


def trainable_state(runner, names: list[str], cfg: AdamWConfig) -> TrainableState:
    return DeviceState(runner, names, cfg) if runner.placement.resident else HostState(runner, names, cfg)
