"""bench/lr_sweep.py's pick and bench/convergence.py's equal-cost comparison, on made-up curves."""

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from convergence import acc_at, compare  # noqa: E402
from lr_sweep import sweep  # noqa: E402


def _peaked(best_lr):
    calls = []

    def val_of(lr):
        calls.append(lr)
        return 1.0 - abs(math.log10(lr) - math.log10(best_lr)) / 10

    return val_of, calls


def test_the_sweep_picks_the_best_validation_score_and_stays_inside_a_grid_that_brackets_it():
    val_of, calls = _peaked(3e-3)
    res = sweep((1e-3, 3e-3, 1e-2), val_of)
    assert res["lr"] == 3e-3 and len(calls) == 3


def test_a_pick_on_the_edge_extends_the_grid_at_most_twice():
    val_of, calls = _peaked(1.0)
    res = sweep((1e-3, 3e-3, 1e-2), val_of)
    assert len(calls) == 5 and calls[3] > 1e-2 and calls[4] > calls[3]
    assert res["lr"] == max(calls)  # still the edge after two extensions: the best tried
    val_of, calls = _peaked(1e-6)
    res = sweep((1e-3, 3e-3, 1e-2), val_of)
    assert len(calls) == 5 and res["lr"] == min(calls)


def test_failed_rates_are_skipped_and_ties_go_to_the_lower_rate():
    scores = {1e-3: 0.4, 3e-3: 0.5, 1e-2: None}
    res = sweep((1e-3, 3e-3, 1e-2), scores.get)
    assert res["lr"] == 3e-3 and res["tried"]["0.01"] is None
    scores = {1e-3: 0.4, 3e-3: 0.5, 1e-2: 0.5}
    assert sweep((1e-3, 3e-3, 1e-2), scores.get)["lr"] == 3e-3
    assert sweep((1.0,), lambda lr: None)["lr"] is None


def _curve(costs, vals):
    best = [max(vals[:i + 1]) for i in range(len(vals))]
    return {"energy_j": costs, "elapsed_s": costs, "val": vals, "best": best, "step": list(range(len(vals)))}


def test_equal_cost_compares_best_so_far_up_to_the_references_convergence():
    ref = _curve([10, 20, 30, 40], [0.5, 0.8, 0.9, 0.85])  # converged (best) at 30 J
    other = _curve([5, 15, 25], [0.6, 0.7, 0.95])
    assert acc_at(other, "energy_j", 4) is None and acc_at(other, "energy_j", 20) == 0.7
    res = compare(ref, other, "energy_j")
    assert res["budgets"] == 3 and res["convergence_cost"] == 30
    gaps = [round(r["gap_pt"], 6) for r in res["rows"]]
    assert gaps == [10.0, -10.0, 5.0]  # 0.6-0.5, 0.7-0.8, 0.95-0.9
    assert res["at_or_above"] == 2 and [r["budget"] for r in res["below"]] == [20]
