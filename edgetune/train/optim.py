"""AdamW in numpy for the adaptive engine (Loshchilov & Hutter 2019, arXiv 1711.05101), and
the learning-rate schedule both engines share. The update is ONNX Runtime's (its ``adam_mode``
1, Hugging Face's AdamW), so static and adaptive runs follow the same trajectory:

    m ← β1 m + (1−β1) g,  v ← β2 v + (1−β2) g²,
    p ← p − lr·√(1−β2^t)/(1−β1^t) · m / (√v + ε),  then  p ← p − lr·λ·p

Each parameter keeps its own step count t: a layer frozen for a step is not updated and its
moments do not decay, as if that step had not happened for it.
"""

from __future__ import annotations

import math

import numpy as np

from edgetune.errors import EdgetuneError
from edgetune.optim_config import AdamWConfig


class AdamW:
    def __init__(self, params: dict[str, np.ndarray], cfg: AdamWConfig):
        self.cfg = cfg
        self.params = params  # updated in place
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = {k: 0 for k in params}

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """Update the parameters named in ``grads`` (the others sat this step out), in place and
        a chunk of ``CHUNK`` elements at a time through two scratch buffers, so a step needs
        no temporary the size of a parameter (an embedding table's would be tens of MB)."""
        c = self.cfg
        for name, g in grads.items():
            p, m, v = self.params[name], self.m[name], self.v[name]
            if not (p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
                raise EdgetuneError(f"parameter {name!r}: AdamW updates C-contiguous arrays in place")
            self.t[name] += 1
            t = self.t[name]
            step = lr * math.sqrt(1 - c.beta2 ** t) / (1 - c.beta1 ** t)
            fp, fm, fv = p.reshape(-1), m.reshape(-1), v.reshape(-1)
            fg = np.ascontiguousarray(g, dtype=np.float32).reshape(-1)
            for lo in range(0, fp.size, CHUNK):
                hi = lo + CHUNK
                _update(fp[lo:hi], fm[lo:hi], fv[lo:hi], fg[lo:hi], step, lr, c, self._scratch)

    @property
    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_buffers"):
            self._buffers = (np.empty(CHUNK, np.float32), np.empty(CHUNK, np.float32))
        return self._buffers

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for k in self.params:
            out[f"m/{k}"], out[f"v/{k}"] = self.m[k], self.v[k]
            out[f"t/{k}"] = np.asarray(self.t[k], dtype=np.int64)
        return out

    def reset(self) -> None:
        """Moments and step counts back to zero, in place (no second copy of the moments)."""
        for k in self.params:
            self.m[k].fill(0.0)
            self.v[k].fill(0.0)
            self.t[k] = 0

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for k in self.params:
            self.m[k][...] = arrays[f"m/{k}"]
            self.v[k][...] = arrays[f"v/{k}"]
            self.t[k] = int(arrays[f"t/{k}"])


CHUNK = 1 << 16  # elements per in-place pass (256 KiB of float32: in cache)


def _update(p: np.ndarray, m: np.ndarray, v: np.ndarray, g: np.ndarray, step: float, lr: float,
            c: AdamWConfig, scratch: tuple[np.ndarray, np.ndarray]) -> None:
    """One chunk of the update, the module docstring's formula in its order of operations."""
    a, b = (s[: p.size] for s in scratch)
    m *= c.beta1
    np.multiply(g, 1 - c.beta1, out=a)
    m += a
    v *= c.beta2
    np.square(g, out=a)
    a *= 1 - c.beta2
    v += a
    np.sqrt(v, out=a)
    a += c.eps
    np.multiply(m, step, out=b)
    b /= a
    p -= b
    if c.weight_decay:
        np.multiply(p, lr * c.weight_decay, out=a)
        p -= a


def learning_rate(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` (step from 0)."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
