"""``--lr auto`` (train/lr_range.py): the range test's rates, stop and pick, the trials that
follow it, and a run that picks its learning rate, restores its starting point and trains from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundles import micro_bundle
from click.testing import CliRunner
from test_train import synthetic_images

from edgetune.bundle import Bundle
from edgetune.errors import UsageError
from edgetune.train import TrainConfig, Trainer, load_data
from edgetune.train.lr_range import RangeTest, Trials, run_range_test, run_trials, smooth


def test_rates_grow_geometrically_from_lo_to_hi():
    r = RangeTest(lo=1e-5, hi=1e-1, steps=5).rates()
    assert r[0] == pytest.approx(1e-5) and r[-1] == pytest.approx(1e-1)
    assert np.allclose(r[1:] / r[:-1], 10.0)


def test_smoothing_is_a_bias_corrected_moving_average():
    assert smooth([2.0, 2.0, 2.0], 0.8) == pytest.approx([2.0, 2.0, 2.0])  # a constant stays
    assert smooth([1.0, 3.0], 0.5)[1] == pytest.approx((0.25 + 1.5) / 0.75)


def test_the_pick_is_a_decade_below_the_smoothed_minimum_and_divergence_stops_the_test():
    test = RangeTest(lo=1e-6, hi=1.0, steps=61, beta=0.0)  # beta 0: smoothed = raw
    seen = []

    def loss(lr):  # falls until 1e-2, then climbs steeply
        seen.append(lr)
        x = np.log10(lr)
        return 2.0 - 0.1 * (x + 6) if x <= -2 else 1.6 + 50 * (x + 2) ** 2

    out = run_range_test(test, loss)
    assert out["lr"] == pytest.approx(1e-3, rel=1e-6)  # 1e-2 / 10
    assert out["stopped"] and len(seen) < 61 and max(seen) < 1.0
    assert out["rates"] == seen and len(out["losses"]) == len(seen)


def test_a_first_step_that_diverges_is_refused():
    with pytest.raises(UsageError, match="first step already diverged"):
        run_range_test(RangeTest(steps=5), lambda lr: float("nan"))


@pytest.mark.parametrize("bad", [{"lo": 0.0}, {"hi": 1e-7}, {"steps": 2}, {"beta": 1.0}, {"divisor": 0.5}])
def test_range_test_settings_are_checked(bad):
    with pytest.raises(UsageError, match="RangeTest"):
        RangeTest(**bad)


H = 10 ** 0.5  # the trials' default ratio, a half-decade


def _scored(held: dict[float, float], tried: list[float]):
    def trial(lr):
        tried.append(lr)
        return next(v for k, v in held.items() if abs(k - lr) <= 1e-9 * k)
    return trial


def test_the_trials_take_the_lowest_held_out_loss_not_the_range_tests_pick():
    # LoRA on a balanced binary task: the range test's pick (3e-3) diverges over a run; a short
    # trial shows it as a held-out loss stuck at ln 2, while a half-decade lower learns; the
    # search steps down past -1 (the edge) and stops when -2 is worse
    held = {3e-3 * H: np.log(2), 3e-3: np.log(2), 3e-3 / H: 0.45, 3e-4: 0.52}
    tried: list[float] = []
    out = run_trials(Trials(), 3e-3, _scored(held, tried))
    assert out["lr"] == pytest.approx(3e-3 / H) and "diverged" not in out
    assert tried == pytest.approx([3e-3 * H, 3e-3, 3e-3 / H, 3e-4])  # 1, 0, -1, then -2
    assert out["rates"] == pytest.approx(sorted(tried, reverse=True))
    assert out["losses"] == pytest.approx([np.log(2), np.log(2), 0.45, 0.52])


def test_the_trials_climb_past_the_pick_when_higher_rates_learn_faster():
    # IA3 on ViT: a few scales want ~10x the range test's pick; the search climbs to its reach
    # (the smoothed minimum itself, pick x 10) and no further
    held = {4e-3 * H ** k: 1.2 - 0.1 * k for k in range(-2, 3)}
    tried: list[float] = []
    out = run_trials(Trials(), 4e-3, _scored(held, tried))
    assert out["lr"] == pytest.approx(4e-2)
    assert tried == pytest.approx([4e-3 * H, 4e-3, 4e-3 / H, 4e-2])
    # a peak inside the first three: no fourth trial
    tried2: list[float] = []
    inside = {4e-3 * H: 0.9, 4e-3: 0.8, 4e-3 / H: 0.95}
    assert run_trials(Trials(), 4e-3, _scored(inside, tried2))["lr"] == pytest.approx(4e-3)
    assert len(tried2) == 3


def test_a_tie_goes_to_the_lower_rate_and_a_diverged_trial_never_wins():
    # 0.504 is within 1 % of 0.500: the lower rate wins, and the search walks on down to the reach
    tie = run_trials(Trials(tie=0.01), 1e-2, lambda lr: 0.500 if lr > 5e-3 else 0.504)
    assert tie["lr"] == pytest.approx(1e-3) and min(tie["rates"]) == pytest.approx(1e-3)
    apart = run_trials(Trials(tie=0.001), 1e-2, lambda lr: 0.500 if lr > 5e-3 else 0.504)
    assert apart["lr"] == pytest.approx(1e-2)  # 1e-2 and 1e-2 x 3.2 tie at 0.500: the lower
    nan = run_trials(Trials(), 1e-2, lambda lr: float("nan") if lr > 5e-3 else 0.9 + lr)
    assert nan["lr"] == pytest.approx(1e-3)  # of the finite ones, the lowest loss (and rate)
    every = run_trials(Trials(), 1e-2, lambda lr: float("inf"))
    assert every["diverged"] and every["lr"] == pytest.approx(1e-3)
    assert every["rates"] == pytest.approx([1e-2 * H, 1e-2, 1e-2 / H, 1e-3])  # it walked down


def test_a_reach_of_zero_tries_the_pick_only():
    tried: list[float] = []
    out = run_trials(Trials(reach=0), 1e-3, lambda lr: tried.append(lr) or 0.5)
    assert out["lr"] == pytest.approx(1e-3) and tried == pytest.approx([1e-3])


@pytest.mark.parametrize("bad", [{"steps": 0}, {"ratio": 1.0}, {"reach": -1},
                                 {"tie": -0.1}, {"max_examples": 0}])
def test_trial_settings_are_checked(bad):
    with pytest.raises(UsageError, match="Trials"):
        Trials(**bad)


def test_lr_auto_picks_restores_and_trains(tmp_path):
    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    train = load_data(b, synthetic_images(tmp_path / "train.npz", n=160))
    val = load_data(b, synthetic_images(tmp_path / "val.npz", n=48, seed=1))
    trainer = Trainer(b, train, val, TrainConfig(steps=12, batch_size=16, lr_auto=True),
                      out=tmp_path / "run")
    before = trainer.trainable_state_dict()
    trainer._lr_range_test()
    after = trainer.trainable_state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the starting point is back
    pick = trainer.lr_pick
    assert pick is not None and trainer.config.lr == pick["lr"] and 1e-6 <= pick["lr"] <= RangeTest().hi
    assert len(pick["losses"]) >= 5 and pick["rule"].startswith("smoothed loss lowest")
    trials = pick["trials"]  # 3-5 trials as long as the run (12 < 100 steps), on the 48 held out
    assert trials["steps"] == 12 and trials["scored_by"] == "loss on 48 held-out examples"
    ks = np.log(np.array(trials["rates"]) / pick["range_lr"]) / np.log(H)  # the grid steps tried
    assert np.allclose(ks, np.round(ks), atol=1e-6) and 3 <= len(ks) <= 5
    assert {1, 0, -1} <= set(np.round(ks).astype(int)) <= {2, 1, 0, -1, -2}
    assert pick["lr"] in trials["rates"] and all(np.isfinite(trials["losses"]))
    trainer.fit()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["lr_auto"]["lr"] == info["config"]["lr"] == pick["lr"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))  # the probes are not training steps
    assert max(r["lr"] for r in rows) <= pick["lr"] * (1 + 1e-9)
    resumed = Trainer(b, train, val, TrainConfig(steps=12, batch_size=16, lr_auto=True),
                      out=tmp_path / "run", resume=True)
    assert resumed.config.lr == pick["lr"] and resumed.step == 12  # the pick stands on resume


def test_cli_lr_takes_a_number_or_auto(tmp_path):
    from edgetune.cli import main

    b = micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive")
    data = synthetic_images(tmp_path / "train.npz", n=64)
    bad = CliRunner().invoke(main, ["train", str(b), "--data", str(data), "--steps", "1",
                                    "--lr", "fast", "--out", str(tmp_path / "r0")])
    assert bad.exit_code == 2 and "--lr 'fast': a number or 'auto'" in bad.output
    ok = CliRunner().invoke(main, ["train", str(b), "--data", str(data), "--steps", "2",
                                   "--lr", "auto", "--batch-size", "16", "--quiet",
                                   "--out", str(tmp_path / "r1")])
    assert ok.exit_code == 0, ok.output
    assert "(auto: smoothed loss lowest" in ok.output


def test_plan_shows_the_range_test():
    from edgetune.cli import main

    b = micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive")
    out = CliRunner().invoke(main, ["plan", str(b), "--lr", "auto", "--batch-size", "8"])
    assert out.exit_code == 0, out.output
    assert "learning rate: auto: a range test of 40 steps first (lr 1e-06 to 1" in out.output
    assert "then 3 to 5 trials of up to 100 steps from the same start" in out.output
    js = CliRunner().invoke(main, ["plan", str(b), "--lr", "auto", "--json"])
    auto = json.loads(js.stdout)["lr_auto"]
    assert auto["steps"] == 40 and auto["trials"]["steps"] == 100 and auto["trials"]["reach"] == 2


def test_the_range_test_leaves_a_capped_planners_step_count_alone(tmp_path):
    from edgetune.caps import Caps

    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    train = load_data(b, synthetic_images(tmp_path / "train.npz", n=96))
    trainer = Trainer(b, train, None, TrainConfig(steps=6, batch_size=16, lr_auto=True),
                      caps=Caps.parse(energy="1MJ"))
    before = trainer.limits.planner.steps_done
    trainer._lr_range_test()
    assert trainer.limits.planner.steps_done == before  # the probes are not the run's steps
    assert trainer.limits.planner.spent_joules > 0          # their energy is
    # no validation data: each trial is scored by its progressive training loss
    assert trainer.lr_pick["trials"]["scored_by"] == "training loss of batches each trial had not seen"
