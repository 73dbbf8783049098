"""Train and inference agree: an ALaST run decides on its validation split whether inference
keeps every token or its trained budgets; eval, merge and the merged graph follow that."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgetune.errors import EdgetuneError, UsageError
from edgetune.schedule.alast.tokens import step_keep
from edgetune.train.inference_tokens import (
    ALL,
    TRAINED,
    TokenChoice,
    budgets_for,
    decide,
    describe,
    fp32_budgets,
    is_every_token,
    keep_for,
    undecided,
)

# ---- the decision (torch-free) ---------------------------------------------------------------


def test_trained_wins_ties_and_every_token_wins_when_more_accurate():
    b = [1.0, 0.4, 0.3]
    assert decide(b, 0.90, 0.90).tokens == TRAINED  # equal accuracy at fewer FLOPs
    assert decide(b, 0.90, 0.95).tokens == TRAINED
    lose = decide(b, 0.95, 0.90)
    assert lose.tokens == ALL and lose.budgets == fp32_budgets(b)  # still recorded
    assert lose.val_accuracy == {ALL: 0.95, TRAINED: 0.90}


def test_requests_follow_or_override_the_choice():
    chose = decide([1.0, 0.5], 0.8, 0.9)
    assert budgets_for(chose) == chose.budgets
    assert budgets_for(chose, "all") is None
    assert budgets_for(decide([1.0, 0.5], 0.9, 0.8)) is None
    assert budgets_for(decide([1.0, 0.5], 0.9, 0.8), "trained") == fp32_budgets([1.0, 0.5])
    with pytest.raises(EdgetuneError, match="trained on every token"):
        budgets_for(undecided(None), "trained")
    with pytest.raises(UsageError, match="tokens='some'"):
        budgets_for(chose, "some")


def test_choice_round_trips_and_old_checkpoints_keep_every_token():
    c = decide([1.0, 0.123456789], 0.5, 0.6)
    back = TokenChoice.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    assert back.budgets[1] == float(np.float32(0.123456789))  # stored at the graph's precision
    assert TokenChoice.from_dict(None).tokens == ALL
    with pytest.raises(UsageError, match="TokenChoice.tokens='most'"):
        TokenChoice("most")
    with pytest.raises(UsageError, match="needs the budgets"):
        TokenChoice(TRAINED)


def test_keep_for_is_the_schedules_rule():
    b = fp32_budgets([1.0, 0.3, 0.31, 0.2])
    np.testing.assert_array_equal(keep_for(b, 197, 4), step_keep(np.array(b), 197))
    np.testing.assert_array_equal(keep_for(None, 50, 3), [50, 50, 50])
    assert is_every_token([1.0, 1.0], 10) and not is_every_token([1.0, 0.5], 10)
    with pytest.raises(EdgetuneError, match="3 entries"):
        keep_for((1.0, 1.0, 1.0), 10, 2)
    assert "keep [60, 60, 60, 60] of 197" in describe(decide([1.0, 0.3, 0.3, 0.3], 0.5, 0.6), 197)
    assert "no validation data" in describe(undecided([1.0, 0.5]))


# ---- the graph's twin of the rule (workstation) ----------------------------------------------

def test_budget_keep_in_torch_is_keep_counts():
    torch = pytest.importorskip("torch")
    from edgetune.export.models.layers import budget_keep

    rng = np.random.default_rng(0)
    for _ in range(200):
        L, n = int(rng.integers(1, 9)), int(rng.integers(1, 300))
        b = np.asarray(fp32_budgets(rng.uniform(0, 1, L) * (rng.uniform() < 0.9)), np.float64)
        if rng.uniform() < 0.2:  # exact products such as 0.7 · 10
            b = np.round(b, 1)
        b32 = torch.tensor(b, dtype=torch.float32)
        got = budget_keep(b32, torch.zeros(2, n, 3)).numpy()
        np.testing.assert_array_equal(got, step_keep(b32.double().numpy(), n), err_msg=f"{b} {n}")


def test_cli_offers_every_request():
    from edgetune.cli import TOKEN_REQUESTS
    from edgetune.train.inference_tokens import REQUESTS

    assert TOKEN_REQUESTS == REQUESTS


def test_checkpoint_from_before_the_choice_keeps_its_budgets_for_trained():
    old = {"step": 3, "mode": "adaptive", "planner": {"budgets": [1.0, 0.5, 0.25]}}
    choice = TokenChoice.from_state(old)
    assert choice.tokens == ALL and choice.budgets == (1.0, 0.5, 0.25)
    assert budgets_for(choice, "trained") == (1.0, 0.5, 0.25)
    assert TokenChoice.from_state({"planner": {}}).budgets is None  # a static run
