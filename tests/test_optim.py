"""numpy AdamW against torch.optim.AdamW, and the learning-rate schedule by hand."""

import numpy as np
import pytest
import torch

from edgetune.optim_config import AdamWConfig
from edgetune.train.optim import AdamW, learning_rate

from numerics import U, assert_close_normwise


def test_adamw_matches_torch_without_eps_and_decay():
    """With ε = 0 and no decay, ONNX Runtime's (Hugging Face's) AdamW and torch's coincide."""
    rng = np.random.default_rng(0)
    init = {"w": rng.standard_normal((4, 3)).astype(np.float32),
            "b": rng.standard_normal(3).astype(np.float32)}
    ours = AdamW({k: v.copy() for k, v in init.items()}, AdamWConfig(lr=0.01, weight_decay=0.0, eps=1e-30))
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    ref = torch.optim.AdamW(list(tparams.values()), lr=0.01, weight_decay=0.0, eps=1e-30)
    steps = 5
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in init.items()}
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k])
        ref.step()
        ours.step(grads, lr=0.01)
    for k in init:
        # The displacement, not the parameter: init is the same on both sides and would hide an
        # error in the update. Each side rounds p to fp32 after each step (≤ u·|p|), so the floor
        # is 2·steps·u·rms(p) on top of the update's own rounding (RTOL).
        atol = 2 * steps * U * float(np.sqrt(np.mean(np.square(init[k], dtype=np.float64))))
        assert_close_normwise(ours.params[k] - init[k], tparams[k].detach().numpy() - init[k], k, atol=atol)


def test_one_step_by_hand_with_eps_and_decay():
    """t=1: m = 0.1 g, v = 0.001 g², step = lr·√0.001/0.1; decay after the update."""
    p = {"a": np.array([2.0], np.float32)}
    opt = AdamW(p, AdamWConfig(lr=0.1, eps=1e-2, weight_decay=0.5))
    opt.step({"a": np.array([3.0], np.float32)}, lr=0.1)
    moved = 2.0 - 0.1 * np.sqrt(0.001) / 0.1 * 0.3 / (np.sqrt(0.009) + 1e-2)
    np.testing.assert_allclose(p["a"], moved * (1 - 0.1 * 0.5), rtol=1e-6)


def test_a_parameter_sitting_out_keeps_its_state():
    p = {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)}
    opt = AdamW(p, AdamWConfig(lr=0.1, weight_decay=0.0))
    opt.step({"a": np.ones(2, np.float32)}, lr=0.1)
    assert opt.t == {"a": 1, "b": 0}
    np.testing.assert_array_equal(p["b"], 1.0)
    np.testing.assert_allclose(p["a"], 1.0 - 0.1, rtol=1e-4)  # first Adam step moves by ~lr


def test_state_round_trip():
    p = {"a": np.ones(2, np.float32)}
    opt = AdamW(p, AdamWConfig())
    opt.step({"a": np.full(2, 0.5, np.float32)}, lr=0.1)
    other = AdamW({"a": p["a"].copy()}, AdamWConfig())
    other.load_state_arrays(opt.state_arrays())
    opt.step({"a": np.ones(2, np.float32)}, lr=0.1)
    other.step({"a": np.ones(2, np.float32)}, lr=0.1)
    np.testing.assert_array_equal(other.params["a"], opt.params["a"])


@pytest.mark.parametrize("step, expected", [(0, 0.25), (3, 1.0), (4, 1.0), (8, 0.5), (12, 0.0)])
def test_warmup_then_cosine(step, expected):
    assert learning_rate(step, total=12, base_lr=1.0, warmup=4) == pytest.approx(expected)
