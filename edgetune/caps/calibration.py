"""Calibrating the cost model on what the process measures.

Memory: peak RSS = base + M(plan) (cost_model.py), with ``base`` (Python, numpy, the ONNX Runtime
library and its sessions) unknown before the run. Before any step it is the prior

    base₀ = 96 MiB + 1.5·P + 0.5·O      (P = 4·params.total, O = AdamW's moments)

fitted on x86-64 Linux to the RSS after a warm-up gradient pass, minus P + O: vit-micro 78–87
MiB (P < 1 MiB); minilm-l6 LoRA 191 (adaptive) / 217 (static), full fine-tuning 253 / 311
MiB, where the prior says 226 and 313: on the safe side. The P term is the runtime's copies of
the weights (ORT's graphs and arena, the tokenizer's tables ride along), the O term AdamW's
temporaries. It is replaced by ``rss₀ − (P + O)`` once the RSS rss₀ is observed before the
first step (the trainer measures it after the engine is loaded and one warm-up gradient pass
has run, so the runtime's first-use allocations are in it; a measurement beats the prior, up
or down). ONNX Runtime's CPU arena and the allocator keep what they grew to, so RSS
behaves like a high-water mark of base + M: after steps with model bytes M_i and measured RSS
r_i (rss₀ counting as a step with M = P + O),

    base = max_i r_i − max_i M_i

which matches the largest step seen exactly and extrapolates bigger plans along the model.
A safety fraction of the cap (caps planner) absorbs what remains: fragmentation, growth.

Energy and time: measured / predicted ratios, ρ = Σ measured / Σ predicted (1 before any
measurement), applied to the FLOP model's predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetune.caps.units import MIB
from edgetune.errors import UsageError

BASE_PRIOR_FIXED = 96 * MIB
BASE_PRIOR_PARAMS = 1.5
BASE_PRIOR_OPTIMIZER = 0.5


def base_prior(param_bytes: float, optimizer_bytes: float = 0.0) -> float:
    """base₀ = 96 MiB + 1.5·P + 0.5·O (the module docstring says where the numbers come from)."""
    return (BASE_PRIOR_FIXED + BASE_PRIOR_PARAMS * float(param_bytes)
            + BASE_PRIOR_OPTIMIZER * float(optimizer_bytes))


class MemoryCalibration:
    """The base term of peak RSS, from a prior, then from measurements."""

    def __init__(self, prior: float):
        self.prior = float(prior)
        self.idle: tuple[float, float] | None = None  # (max rss, P + O) before any step
        self.peak_rss: float | None = None     # max r_i over steps
        self.max_model: float | None = None    # max M_i over steps

    @property
    def calibrated(self) -> bool:
        return self.peak_rss is not None

    @property
    def base(self) -> float:
        if self.peak_rss is not None and self.max_model is not None:
            return max(0.0, self.peak_rss - self.max_model)
        if self.idle is not None:
            return max(0.0, self.idle[0] - self.idle[1])
        return self.prior

    def observe_idle(self, rss_bytes: float, static_bytes: float) -> None:
        """RSS before the first step (parameters and optimizer state loaded): base from it."""
        rss = float(rss_bytes) if self.idle is None else max(self.idle[0], float(rss_bytes))
        self.idle = (rss, float(static_bytes))

    def observe_step(self, rss_bytes: float, model_bytes: float) -> None:
        """Peak (or after-step) RSS of a step whose model bytes were ``model_bytes``."""
        r, m = float(rss_bytes), float(model_bytes)
        if self.idle is not None:  # the reading before the first step joins the high-water mark
            r, m = max(r, self.idle[0]), max(m, self.idle[1])
        self.peak_rss = r if self.peak_rss is None else max(self.peak_rss, r)
        self.max_model = m if self.max_model is None else max(self.max_model, m)

    def state_dict(self) -> dict[str, Any]:
        # a resumed run is a new process: its RSS restarts; the fitted base becomes its prior
        return {"base": self.base, "calibrated": self.calibrated}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        base = _number(state, "base")
        if bool(state.get("calibrated")):
            self.prior = base
        self.idle = self.peak_rss = self.max_model = None


class RatioCalibration:
    """ρ = Σ measured / Σ predicted, 1 until something is measured."""

    def __init__(self) -> None:
        self.measured = 0.0
        self.predicted = 0.0

    @property
    def ratio(self) -> float:
        return self.measured / self.predicted if self.predicted > 0 and self.measured > 0 else 1.0

    def observe(self, measured: float, predicted: float) -> None:
        if measured < 0 or predicted < 0:
            raise UsageError(f"calibration: measured={measured!r}, predicted={predicted!r}: "
                             "must be >= 0")
        if predicted > 0:
            self.measured += float(measured)
            self.predicted += float(predicted)

    def state_dict(self) -> dict[str, float]:
        return {"measured": self.measured, "predicted": self.predicted}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.measured = _number(state, "measured")
        self.predicted = _number(state, "predicted")


def _number(state: Mapping[str, Any], key: str) -> float:
    v = state.get(key) if isinstance(state, Mapping) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise UsageError(f"cap planner state {key}={v!r}: must be a number >= 0")
    return float(v)
