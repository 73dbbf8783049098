"""AdamW on the device: the bundle's elementwise ``adamw`` graph run per parameter, so weights,
gradients and moments never leave the accelerator (the update is :class:`~edgetune.train.optim.AdamW`'s,
to the rounding of one fused kernel against numpy's passes)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edgetune.errors import EdgetuneError
from edgetune.optim_config import AdamWConfig
from edgetune.runtime.placement import HostView


class DeviceAdamW:
    """``params`` (name → device OrtValue) are replaced by their updated values each step."""

    def __init__(self, params: dict, names, cfg: AdamWConfig, sessions, files: Mapping[str, str],
                 placement):
        missing = {"adamw", "accumulate"} - set(files)
        if missing:
            raise EdgetuneError("this bundle has no optimizer graphs for a device-resident run "
                                "(exported before they existed): re-export it")
        self.params, self.cfg, self.sessions, self.placement = params, cfg, sessions, placement
        self.files = dict(files)
        self.names = list(names)
        self.m = {n: placement.upload(np.zeros(params[n].shape(), np.float32)) for n in self.names}
        self.v = {n: placement.upload(np.zeros(params[n].shape(), np.float32)) for n in self.names}
        self.t = {n: 0 for n in self.names}
        c = cfg
        self._consts = {k: np.asarray(x, np.float32) for k, x in (
            ("beta1", c.beta1), ("one_minus_beta1", 1 - c.beta1), ("beta2", c.beta2),
            ("one_minus_beta2", 1 - c.beta2), ("eps", c.eps))}

    def _run(self, graph: str, outputs: list[str], feeds: dict) -> list:
        session = self.sessions.get(self.files[graph])
        return self.placement.run(session, outputs, feeds)

    def accumulate(self, acc, grad, weight: float):
        """acc + weight·grad on the device (``acc`` None: weight·grad)."""
        base = acc if acc is not None else np.zeros((), np.float32)
        return self._run("accumulate", ["acc_out"],
                         {"acc": base, "g": grad, "w": np.asarray(weight, np.float32)})[0]

    def step(self, grads: Mapping[str, object], lr: float) -> None:
        c = self.cfg
        for name, g in grads.items():
            self.t[name] += 1
            t = self.t[name]
            feeds = {"p": self.params[name], "g": g, "m": self.m[name], "v": self.v[name],
                     **self._consts,
                     "step": np.asarray(lr * math.sqrt(1 - c.beta2 ** t) / (1 - c.beta1 ** t),
                                        np.float32),
                     "decay": np.asarray(lr * c.weight_decay, np.float32)}
            p, m, v = self._run("adamw", ["p_out", "m_out", "v_out"], feeds)
            self.params[name], self.m[name], self.v[name] = p, m, v

    def state_arrays(self) -> dict:
        """:class:`~edgetune.train.optim.AdamW`'s checkpoint layout; moments as host views
        (copied a tensor at a time when written)."""
        out: dict[str, object] = {}
        for k in self.names:
            out[f"m/{k}"], out[f"v/{k}"] = HostView(self.m[k]), HostView(self.v[k])
            out[f"t/{k}"] = np.asarray(self.t[k], dtype=np.int64)
        return out

    def reset(self) -> None:
        """Moments and step counts back to zero, a tensor at a time."""
        for k in self.names:
            shape = self.m[k].shape()
            self.m[k] = self.placement.upload(np.zeros(shape, np.float32))
            self.v[k] = self.placement.upload(np.zeros(shape, np.float32))
            self.t[k] = 0

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        for k in self.names:
            self.m[k] = self.placement.upload(np.asarray(arrays[f"m/{k}"], np.float32))
            self.v[k] = self.placement.upload(np.asarray(arrays[f"v/{k}"], np.float32))
            self.t[k] = int(arrays[f"t/{k}"])
