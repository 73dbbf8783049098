"""The ALaST scheduler (Devoto et al. 2024, arXiv 2408.08670): class tokens in, a plan out.

Per step i, from the class tokens of step i's forward pass:

    Δ^i   = class-token importance            (importance.py)
    b     ← rule(b, Δ^i, ‖CLS‖²)               (budgets.py: "relative" or the paper's)
    keep  = non-increasing ⌈b·N⌉               (tokens.py)
    train = K layers by budget                 (freezing.py)

and the resulting :class:`AlastPlan` is the one step i+1 runs with (planner.py turns it into
the step's :class:`~edgetune.schedule.base.StepPlan`). The state (budgets, the rule's state,
the RNG, the plan in force) is a JSON-ready dict, so a resumed run makes the same decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetune.config import to_dict
from edgetune.errors import UsageError
from edgetune.schedule.alast.budgets import BUDGET_RULES, initial_budgets
from edgetune.schedule.alast.config import AlastConfig
from edgetune.schedule.alast.freezing import lowest_trained, select_trained
from edgetune.schedule.alast.importance import class_token_importance, class_token_norms
from edgetune.schedule.alast.tokens import keep_counts

STATE_VERSION = 2


@dataclass(frozen=True, eq=False)
class AlastPlan:
    """What ALaST decides for one training step.

    ``keep[l]``: tokens leaving layer l (class token included); ``trained[l]``: layer l updates
    its weights (frozen layers still pass the gradient down, unless below ``lowest_trained``).
    """

    step: int
    budgets: np.ndarray
    keep: np.ndarray
    trained: np.ndarray
    lowest_trained: int
    importance: np.ndarray | None = None

    @property
    def trained_layers(self) -> list[int]:
        """Indices of the layers trained this step, lowest first."""
        return np.flatnonzero(self.trained).tolist()

    def keep_for(self, n_tokens: int) -> np.ndarray:
        """Keep counts for a batch of another length (BERT batches padded per batch, say)."""
        return keep_counts(self.budgets, n_tokens)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (metrics logs)."""
        return {
            "step": self.step,
            "budgets": self.budgets.tolist(),
            "keep": self.keep.tolist(),
            "trained": self.trained.tolist(),
            "lowest_trained": self.lowest_trained,
            "importance": None if self.importance is None else self.importance.tolist(),
        }


class AlastScheduler:
    """Stateful ALaST schedule for an encoder of ``n_layers`` layers and ``n_tokens`` tokens.

    ``plan`` is in force from construction (all budgets 1: every token kept); call
    :meth:`step` after each forward pass with its class tokens, shape (L+1, B, D).
    """

    def __init__(self, config: AlastConfig, n_layers: int, n_tokens: int):
        if not isinstance(config, AlastConfig):
            raise TypeError(f"config must be an AlastConfig, not {type(config).__name__}")
        for field, value in (("n_layers", n_layers), ("n_tokens", n_tokens)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UsageError(f"AlastScheduler.{field}={value!r}: must be an integer >= 1")
        self.config = config
        self.n_layers = int(n_layers)
        self.n_tokens = int(n_tokens)
        self.k = config.trained_layers(self.n_layers)
        self.rng = np.random.default_rng(config.seed)
        self.budgets = initial_budgets(self.n_layers)
        self.rule = BUDGET_RULES.get(config.rule)(config)
        self.importance: np.ndarray | None = None
        self.steps = 0
        self.plan = self._make_plan(None)

    def step(self, cls_tokens: np.ndarray) -> AlastPlan:
        """Update budgets from this step's class tokens; return (and keep) the next plan."""
        cls = np.asarray(cls_tokens)
        if cls.ndim < 1 or cls.shape[0] != self.n_layers + 1:
            raise UsageError(
                f"cls_tokens shape {cls.shape}: first axis must be n_layers+1={self.n_layers + 1} "
                "(the class token before the first layer and after each layer)")
        return self.step_importance(class_token_importance(cls), class_token_norms(cls))

    def step_importance(self, importance: np.ndarray,
                        cls_norm: np.ndarray | None = None) -> AlastPlan:
        """As :meth:`step`, from Δ (L,) already reduced (the runtime's ``cls_delta``) and the
        incoming class tokens' ‖CLS_{l−1}‖² (``cls_norm``; the ``"relative"`` rule needs it)."""
        delta = np.asarray(importance, dtype=np.float64)
        if delta.shape != (self.n_layers,) or not np.all(np.isfinite(delta)) or np.any(delta < 0):
            raise UsageError(
                f"importance {np.asarray(importance).tolist()}: must be {self.n_layers} finite "
                "numbers >= 0, one per layer")
        base = None if cls_norm is None else np.asarray(cls_norm, dtype=np.float64)
        if base is not None and base.shape != delta.shape:
            raise UsageError(f"cls_norm shape {base.shape}: must be ({self.n_layers},)")
        self.budgets = self.rule.update(self.budgets, delta, base)
        self.importance = delta.copy()
        self.steps += 1
        self.plan = self._make_plan(delta)
        return self.plan

    def _make_plan(self, importance: np.ndarray | None) -> AlastPlan:
        trained = select_trained(self.budgets, self.k, self.config.selection, self.rng)
        return self._plan_from(trained, importance)

    def _plan_from(self, trained: np.ndarray, importance: np.ndarray | None) -> AlastPlan:
        return AlastPlan(
            step=self.steps,
            budgets=self.budgets.copy(),
            keep=keep_counts(self.budgets, self.n_tokens),
            trained=trained,
            lowest_trained=lowest_trained(trained),
            importance=None if importance is None else importance.copy(),
        )

    # ---- checkpointing: plain JSON-ready data, no pickle ------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "config": to_dict(self.config),
            "n_layers": self.n_layers,
            "n_tokens": self.n_tokens,
            "steps": self.steps,
            "budgets": self.budgets.tolist(),
            "importance": None if self.importance is None else self.importance.tolist(),
            "rule": self.rule.state_dict(),
            "trained": self.plan.trained.tolist(),
            "rng": _rng_state(self.rng),
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore :meth:`state_dict` output; ``strict`` also requires the same config."""
        if state.get("version") != STATE_VERSION:
            raise UsageError(
                f"scheduler state version={state.get('version')!r}: must be {STATE_VERSION}")
        if state["n_layers"] != self.n_layers:
            raise UsageError(
                f"scheduler state n_layers={state['n_layers']}: this model has {self.n_layers}")
        if strict:
            mine = to_dict(self.config)
            for key, value in state["config"].items():
                if mine.get(key) != value:
                    raise UsageError(
                        f"scheduler state AlastConfig.{key}={value!r}: this run has "
                        f"{mine.get(key)!r} (pass strict=False to resume with the new value)")
        budgets = np.asarray(state["budgets"], dtype=np.float64)
        trained = np.asarray(state["trained"], dtype=bool)
        if budgets.shape != (self.n_layers,) or trained.shape != (self.n_layers,):
            raise UsageError(f"scheduler state: budgets/trained must have {self.n_layers} entries")
        self.budgets = budgets
        imp = state["importance"]
        self.importance = None if imp is None else np.asarray(imp, dtype=np.float64)
        self.rule.load_state_dict(state["rule"])
        self.steps = int(state["steps"])
        self.rng = _rng_from_state(state["rng"])
        self.plan = self._plan_from(trained, self.importance)


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The bit generator's state with big integers as decimal strings (JSON-safe anywhere)."""
    return _map_ints(rng.bit_generator.state, str)


def _rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    name = state.get("bit_generator")
    bit_gen = getattr(np.random, str(name), None)
    if not (isinstance(bit_gen, type) and issubclass(bit_gen, np.random.BitGenerator)):
        raise UsageError(f"scheduler state rng bit_generator={name!r}: not a numpy bit generator")
    bg = bit_gen()
    bg.state = _map_ints(dict(state), int)
    return np.random.Generator(bg)


def _map_ints(obj: Any, fn: Any) -> Any:
    if isinstance(obj, dict):
        return {k: (v if k == "bit_generator" else _map_ints(v, fn)) for k, v in obj.items()}
    if isinstance(obj, (int, np.integer, str)) and not isinstance(obj, bool):
        return fn(obj)
    return obj
