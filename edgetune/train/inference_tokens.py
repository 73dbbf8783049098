"""Which tokens inference keeps after an ALaST run: every token, or the budgets it trained with.

An ALaST run trains each layer on ⌈b_l·N⌉ of its input tokens (schedule/alast/tokens.py).
Evaluated on every token, a ViT run can lose points it keeps at its trained budgets (the model
learned to classify from the tokens that survive), while a text run can do the other way round.
So there is no blanket default: at each validation the run measures both,

    a_all     = accuracy with every token
    a_trained = accuracy with keep_l = step_keep(b, N)     (b: the budgets in force, the
                                                            counts a training step runs with)

and chooses ``trained`` where a_trained ≥ a_all (equal accuracy at fewer FLOPs), else ``all``.
The choice travels with each checkpoint (``state.json`` → ``"inference"``); ``eval`` and
``merge`` follow it unless told otherwise (``--tokens all|trained``). A run without validation
data holds out a slice of its training data to decide on (``--val-split``, default 0.1 for
an ALaST run, train/config.py); with none (``--val-split 0``) it follows the rule measured for
its input kind (:data:`MODALITY_RULE`: images keep the trained budgets, text every token).

Budgets are stored rounded to float32, the precision of the merged inference graph's
``token_budgets`` tensor, so the graph and :func:`keep_for` compute the same counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetune.errors import EdgetuneError, UsageError
from edgetune.schedule.alast.tokens import step_keep

ALL, TRAINED, RUN = "all", "trained", "run"
TOKENS = (ALL, TRAINED)             # what inference can keep
REQUESTS = (RUN, ALL, TRAINED)      # what a user can ask for: the run's choice, or either
STATE_KEY = "inference"             # a checkpoint's state.json entry


def fp32_budgets(budgets: Any) -> tuple[float, ...]:
    """``budgets`` rounded to float32 (and back to Python floats, exact in JSON)."""
    b = np.asarray(budgets, dtype=np.float64)
    if b.ndim != 1 or b.size < 1 or not np.all(np.isfinite(b)) or np.any(b < 0) or np.any(b > 1):
        raise UsageError(f"token budgets {np.asarray(budgets).tolist()}: must be (L,) values in [0, 1]")
    return tuple(float(x) for x in b.astype(np.float32))


@dataclass(frozen=True)
class TokenChoice:
    """The decision a checkpoint carries. ``budgets``: the ALaST budgets it was trained with
    (None: the run trained on every token); ``val_accuracy``: both measurements, when made."""

    tokens: str
    budgets: tuple[float, ...] | None = None
    val_accuracy: dict[str, float] | None = None
    reason: str = ""

    def __post_init__(self):
        if self.tokens not in TOKENS:
            raise UsageError(f"TokenChoice.tokens={self.tokens!r}: must be one of {', '.join(TOKENS)}")
        if self.tokens == TRAINED and self.budgets is None:
            raise UsageError("TokenChoice.tokens='trained' needs the budgets it was trained with")
        if self.budgets is not None:
            object.__setattr__(self, "budgets", fp32_budgets(self.budgets))

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "budgets": None if self.budgets is None else list(self.budgets),
                "val_accuracy": self.val_accuracy, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, planner: dict[str, Any] | None = None) -> TokenChoice:
        """A checkpoint's entry. One from before the choice existed keeps every token, with the
        ALaST budgets of its ``planner`` state (if any) recorded for ``tokens='trained'``."""
        if d is None:
            budgets = (planner or {}).get("budgets")
            return cls(ALL, None if budgets is None else tuple(budgets), None,
                       "the checkpoint records no choice (trained before it existed)")
        return cls(d["tokens"], None if d.get("budgets") is None else tuple(d["budgets"]),
                   d.get("val_accuracy"), d.get("reason", ""))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TokenChoice:
        """The choice a checkpoint's ``state.json`` carries."""
        return cls.from_dict(state.get(STATE_KEY), state.get("planner"))


def decide(budgets: Any, accuracy_all: float, accuracy_trained: float) -> TokenChoice:
    """The validation's verdict: ``trained`` where it is at least as accurate as every token."""
    val = {ALL: float(accuracy_all), TRAINED: float(accuracy_trained)}
    if val[TRAINED] >= val[ALL]:
        return TokenChoice(TRAINED, budgets, val, "validation: the trained budgets are at least as "
                           "accurate as every token, at fewer FLOPs")
    return TokenChoice(ALL, budgets, val, "validation: every token is more accurate than the "
                       "trained budgets")


def undecided(budgets: Any | None, why: str | None = None) -> TokenChoice:
    """No validation to decide from (``why``, where there is one to say): every token (the
    budgets stay recorded for ``--tokens trained``)."""
    if budgets is None:
        return TokenChoice(ALL, None, None, "trained on every token")
    return TokenChoice(ALL, budgets, None, why or "no validation data to decide from")


# Without validation data (--val-split 0, or too little data to hold out): what each input
# kind's ALaST runs chose when they could measure (docs/results.md, "Train and inference
# agree"): on the ViT 9 of 10 runs kept their trained budgets, on text 8 of 10 every token.
MODALITY_RULE = {"image": TRAINED, "text": ALL}


def by_rule(budgets: Any | None, kind: str, why: str) -> TokenChoice:
    """No validation to decide from (``why``): the measured rule for the input ``kind``
    (:data:`MODALITY_RULE`; every token for another kind). The budgets stay recorded."""
    if budgets is None:
        return TokenChoice(ALL, None, None, "trained on every token")
    tokens = MODALITY_RULE.get(kind, ALL)
    what = "the trained budgets" if tokens == TRAINED else "every token"
    return TokenChoice(tokens, budgets, None, f"{why}; {what}, the rule measured for {kind} "
                       f"inputs (docs/alast.md)")


def is_every_token(budgets: Any, n_tokens: int) -> bool:
    """Whether ``budgets`` keep all ``n_tokens`` in every layer (then both ways are one)."""
    return bool(np.all(step_keep(np.asarray(budgets), n_tokens) == n_tokens))


def budgets_for(choice: TokenChoice, request: str = RUN) -> tuple[float, ...] | None:
    """The budgets inference uses for ``request`` (None: every token)."""
    if request not in REQUESTS:
        raise UsageError(f"tokens={request!r}: must be one of {', '.join(REQUESTS)}")
    tokens = choice.tokens if request == RUN else request
    if tokens == ALL:
        return None
    if choice.budgets is None:
        raise EdgetuneError("tokens='trained': this run trained on every token (no ALaST budgets); "
                            "use tokens='all'")
    return choice.budgets


def keep_for(budgets: tuple[float, ...] | None, n_tokens: int, n_layers: int) -> np.ndarray:
    """Keep counts (L,) for a batch of ``n_tokens``: every token where ``budgets`` is None."""
    if budgets is None:
        return np.full(n_layers, n_tokens, np.int64)
    if len(budgets) != n_layers:
        raise EdgetuneError(f"token budgets have {len(budgets)} entries; the model has {n_layers} layers")
    return step_keep(np.asarray(budgets, np.float64), n_tokens)


def describe(choice: TokenChoice, n_tokens: int | None = None) -> str:
    """One line for a user: what inference keeps and why."""
    if choice.tokens == TRAINED and choice.budgets is not None:
        what = "the trained budgets"
        if n_tokens is not None:
            keep = keep_for(choice.budgets, n_tokens, len(choice.budgets)).tolist()
            what += f" (keep {keep} of {n_tokens})"
    else:
        what = "every token"
    val = choice.val_accuracy
    measured = val is not None and (choice.tokens == TRAINED or val[TRAINED] != val[ALL])
    why = (f"validation accuracy {val[TRAINED]:.4f} at the budgets, {val[ALL]:.4f} at every token"
           if measured and val is not None else choice.reason)
    return f"inference keeps {what}: {why}"
