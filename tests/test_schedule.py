"""ALaST schedule (arXiv 2408.08670), pure numpy; every expected value is worked out by hand."""

import json

import numpy as np
import pytest

from edgetune.config import from_strings
from edgetune.errors import UsageError
from edgetune.schedule.alast import (
    BUDGET_RULES,
    AlastConfig,
    AlastScheduler,
    class_token_importance,
    class_token_norms,
    keep_counts,
    lowest_trained,
    nonincreasing,
    relative_importance,
    relative_target,
    select_trained,
    update_budgets,
    waterfill,
)


def cls_chain(*increments):
    """Class tokens (L+1, 1, 1) starting at 0, each layer adding one increment: Δ_l = inc_l²."""
    return np.cumsum([0.0, *increments]).reshape(-1, 1, 1)


# ---- importance ------------------------------------------------------------------------------

def test_importance_is_batch_mean_of_feature_sum_of_squares():
    cls = np.array([
        [[0, 0], [1, 1]],   # CLS_0 (before layer 1), batch of 2, 2 features
        [[1, 2], [1, 1]],   # CLS_1: sample 0 moves by (1, 2) → 5; sample 1 stays → 0
        [[1, 2], [4, 5]],   # CLS_2: sample 0 stays → 0; sample 1 moves by (3, 4) → 25
    ], dtype=np.float32)
    np.testing.assert_allclose(class_token_importance(cls), [2.5, 12.5])


def test_importance_accepts_a_single_sample_without_batch_axis():
    np.testing.assert_allclose(class_token_importance(np.array([[0.0, 0.0], [3.0, 4.0]])), [25.0])


@pytest.mark.parametrize("bad", [np.zeros((1, 2, 3)), np.zeros(4), np.zeros((2, 0, 3))])
def test_importance_rejects_bad_shapes(bad):
    with pytest.raises(UsageError, match="L\\+1, batch, features"):
        class_token_importance(bad)


def test_importance_rejects_nan():
    cls = cls_chain(1.0, 2.0)
    cls[1] = np.nan
    with pytest.raises(UsageError, match="NaN"):
        class_token_importance(cls)


# ---- budgets ---------------------------------------------------------------------------------

def test_budget_update_moves_by_alpha_times_importance_change_and_clips():
    # b + 0.1·(Δ − Δ_prev) = [1 + 0.1, 0.5 − 0.2, 0.2 − 0.5] = [1.1, 0.3, −0.3] → clip to [0.1, 1]
    b = update_budgets([1.0, 0.5, 0.2], [2.0, 1.0, 0.0], [1.0, 3.0, 5.0], alpha=0.1, b_min=0.1)
    np.testing.assert_allclose(b, [1.0, 0.3, 0.1])


def test_first_budget_update_has_no_previous_importance_and_keeps_budgets():
    np.testing.assert_array_equal(update_budgets([1.0, 0.4], [7.0, 9.0], None, 0.5, 0.1), [1.0, 0.4])


def test_budget_update_rejects_mismatched_shapes():
    with pytest.raises(UsageError, match="importance shape"):
        update_budgets([1.0, 1.0], [1.0], None, 0.1, 0.1)


# ---- tokens kept -----------------------------------------------------------------------------

def test_keep_counts_budget_is_the_next_layers_input_then_never_increase_with_depth():
    # ⌈b·10⌉ = [10, 5, 7, 3, 1]: layer l takes in ⌈b_l·10⌉, so layer l passes on layer l+1's
    # share: [5, 7, 3, 1] then the last layer passes on what it took in; layer 2 wants 7 but
    # only 5 tokens reach it → [5, 5, 3, 1, 1]
    keep = keep_counts(np.array([1.0, 0.5, 0.7, 0.25, 0.01]), 10)
    assert keep.dtype == np.int64
    assert keep.tolist() == [5, 5, 3, 1, 1]
    assert keep_counts(np.array([0.2, 1.0]), 10).tolist() == [10, 10]  # layer 0 sees all N anyway


def test_keep_counts_are_exact_at_float_edges():
    assert keep_counts([1.0, 0.7], 10).tolist() == [7, 7]      # 0.7·10 = 7.000000000000001
    assert keep_counts([1.0, 0.5], 197).tolist() == [99, 99]   # ⌈98.5⌉, ViT-B/16: 196 + CLS
    assert keep_counts([0.0, 0.0], 197).tolist() == [1, 1]     # the class token always stays
    assert keep_counts([0.3], 10).tolist() == [10]             # one layer: nothing to drop for


@pytest.mark.parametrize("budgets,n", [([1.2], 10), ([0.5], 0), ([np.nan], 10), ([], 10)])
def test_keep_counts_reject_bad_input(budgets, n):
    with pytest.raises(UsageError):
        keep_counts(np.array(budgets, dtype=float), n)


# ---- layers trained --------------------------------------------------------------------------

def test_topk_trains_highest_budgets():
    b = [0.9, 0.5, 0.9, 0.7]
    assert select_trained(b, 2, "topk").tolist() == [True, False, True, False]
    assert select_trained(b, 3, "topk").tolist() == [True, False, True, True]


def test_topk_ties_go_to_deeper_layers_so_the_backward_pass_is_shorter():
    mask = select_trained(np.ones(4), 3, "topk")
    assert mask.tolist() == [False, True, True, True]
    assert lowest_trained(mask) == 1


class FixedUniforms:
    """Stands in for a Generator: ``random(n)`` returns the given numbers."""

    def __init__(self, u):
        self.u = np.asarray(u, dtype=float)

    def random(self, n):
        assert n == self.u.size
        return self.u


def test_sampling_keys_weigh_the_uniform_by_the_budget():
    # keys log(u)/b: layer 0 ln(0.2)/1 = −1.609, layer 1 ln(0.5)/0.5 = −1.386 → layer 1
    assert select_trained([1.0, 0.5], 1, "sample", FixedUniforms([0.2, 0.5])).tolist() == [False, True]
    # halve layer 1's budget: ln(0.5)/0.25 = −2.773 → layer 0
    assert select_trained([1.0, 0.25], 1, "sample", FixedUniforms([0.2, 0.5])).tolist() == [True, False]


def test_sampling_never_draws_a_zero_budget():
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert select_trained([0.0, 1.0, 1.0, 0.0], 2, "sample", rng).tolist() == [False, True, True, False]


def test_sampling_frequencies_match_sampling_without_replacement():
    rng = np.random.default_rng(1)
    # K=1, budgets [0.25, 0.75]: P(layer 1) = 0.75
    hits = sum(select_trained([0.25, 0.75], 1, "sample", rng)[1] for _ in range(4000))
    assert abs(hits / 4000 - 0.75) < 0.03
    # K=2 of budgets [1, 1, 2]: P(layer 2 in) = 1/2 + 2·(1/4)·(2/3) = 5/6, layers 0, 1: 7/12 each
    counts = sum(select_trained([1.0, 1.0, 2.0], 2, "sample", rng).astype(int) for _ in range(6000))
    np.testing.assert_allclose(counts / 6000, [7 / 12, 7 / 12, 5 / 6], atol=0.03)


def test_selection_errors_name_the_value_and_choices():
    with pytest.raises(UsageError, match="k=0: must be an integer in \\[1, 3\\]"):
        select_trained([1.0, 1.0, 1.0], 0)
    with pytest.raises(UsageError, match="selection='random': must be one of sample, topk"):
        select_trained([1.0, 1.0], 1, "random")
    with pytest.raises(UsageError, match="needs a numpy Generator"):
        select_trained([1.0, 1.0], 1, "sample", None)
    with pytest.raises(UsageError, match="at least one layer"):
        lowest_trained(np.zeros(3, dtype=bool))


# ---- allocation: waterfill and the non-increasing projection ---------------------------------

def test_waterfill_spreads_the_mean_by_share_and_saturates():
    # shares [0.5, 0.3, 0.2], mean 0.5 → sum 1.5: c = 1.5, nothing saturates
    np.testing.assert_allclose(waterfill([0.5, 0.3, 0.2], 0.5, 0.1), [0.75, 0.45, 0.3], rtol=1e-12)
    # mean 0.7 → sum 2.1: c = 2.1 would give layer 0 1.05, so it saturates at 1 and the other
    # two share 1.1: c·(0.3 + 0.2) = 1.1 → c = 2.2 → [1, 0.66, 0.44]
    np.testing.assert_allclose(waterfill([0.5, 0.3, 0.2], 0.7, 0.1), [1.0, 0.66, 0.44], rtol=1e-12)
    # the floor: shares [0.9, 0.1, 0.0] at mean 0.4 (sum 1.2): layer 2 sits at lo = 0.1, and
    # c·0.9 + c·0.1 = 1.1 → c = 1.1 → [0.99, 0.11, 0.1]
    np.testing.assert_allclose(waterfill([0.9, 0.1, 0.0], 0.4, 0.1), [0.99, 0.11, 0.1], rtol=1e-12)


def test_waterfill_limits_and_no_signal():
    np.testing.assert_array_equal(waterfill([0.2, 0.8], 1.0, 0.1), [1.0, 1.0])
    np.testing.assert_array_equal(waterfill([0.2, 0.8], 0.05, 0.1), [0.1, 0.1])  # below lo
    np.testing.assert_allclose(waterfill([0.0, 0.0], 0.5, 0.1), [0.5, 0.5])     # alike
    with pytest.raises(UsageError, match="numbers >= 0"):
        waterfill([0.5, -0.1], 0.5, 0.1)


def test_nonincreasing_pools_adjacent_violators_and_keeps_the_sum():
    np.testing.assert_allclose(nonincreasing([1.0, 0.2, 0.6, 0.1]), [1.0, 0.4, 0.4, 0.1])
    # [0.2, 0.6] pools to 0.4, then 0.4 < 0.7 pools again: (0.2 + 0.6 + 0.7)/3 = 0.5
    np.testing.assert_allclose(nonincreasing([1.0, 0.2, 0.6, 0.7]), [1.0, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(nonincreasing([0.1, 0.9]), [0.5, 0.5])
    np.testing.assert_array_equal(nonincreasing([0.9, 0.5, 0.5]), [0.9, 0.5, 0.5])  # already


# ---- the "relative" budget rule ------------------------------------------------------------

def test_class_token_norms_are_the_incoming_tokens_squared_norms():
    cls = np.array([[[3.0, 4.0], [0.0, 1.0]], [[0.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    np.testing.assert_allclose(class_token_norms(cls), [(25 + 1) / 2, (0 + 4) / 2])


def test_relative_importance_divides_by_the_incoming_norm():
    np.testing.assert_allclose(relative_importance([2.0, 3.0, 1.0], [4.0, 1.0, 0.0]), [0.5, 3.0, 0.0])


def test_relative_target_by_hand():
    # Δ = [4, 0.6, 0.2, 0.1], ‖CLS‖² = [8, 1, 1, 1] → r = [0.5, 0.6, 0.2, 0.1]. Layer 0 takes
    # in every token: b*_0 = 1. β = 0.5, L = 4: layers 1–3 share 4·0.5 − 1 = 1 in proportion
    # to r (sum 0.9): [2/3, 2/9, 1/9], inside [0.1, 1] and already non-increasing.
    t = relative_target([4.0, 0.6, 0.2, 0.1], [8.0, 1.0, 1.0, 1.0], 0.5, 0.1)
    np.testing.assert_allclose(t, [1, 2 / 3, 2 / 9, 1 / 9], rtol=1e-12)
    assert t.mean() == pytest.approx(0.5)
    # β = 0.75: layers 1–3 share 2; c·0.6 would pass 1, so layer 1 saturates and layers 2–3
    # share 1 in proportion to [0.2, 0.1]: [2/3, 1/3]
    t = relative_target([4.0, 0.6, 0.2, 0.1], [8.0, 1.0, 1.0, 1.0], 0.75, 0.1)
    np.testing.assert_allclose(t, [1, 1, 2 / 3, 1 / 3], rtol=1e-12)
    # a later layer more important than an earlier one: dropped tokens cannot come back, so
    # the projection pools them. L = 3, β = 0.5: layers 1–2 share 3·0.5 − 1 = 0.5 by
    # r_{1:} = [0.1, 0.8]: [0.056 → b_min 0.1, 0.4] → pooled (0.1 + 0.4)/2 = 0.25 each
    t = relative_target([1.0, 0.1, 0.8], [1.0, 1.0, 1.0], 0.5, 0.1)
    np.testing.assert_allclose(t, [1, 0.25, 0.25], rtol=1e-12)


def test_relative_rule_moves_alpha_of_the_way_to_the_target():
    rule = BUDGET_RULES.get("relative")(AlastConfig(alpha=0.25, b_min=0.1, token_budget=0.5))
    b = rule.update(np.ones(4), np.array([4.0, 0.6, 0.2, 0.1]), np.array([8.0, 1.0, 1.0, 1.0]))
    np.testing.assert_allclose(b, 1 + 0.25 * (np.array([1, 2 / 3, 2 / 9, 1 / 9]) - 1), rtol=1e-12)
    with pytest.raises(UsageError, match="needs the class-token norms"):
        rule.update(b, np.ones(4), None)


def test_relative_scheduler_converges_to_the_token_budget_and_keeps_first_layers():
    """The budgets settle at mean β, non-increasing, layer 0 at 1 (it sees every token)."""
    # CLS = 1, 4, 4.5, 5, 9: Δ = [9, 0.25, 0.25, 16], ‖CLS_{l−1}‖² = [1, 16, 20.25, 25]
    # → r_{1:} ≈ [0.016, 0.012, 0.64] share 4·0.5 − 1 = 1: layers 1–2 sit at b_min = 0.1,
    # layer 3 gets the rest, 0.8. Non-increasing: 0.1, 0.1, 0.8 pool to 1/3 each.
    s = AlastScheduler(AlastConfig(token_budget=0.5, n_train=2, seed=1), 4, 20)
    cls = (1.0 + cls_chain(3.0, 0.5, 0.5, 4.0))
    for _ in range(200):
        plan = s.step(cls)
    np.testing.assert_allclose(plan.budgets, [1.0, 1 / 3, 1 / 3, 1 / 3], atol=1e-6)
    assert plan.keep.tolist() == [7, 7, 7, 7]    # layers 1–3 take in ⌈20/3⌉ = 7 tokens


# ---- config ----------------------------------------------------------------------------------

def test_config_defaults_train_three_quarters_of_the_layers():
    cfg = AlastConfig()
    assert (cfg.selection, cfg.n_train, cfg.train_fraction) == ("sample", 0, 0.75)
    assert (cfg.rule, cfg.alpha, cfg.token_budget, cfg.b_min) == ("relative", 0.1, 0.5, 0.1)
    assert cfg.trained_layers(12) == 9     # ViT-B: 9 of 12
    assert cfg.trained_layers(6) == 5      # ⌈4.5⌉
    assert cfg.trained_layers(1) == 1
    assert AlastConfig(n_train=4).trained_layers(12) == 4


@pytest.mark.parametrize("kwargs,message", [
    ({"alpha": -0.1}, "AlastConfig.alpha=-0.1: must be a finite number in [0.0, inf]"),
    ({"b_min": 0.0}, "AlastConfig.b_min=0.0: must be a finite number in (0.0, 1.0]"),
    ({"b_min": 1.5}, "AlastConfig.b_min=1.5"),
    ({"train_fraction": 0}, "AlastConfig.train_fraction=0"),
    ({"selection": "top"}, "AlastConfig.selection='top': must be one of sample, topk"),
    ({"n_train": -1}, "AlastConfig.n_train=-1: must be an integer >= 0"),
    ({"rule": "papr"}, "AlastConfig.rule='papr': must be one of paper, relative"),
    ({"alpha": 1.5}, "AlastConfig.alpha=1.5: must be a finite number in [0.0, 1.0]"),
    ({"token_budget": 0.0}, "AlastConfig.token_budget=0.0: must be a finite number in (0.0, 1.0]"),
])
def test_config_rejects_bad_values_naming_field_value_and_range(kwargs, message):
    with pytest.raises(UsageError) as e:
        AlastConfig(**kwargs)
    assert message in str(e.value)


def test_config_n_train_above_layer_count_is_refused():
    with pytest.raises(UsageError, match="n_train=13: must be 0 \\(auto\\) or an integer in \\[1, 12\\]"):
        AlastConfig(n_train=13).trained_layers(12)


def test_config_from_cli_strings():
    cfg = from_strings(AlastConfig, ["alpha=0.01", "selection=topk", "n_train=3"])
    assert (cfg.alpha, cfg.selection, cfg.n_train) == (0.01, "topk", 3)
    with pytest.raises(UsageError, match="did you mean 'b_min'"):
        from_strings(AlastConfig, ["bmin=0.2"])


# ---- scheduler -------------------------------------------------------------------------------

def test_scheduler_hand_trace():
    """L=2, N=10, α=0.1, b_min=0.2, top-1; Δ_l = (layer l's increment)²."""
    s = AlastScheduler(AlastConfig(rule="paper", alpha=0.1, b_min=0.2, selection="topk", n_train=1), 2, 10)
    # before any step: budgets 1, all tokens, tie → the deeper layer trains
    assert (s.plan.keep.tolist(), s.plan.trained.tolist(), s.plan.lowest_trained) == (
        [10, 10], [False, True], 1)
    expected = [
        # increments, budgets,  keep (layer 1 takes in ⌈b_1·10⌉), trained
        ((1, 2), [1.0, 1.0], [10, 10], [False, True]),   # Δ=[1,4], no previous Δ: no move
        ((2, 1), [1.0, 0.7], [7, 7], [True, False]),     # ΔΔ=[3,−3]: [1.3→1, 0.7]
        ((0, 1), [0.6, 0.7], [7, 7], [False, True]),     # ΔΔ=[−4,0]
        ((0, 0), [0.6, 0.6], [6, 6], [False, True]),     # ΔΔ=[0,−1]; tie → deeper
        ((0, 3), [0.6, 1.0], [10, 10], [False, True]),   # ΔΔ=[0,9]: 1.5 → 1
        ((0, 0), [0.6, 0.2], [2, 2], [True, False]),     # ΔΔ=[0,−9]: −0.8 → b_min
    ]
    for i, (inc, budgets, keep, trained) in enumerate(expected, start=1):
        plan = s.step(cls_chain(*inc))
        np.testing.assert_allclose(plan.budgets, budgets, err_msg=f"step {i}")
        assert plan.keep.tolist() == keep, f"step {i}"
        assert plan.trained.tolist() == trained, f"step {i}"
        assert plan.lowest_trained == trained.index(True)
        assert plan.step == i
        np.testing.assert_allclose(plan.importance, np.square(inc))
    assert s.plan is plan


def test_scheduler_default_samples_nine_of_twelve():
    s = AlastScheduler(AlastConfig(), 12, 197)
    rng = np.random.default_rng(0)
    for _ in range(5):
        plan = s.step(rng.normal(size=(13, 4, 16)))
        assert plan.trained.sum() == 9
        assert plan.lowest_trained == int(np.flatnonzero(plan.trained)[0])
        assert plan.keep.shape == (12,) and plan.keep[0] <= 197
        assert np.all(np.diff(plan.keep) <= 0)
    assert plan.keep_for(50).tolist() == keep_counts(plan.budgets, 50).tolist()


def test_step_from_reduced_importance_matches_step_from_class_tokens():
    cfg = AlastConfig(rule="paper", alpha=0.1, b_min=0.2, selection="topk", n_train=1)
    a, b = AlastScheduler(cfg, 2, 10), AlastScheduler(cfg, 2, 10)
    for inc in [(1, 2), (2, 1), (0, 1)]:
        assert a.step(cls_chain(*inc)).to_dict() == b.step_importance(np.square(inc)).to_dict()
    assert b.plan.trained_layers == [1]
    with pytest.raises(UsageError, match="must be 2 finite numbers >= 0"):
        b.step_importance([1.0, -1.0])


def test_scheduler_rejects_class_tokens_of_the_wrong_depth():
    s = AlastScheduler(AlastConfig(), 4, 10)
    with pytest.raises(UsageError, match="n_layers\\+1=5"):
        s.step(np.zeros((4, 2, 8)))


@pytest.mark.parametrize("rule", ["paper", "relative"])
def test_state_dict_is_json_and_a_resumed_run_makes_the_same_decisions(rule):
    cfg = AlastConfig(rule=rule, alpha=0.05, b_min=0.2, seed=7)
    data = np.random.default_rng(3).normal(size=(8, 7, 2, 4))
    a = AlastScheduler(cfg, 6, 33)
    for x in data[:3]:
        a.step(x)
    saved = json.loads(json.dumps(a.state_dict()))
    assert saved["steps"] == 3 and saved["rng"]["bit_generator"] == "PCG64"
    assert not np.allclose(saved["budgets"], 1.0)   # the budgets did move: the test can fail

    b = AlastScheduler(AlastConfig(rule=rule, alpha=0.05, b_min=0.2, seed=7), 6, 33)
    b.load_state_dict(saved)
    assert b.plan.to_dict() == a.plan.to_dict()    # the plan in force survives the round trip
    for x in data[3:]:
        assert b.step(x).to_dict() == a.step(x).to_dict()


def test_load_state_dict_checks_model_and_config():
    saved = AlastScheduler(AlastConfig(alpha=0.05), 6, 33).state_dict()
    with pytest.raises(UsageError, match="n_layers=6: this model has 4"):
        AlastScheduler(AlastConfig(alpha=0.05), 4, 33).load_state_dict(saved)
    other = AlastScheduler(AlastConfig(alpha=0.01), 6, 33)
    with pytest.raises(UsageError, match="AlastConfig.alpha=0.05: this run has 0.01"):
        other.load_state_dict(saved)
    other.load_state_dict(saved, strict=False)
    assert other.steps == 0 and other.config.alpha == 0.01


def test_full_tail_keeps_every_token_in_the_last_steps():
    from edgetune.schedule import AlastPlanner

    cfg = AlastConfig(alpha=1.0, token_budget=0.4, b_min=0.2, full_tail=0.25)
    planner = AlastPlanner(3, 10, cfg, total_steps=8)  # ⌈0.25·8⌉ = 2: steps 7 and 8
    kept = []
    for _ in range(8):
        kept.append(planner.plan(10, 4).keep.tolist())
        planner.observe(np.array([1.0, 0.1, 0.01]), np.array([1.0, 1.0, 1.0]))
    assert all(min(k) < 10 for k in kept[1:6])  # the budgets drop tokens
    assert kept[6] == kept[7] == [10, 10, 10]
    assert min(AlastPlanner(3, 10, AlastConfig(alpha=1.0, token_budget=0.4)).plan(10, 4).keep) == 10
    with pytest.raises(UsageError, match="full_tail"):
        AlastConfig(full_tail=1.5)
