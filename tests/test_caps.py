"""RAM / energy / power caps: the cost model, the shrinking order, feasibility errors, parsing,
calibration and state. Pure numpy on a fake 3-layer manifest; every expected value by hand.

Fake model: L = 3, D = 2, N = 10 tokens; per layer, per sample at n tokens:
forward 10n + n², backward trained 20n + 2n², frozen 10n + n², saved bytes trained 100n,
frozen 50n; 5 trainable parameters per layer, 5 outside (the head); 1000 parameters in all.
"""

import json
import math
import re

import numpy as np
import pytest

from edgetune.caps.calibration import MemoryCalibration, base_prior
from edgetune.caps.cost_model import ModelCosts, step_flops, step_memory, tokens_in
from edgetune.caps.dry_run import format_report, plan_report
from edgetune.caps.limits import Caps
from edgetune.caps.planner import CapPlanner, CapSettings
from edgetune.caps.units import MIB, parse_bytes, parse_joules, parse_watts
from edgetune.devices import DeviceProfile
from edgetune.errors import EdgetuneError, UsageError
from edgetune.schedule import AlastPlanner, StaticPlanner, StepPlan
from edgetune.train.engines import StaticEngine

STATIC = StaticEngine.caps.memory   # ORT's training state; the default: numpy's (adaptive)


def fake_manifest():
    layer = {
        "trainable_params": {"w": 5}, "frozen_params": {"f": 300},
        "forward_flops": [10.0, 1.0], "backward_flops_train": [20.0, 2.0],
        "backward_flops_frozen": [10.0, 1.0], "saved_bytes_train": [100.0, 0.0],
        "saved_bytes_frozen": [50.0, 0.0],
    }
    return {"model": {"name": "fake", "num_layers": 3, "hidden_size": 2}, "tokens": 10,
            "params": {"total": 1000, "trainable": 20,
                       "outside_layers": {"trainable": {"head.weight": 5}, "frozen": {"x": 85}}},
            "layers": [dict(layer, index=i, name=f"blocks.{i}") for i in range(3)]}


def profile(**kw):
    """1 GFLOP/s; joules_per_gflop=1e9 makes a step's joules equal its FLOPs."""
    args = dict(name="fake", description="test", ram_bytes=10**9, cores=1, peak_gflops=1.0,
                idle_watts=1.0, active_watts=3.0, joules_per_gflop=1e9)
    args.update(kw)
    return DeviceProfile(**args)


def planner(caps, inner=None, steps=10, batch=4, base=0.0, **settings):
    return CapPlanner(inner or StaticPlanner(3), fake_manifest(), profile(), caps, steps, batch,
                      CapSettings(**{"safety": 0.0, **settings}), base_bytes=base)


# ---- the cost model --------------------------------------------------------------------------

def test_costs_by_hand():
    costs = ModelCosts.from_manifest(fake_manifest())
    keep, trained = np.array([8, 5, 5]), np.array([False, True, False])
    np.testing.assert_array_equal(tokens_in(keep, 10), [10, 8, 5])
    f = step_flops(costs, keep, trained, n_tokens=10, batch_size=4)
    # forward: (100+100) + (80+64) + (50+25) = 419; backward: none below layer 1,
    # layer 1 trained 160+128 = 288, layer 2 frozen 50+25 = 75 → 363; × B = 4
    np.testing.assert_allclose(f.forward, [800, 576, 300])
    np.testing.assert_allclose(f.backward, [0, 1152, 300])
    assert f.total == 4 * (419 + 363)
    m = step_memory(costs, keep, trained, n_tokens=10, micro_batch=2, base=7.0)
    # activations per sample: layer 1: 100·8 + 4·2·8 = 864; layer 2: 50·5 + 4·2·5 = 290; × m = 2
    assert m.activations == 2 * (864 + 290)
    assert (m.params, m.optimizer) == (4000, 8 * 20)          # 4·total, 2·4·trainable
    assert m.gradients == 2 * 4 * (5 + 5)                      # layer 1 + the head, two copies
    assert m.checkpoint == 0                                   # adaptive: streamed per tensor
    # working set: 2·m·max_l saved_train_l(t_l) = 2·2·(100·10) (layer 0, every token)
    assert m.working == 2 * 2 * 1000 and m.arena == m.activations + m.working
    assert m.host == 3 * 4 * 5                                 # AdamW temporaries of the largest (5)
    assert m.total == 7 + 4000 + 160 + 80 + 2308 + 4000 + 60
    static = step_memory(costs, keep, trained, n_tokens=10, micro_batch=2, base=7.0, engine=STATIC,
                         batch_size=4, input_bytes_per_sample=100.0)
    assert static.checkpoint == 2 * (4000 + 160)              # ORT's checkpoint: 2·(P + O)
    assert static.gradients == 1 * 4 * (5 + 5)                # ORT's own gradient buffers
    assert static.host == 4 * 100                             # the whole batch's inputs (AdamW in ORT)
    with pytest.raises(UsageError, match="engine='gpu': must be an EngineMemory"):
        step_memory(costs, keep, trained, n_tokens=10, micro_batch=2, base=7.0, engine="gpu")


def test_lowest_trained_layer_costs_its_first_graphs_without_an_input_gradient():
    man = fake_manifest()
    for layer in man["layers"]:
        layer.update(backward_flops_first=[5.0, 0.0], saved_bytes_first=[40.0, 0.0])
    keep, trained = np.array([8, 5, 5]), np.array([False, True, False])
    # the stem trains with layer 0 only: with layer 1 lowest, the ``first`` fits apply even
    # when the stem has trainable parameters
    for stem_trains, low_bwd, low_saved in ((True, 40, 320), (None, 160 + 128, 800), (False, 40, 320)):
        if stem_trains is None:
            man.pop("stem_trainable", None)          # an older bundle: no such field
        else:
            man["stem_trainable"] = stem_trains
        costs = ModelCosts.from_manifest(man)
        f = step_flops(costs, keep, trained, n_tokens=10, batch_size=4)
        # layer 1 (the lowest trained, 8 tokens in): train fit 20·8 + 2·64, or first 5·8
        np.testing.assert_allclose(f.backward, [0, 4 * low_bwd, 300])
        m = step_memory(costs, keep, trained, n_tokens=10, micro_batch=1, base=0.0)
        # layer 1 saved 100·8 (train) or 40·8 (first), + 4·2·8; layer 2 frozen 50·5 + 4·2·5
        assert m.activations == low_saved + 64 + 290
    # layer 0 lowest with a trainable stem: the stem needs layer 0's input gradient
    man["stem_trainable"] = True
    all_trained = step_flops(ModelCosts.from_manifest(man), keep, np.ones(3, bool), 10, 1)
    assert all_trained.backward[0] == 20 * 10 + 2 * 100
    man["stem_trainable"] = False
    all_trained = step_flops(ModelCosts.from_manifest(man), keep, np.ones(3, bool), 10, 1)
    assert all_trained.backward[0] == 5 * 10


def test_bad_manifest_names_the_entry():
    man = fake_manifest()
    man["layers"][1]["saved_bytes_frozen"] = [1.0]
    with pytest.raises(EdgetuneError, match="layer 1 saved_bytes_frozen"):
        ModelCosts.from_manifest(man)
    del man["params"]
    with pytest.raises(EdgetuneError, match="params"):
        ModelCosts.from_manifest(man)


# ---- shrinking order -------------------------------------------------------------------------
# Static inner plan: keep 10 everywhere, all 3 layers trained, micro-batch 4; fixed bytes
# P + O = 4160, and a checkpoint write adds C = 2·O = 320 (adaptive). With keep k in every
# layer (floor 2), activations per sample: layer 0 at 10 tokens 1000 + 80 = 1080, layers at k
# tokens 108k (trained) — all trained: 4160 + 160 + 4·(1080 + 216k) + 320 = 8960 + 864k.

def shrink(ram):
    p = planner(Caps(ram_bytes=ram))
    plan = p.plan(10, 4)
    return plan, p.last


def test_plan_that_fits_is_not_touched():
    plan, est = shrink(10**6)
    np.testing.assert_array_equal(plan.keep, [10, 10, 10])
    assert plan.trained.all() and plan.micro_batch == 4 and est.changes == ()
    # P + O 4160, G 2·4·20 = 160, W 2·4·1000 = 8000, H 60, A 4·1080 (layer 0) + 864·keep
    assert est.memory.total == 16700 + 864 * 10


def test_keep_shrinks_first():
    plan, est = shrink(19400)        # 16700 + 864k ≤ 19400 → k = 3
    np.testing.assert_array_equal(plan.keep, [3, 3, 3])
    assert plan.trained.all() and plan.micro_batch == 4
    assert est.memory.total <= 19400 and est.changes[0].startswith("keep")


def test_then_the_lowest_trained_layer_goes():
    # floor keep with 3 layers trained needs 16700 + 864·2 = 18428 > 17600; with layers 1, 2:
    # 4160 + 8·15 + 8000 + 60 + 4·(2·108k) = 12340 + 864k ≤ 17600 → k = 6
    plan, est = shrink(17600)
    np.testing.assert_array_equal(plan.trained, [False, True, True])
    np.testing.assert_array_equal(plan.keep, [6, 6, 6])
    assert plan.micro_batch == 4


def test_then_the_micro_batch_halves():
    # micro-batch 4: top layer alone at floor keep: 4160 + 80 + 8000 + 60 + 4·216 = 13164 > 9000;
    # micro-batch 2, layers 1-2 at floor: 4160 + 120 + 4000 + 60 + 2·432 = 9204 > 9000;
    # micro-batch 2, layer 2 alone: 4160 + 80 + 4000 + 60 + 2·108k ≤ 9000 → k = 3
    plan, est = shrink(9000)
    assert plan.micro_batch == 2
    np.testing.assert_array_equal(plan.trained, [False, False, True])
    np.testing.assert_array_equal(plan.keep, [3, 3, 3])
    assert "micro-batch 4->2" in est.changes


def test_static_engine_keeps_every_layer_trained():
    # static: C = 2·(P + O) = 8320, G = 4·20 (ORT's buffers), no AdamW temporaries. All
    # trained at floor keep, micro-batch 4: 4160 + 80 + 8000 + 4·(1080 + 432) + 8320 = 26608
    # > 20000; micro-batch 2: 4160 + 80 + 4000 + 2·1512 + 8320 = 19584
    p = planner(Caps(ram_bytes=20000), engine=STATIC)
    plan = p.plan(10, 4)
    assert plan.trained.all() and plan.micro_batch == 2


def test_inner_mask_is_followed_before_the_top_layer():
    class Fixed(StaticPlanner):
        def plan(self, n, b):
            return StepPlan(np.full(3, n, np.int64), np.array([True, True, False]), b)

    p = planner(Caps(ram_bytes=13500), inner=Fixed(3))
    # layer 1 alone at floor: 4160 + 80 + 8000 + 60 + 4·(216 + 50·2 + 4·2·2) = 13628 > 13500
    plan = p.plan(10, 4)
    np.testing.assert_array_equal(plan.trained, [False, False, True])


# ---- feasibility -----------------------------------------------------------------------------

def test_infeasible_ram_cap_names_the_smallest_cap_that_works():
    base = 300e6
    p = planner(Caps(ram_bytes=300_000_000), base=base, safety=0.05)
    # smallest plan: top layer, keep 2, micro-batch 1: base + 6516
    with pytest.raises(EdgetuneError, match=r"--ram-cap 300MB: the smallest plan") as e:
        p.check_feasible()
    need = re.search(r"smallest cap that would work is --ram-cap (\S+)$", str(e.value)).group(1)
    assert need == "316MB"      # (300e6 + 6516) / 0.95 = 315.8 MB, rounded up
    planner(Caps.parse(ram=need), base=base, safety=0.05).check_feasible()


def test_infeasible_energy_and_power_are_reported_together():
    # smallest plan FLOPs = 4·[(200 + 24 + 24) + 48] = 1184 J a step, 10 steps
    p = CapPlanner(StaticPlanner(3), fake_manifest(), profile(), Caps(energy_joules=1000.0, power_watts=0.5),
                   10, 4, CapSettings(safety=0.0), base_bytes=0.0)
    with pytest.raises(EdgetuneError) as e:
        p.check_feasible()
    msg = str(e.value)
    assert "--energy-cap 1kJ" in msg and "--energy-cap 11.9kJ" in msg
    assert "--power-cap 0.5W" in msg and "1W idle" in msg


def test_cap_above_device_ram_says_the_device_is_too_small():
    p = CapPlanner(StaticPlanner(3), fake_manifest(), profile(ram_bytes=4000), Caps(), 1, 4,
                   CapSettings(safety=0.0), base_bytes=0.0)
    with pytest.raises(EdgetuneError, match="does not fit in the fake device's"):
        p.check_feasible()


# ---- energy and power ------------------------------------------------------------------------

def test_energy_budget_shrinks_plans_and_tracks_spending():
    p = planner(Caps(energy_joules=50000.0))       # 5000 J a step over 10 steps
    # keep k everywhere, all trained: 4·(600 + 60k + 6k²) ≤ 5000 → k = 6 (4704 J)
    plan = p.plan(10, 4)
    np.testing.assert_array_equal(plan.keep, [6, 6, 6])
    assert p.last.joules == 4704
    p.observe_energy(10000.0, seconds=1.0)          # measured twice the model's estimate
    assert p.spent_joules == 10000.0
    assert p.energy.ratio == pytest.approx(10000 / 4704)
    p.plan(10, 4)
    assert p.last.joules <= (50000 - 10000) / 9


def test_a_step_the_spread_allows_but_the_budget_cannot_pay_for_runs_the_cheapest_plan():
    """The fallback keeps the inner plan's micro-batch: halving it saves memory, not energy
    (the same FLOPs in more graph calls; m = 1 ran 10x slower than m = 64 on vit-micro)."""
    p = planner(Caps(energy_joules=9000.0), steps=1)
    p.observe_overhead(1000.0)                       # spent 1000; each step keeps 2·1000 around it
    # the spread allows 9000 − 1000 − 1000 = 7000: keep 9 (6504 J) fits it, yet
    # 1000 + 6504 + 2·1000 > 9000; the cheapest plan (keep 2, top layer: 1184 J) fits
    plan = p.plan(10, 4)
    np.testing.assert_array_equal(plan.keep, [2, 2, 2])
    np.testing.assert_array_equal(plan.trained, [False, False, True])
    assert plan.micro_batch == 4 and p.last.joules == 1184


def test_the_cheapest_plan_halves_the_micro_batch_only_for_ram():
    # top layer at keep 2: 4160 + 80 + 2000·m + 60 + 216·m fits 9000 at m = 2, not at m = 4
    est = planner(Caps(ram_bytes=9000)).model.cheapest(10, 4, 4)
    assert est.plan.micro_batch == 2 and est.fits_ram
    assert planner(Caps()).model.cheapest(10, 4, 4).plan.micro_batch == 4


def test_power_cap_pauses_after_each_step():
    prof = profile(joules_per_gflop=None)        # 3 J/GFLOP at 1 GFLOP/s: 3 W while busy
    p = CapPlanner(StaticPlanner(3), fake_manifest(), prof, Caps(power_watts=2.0), 10, 4,
                   CapSettings(safety=0.0), base_bytes=0.0)
    p.plan(10, 4)
    t = p.last.seconds
    # (3t + 1·pause) / (t + pause) = 2 → pause = t
    assert p.pause_seconds() == pytest.approx(t)
    p.observe_energy(6.0, seconds=1.0)                # measured: 6 W for 1 s → pause 4 s
    assert p.pause_seconds(1.0) == pytest.approx(4.0)


# ---- calibration -----------------------------------------------------------------------------

def test_memory_calibration_moves_the_prediction_to_the_measurement():
    p = CapPlanner(StaticPlanner(3), fake_manifest(), profile(), Caps(), 10, 4)
    assert p.memory.base == base_prior(4000, 160) == 96 * MIB + 1.5 * 4000 + 0.5 * 160
    p.observe_memory(400 * MIB + 4160)               # before any step: base = rss − (P + O)
    assert p.memory.base == 400 * MIB
    p.plan(10, 4)
    for measured in (p.last.memory.total + 50 * MIB, p.last.memory.total + 80 * MIB):
        p.observe_memory(measured)                    # heavier than predicted: follow it up
        again = p.estimate(p.last.plan.keep, p.last.plan.trained, 4, 10, 4)
        assert again.memory.total == pytest.approx(measured)


def test_memory_calibration_is_a_high_water_mark():
    cal = MemoryCalibration(prior=10**9)
    cal.observe_step(1000 + 500, model_bytes=500)
    assert cal.calibrated and cal.base == 1000        # the prior is replaced, even downwards
    cal.observe_step(1000 + 500, model_bytes=200)     # a smaller step; the arena kept its size
    assert cal.base == 1000
    cal.observe_step(1400 + 500, model_bytes=500)
    assert cal.base == 1400


def test_inside_the_margin_the_smallest_plan_runs_rather_than_stop():
    # limit (1 − 0.5)·8000 = 4000: nothing fits it; the smallest plan (6516) fits the cap itself
    p = planner(Caps(ram_bytes=8000), safety=0.5)
    plan = p.plan(10, 4)
    assert plan.micro_batch == 1 and plan.trained.tolist() == [False, False, True]
    assert "inside the safety margin" in p.last.changes and p.last.memory.total == 6516


def test_measured_rss_over_the_cap_stops_the_run_with_a_reason():
    p = planner(Caps(ram_bytes=20000))
    p.plan(10, 4)
    p.observe_memory(10**6)
    with pytest.raises(EdgetuneError, match="measured RSS"):
        p.plan(10, 4)


def test_a_checkpoint_spike_in_the_high_water_mark_does_not_inflate_the_base():
    p = planner(Caps(ram_bytes=10**6), base=0.0, engine=STATIC)
    p.plan(10, 4)
    model = p.last.memory.model
    p.observe_memory(1000 + model)                  # the step alone: base 1000
    assert p.memory.base == 1000
    p.observe_checkpoint()                          # ORT's write adds C = 2·(P + O) to VmHWM
    p.plan(10, 4)
    p.observe_memory(1000 + model + 8320)
    assert p.memory.base == 1000                    # still 1000: C is in the prediction already


# ---- state -----------------------------------------------------------------------------------

def test_state_round_trip_through_json():
    def make():
        return CapPlanner(AlastPlanner(3, 10), fake_manifest(), profile(),
                          Caps(ram_bytes=10**6, energy_joules=1e5), 10, 4, base_bytes=1000.0)

    a = make()
    for i in range(3):
        a.plan(10, 4)
        a.observe(np.array([0.3, 0.1 * i, 0.2]), np.array([1.0, 2.0, 3.0]))
        a.observe_memory(5000 + 100 * i + a.last.memory.model)
        a.observe_energy(5000.0, seconds=0.01)
    b = make()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.memory.base == a.memory.base and b.spent_joules == a.spent_joules
    pa, pb = a.plan(10, 4), b.plan(10, 4)
    np.testing.assert_array_equal(pa.keep, pb.keep)
    np.testing.assert_array_equal(pa.trained, pb.trained)
    assert pa.micro_batch == pb.micro_batch
    with pytest.raises(UsageError, match="version"):
        b.load_state_dict({"version": 99})


# ---- parsing and validation ------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("600MB", 600_000_000), ("1.5GiB", 1_610_612_736),
                                        ("600mb", 600_000_000), ("512 KiB", 524_288)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_parse_energy_and_power():
    assert parse_joules("5kJ") == 5000.0 and parse_joules("0.5Wh") == 1800.0
    assert parse_watts("7W") == 7.0 and parse_watts("500mW") == 0.5
    assert Caps.parse(ram="600MB", energy="5kJ") == Caps(600_000_000, 5000.0, None)


@pytest.mark.parametrize("fn,text,match", [
    (parse_bytes, "600", r"--ram-cap='600': needs a unit"),
    (parse_bytes, "600XB", r"--ram-cap='600XB': unknown unit 'XB'"),
    (parse_bytes, "lots", r"--ram-cap='lots': not a number with a unit"),
    (parse_joules, "0kJ", r"--energy-cap='0kJ': must be > 0"),
    (parse_watts, "7mw", r"--power-cap='7mw': unknown unit"),     # milli or mega?
    (parse_watts, "-3W", r"--power-cap='-3W'"),
])
def test_parse_errors_name_the_value(fn, text, match):
    with pytest.raises(UsageError, match=match):
        fn(text)


def test_caps_and_settings_are_validated():
    with pytest.raises(UsageError, match="Caps.ram_bytes=0"):
        Caps(ram_bytes=0)
    with pytest.raises(UsageError, match="Caps.power_watts"):
        Caps(power_watts=-1.0)
    with pytest.raises(UsageError, match="CapSettings.keep_floor"):
        CapSettings(keep_floor=0.0)
    with pytest.raises(UsageError, match="total_steps"):
        CapPlanner(StaticPlanner(3), fake_manifest(), profile(), Caps(), 0, 4)


# ---- dry run ---------------------------------------------------------------------------------

def test_plan_report_shows_the_shrunk_plan_and_its_costs():
    # prior base 300 MiB + 2·4000; the limit (cap less 5 %) leaves 12000 bytes over it: ALaST's
    # first plan (every token, K = ⌈0.75·3⌉ = 3) shrinks to keep 3, as in test_keep_shrinks_first
    cap = math.ceil((base_prior(4000, 160) + 12000) / 0.95)
    report = plan_report(fake_manifest(), profile(), Caps(ram_bytes=cap), batch_size=4,
                         schedule="alast", steps=5)
    step = report["step"]
    assert step["plan"]["keep"] == [3, 3, 3] and step["plan"]["trained"] == [0, 1, 2]
    assert step["memory"]["total"] <= report["ram_limit_bytes"] < report["unshrunk"]["memory"]["total"]
    assert len(step["layers"]) == 3 and json.dumps(report)
    text = "\n".join(format_report(report))
    assert "predicted peak RSS" in text and "FLOPs per step" in text and "energy per step" in text
    with pytest.raises(EdgetuneError, match="smallest cap that would work"):
        plan_report(fake_manifest(), profile(), Caps(ram_bytes=100 * MIB), 4, "static")


def test_the_cost_model_takes_the_engines_capabilities():
    """The engines' declared capabilities give the cost model today's numbers; plan predicts
    the engine train picks (a static-only bundle: ORT's whole-state checkpoint under a RAM cap)."""
    from edgetune.caps.cost_model import EngineMemory
    from edgetune.train.engines import AdaptiveEngine

    assert AdaptiveEngine.caps.memory == EngineMemory() != STATIC
    with pytest.raises(UsageError, match="CapSettings.engine='static': must be an EngineMemory"):
        CapSettings(engine="static")
    caps = Caps(ram_bytes=10**9)
    both = plan_report(fake_manifest(), profile(), caps, 4, "static")
    static_only = plan_report({**fake_manifest(), "modes": ["static"]}, profile(), caps, 4, "static")
    assert both["step"]["memory"]["checkpoint"] == 0                      # adaptive under a RAM cap
    from edgetune.runtime.ort_build import has_training_api

    # ORT's whole state, 2·(P + O), where the training build runs static mode; else the
    # adaptive engine (the one train would pick, and then ask to re-export for)
    ort = 2 * (4000 + 160) if has_training_api() else 0
    assert static_only["step"]["memory"]["checkpoint"] == ort


def test_a_refused_arena_replans_the_same_step_smaller_then_stops_with_a_reason():
    p = planner(Caps(ram_bytes=10**6))
    p.arena_bytes = 9000.0
    first = p.plan(10, 4)
    used = p.last.memory.arena                    # A + W of the plan that fits the arena
    assert used <= 9000 < 1.5 * used              # (else the replan could keep it)
    steps = p.steps_done
    smaller = p.replan_smaller()                  # ORT refused it: count A + W as 1.5× larger
    assert p.arena_factor == 1.5 and p.steps_done == steps     # the same step, planned again
    assert p.spent_joules == p.last.joules        # its energy replaces the refused plan's
    assert 1.5 * p.last.memory.arena <= 9000 and p.last.memory.arena < used
    assert (smaller.keep.sum() < first.keep.sum() or smaller.micro_batch < first.micro_batch
            or smaller.trained.sum() < first.trained.sum())
    for _ in range(20):                           # refused again and again: a clear stop
        try:
            p.replan_smaller()
        except EdgetuneError as e:
            assert "smallest plan" in str(e)
            break
    else:
        raise AssertionError("replanning never gave up")
