"""Device-resident runs (the CUDA path) against the host path, on any machine.

``Placement("cpu", resident=True)`` runs exactly what a GPU run runs — parameters, gradients
and AdamW moments as OrtValues bound with IO binding, gradients summed and parameters updated
by the bundle's ``accumulate`` and ``adamw`` graphs — on the CPU provider. It must follow the
host engine (numpy AdamW) step for step. With a CUDA build and a GPU the same comparison runs
on the GPU; without one it is skipped.

Tolerance: both sides run the same graphs on the same provider; they differ only in the
optimizer's arithmetic (one fused ORT kernel vs numpy's passes, ≤ a few u per update) and
in gradient sums, so after a few steps parameters agree to RTOL (tests/numerics.py) and the
losses of each step to the same bound.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")  # the bundles are exported here
from edgetune.export.onnx import export_mode  # noqa: E402
from edgetune.optim_config import AdamWConfig  # noqa: E402
from edgetune.runtime.ort_build import available_providers  # noqa: E402
from edgetune.runtime.placement import HOST, Placement  # noqa: E402
from edgetune.runtime.sessions import read_index  # noqa: E402
from edgetune.train.engines import AdaptiveEngine  # noqa: E402

from numerics import assert_close_normwise, gradient_floor  # noqa: E402

RESIDENT = [Placement("cpu", resident=True)] + (
    [Placement("cuda")] if "cuda" in available_providers() else [])


@pytest.fixture(scope="module", params=[("vit-micro", "lora"), ("bert-micro", "full")],
                ids=lambda p: "-".join(p))
def bundle(request, tmp_path_factory):
    """(adaptive folder, its index, tokens entering layer 1)."""
    name, method = request.param
    folder = export_mode(name, method, tmp_path_factory.mktemp("b") / "adaptive", num_classes=3)
    return folder, read_index(folder), 17 if name.startswith("vit") else 12


def _engine(bundle, cfg, placement=HOST):
    folder, index, _ = bundle
    return AdaptiveEngine(folder, index, optim=cfg, placement=placement)


def _batches(engine, rng) -> list[dict]:
    out = []
    for _ in range(3):
        if "pixel_values" in engine.runner.parts["stem"]["inputs"]:
            mb = {"pixel_values": rng.standard_normal((4, 3, 32, 32)).astype(np.float32)}
        else:
            mb = {"input_ids": rng.integers(5, 90, (4, 12)), "attention_mask": np.ones((4, 12), np.int64)}
        mb["labels"] = rng.integers(0, 3, 4)
        out.append(mb)
    return out


def _split(batch: dict) -> list[dict]:
    return [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]


@pytest.mark.parametrize("placement", RESIDENT, ids=lambda p: f"{p.provider}-resident")
def test_a_resident_run_follows_the_host_run(bundle, placement, tmp_path):
    cfg = AdamWConfig(lr=5e-3, weight_decay=0.01)
    host, dev = _engine(bundle, cfg), _engine(bundle, cfg, placement)
    n, L = bundle[2], host.num_layers
    plans = [(np.full(L, n), np.ones(L, bool)),                      # every layer and token
             (np.array([n, max(2, n // 2)]), np.array([False, True])),  # ALaST-like: freeze 0
             (np.array([n - 1, 2]), np.ones(L, bool))]
    for i, (mb, (keep, trained)) in enumerate(zip(_batches(host, np.random.default_rng(0)), plans)):
        micro = _split(mb) if i == 1 else [mb]  # micro-batches: gradients summed on the device
        a = host.train_step(micro, keep, trained, 5e-3)
        b = dev.train_step(micro, keep, trained, 5e-3)
        assert_close_normwise(b.loss, a.loss, f"loss step {i}")
        assert_close_normwise(b.cls_delta, a.cls_delta, f"cls_delta step {i}")
    # the class tokens were taken on the device (only B·D floats crossed per block)
    assert dev.runner.index["optimizer"]["class_token"] in dev.runner.sessions._sessions
    assert host.runner.index["optimizer"]["class_token"] not in host.runner.sessions._sessions
    got, want = dev.trainable_arrays(), host.trainable_arrays()
    assert sorted(got) == sorted(want)
    # BERT's key bias has an exactly-zero gradient (rounding noise on both sides): the floor
    floor = gradient_floor(want.values())
    for name in want:
        assert_close_normwise(got[name], want[name], name, atol=floor)
    # a device checkpoint is a host checkpoint: the host engine resumes from it
    dev.save(tmp_path)
    back = _engine(bundle, cfg)
    back.load(tmp_path)
    for name, value in back.trainable_arrays().items():
        np.testing.assert_array_equal(value, got[name])
    assert back.state.optimizer.t == dev.state.optimizer.t


@pytest.mark.parametrize("placement", RESIDENT, ids=lambda p: f"{p.provider}-resident")
def test_trainable_parameters_move_between_a_resident_and_a_host_engine(bundle, placement):
    """What a fleet's client does (train/exchange.py): the same state loaded into both, AdamW
    restarted, then one step each from there agrees."""
    cfg = AdamWConfig(lr=5e-3)
    host, dev = _engine(bundle, cfg), _engine(bundle, cfg, placement)
    n, L = bundle[2], host.num_layers
    keep, every = np.full(L, n), np.ones(L, bool)
    batches = _batches(host, np.random.default_rng(2))
    host.train_step([batches[0]], keep, every, 5e-3)  # each builds moments of its own
    dev.train_step([batches[1]], keep, every, 5e-3)
    state = host.trainable_arrays()
    assert set(dev.trainable_shapes().items()) == {(k, v.shape) for k, v in state.items()}
    for engine in (host, dev):
        engine.load_trainable(state, reset_optimizer=True)
    for name, value in dev.trainable_arrays().items():
        np.testing.assert_array_equal(value, state[name])
    assert set(dev.state.optimizer.t.values()) == {0}
    host.train_step([batches[2]], keep, every, 5e-3)
    dev.train_step([batches[2]], keep, every, 5e-3)
    got, want = dev.trainable_arrays(), host.trainable_arrays()
    floor = gradient_floor(want.values())  # as above: a step moves each entry by about lr
    for name in want:
        assert_close_normwise(got[name], want[name], name, atol=floor)
    assert not all(np.array_equal(got[name], state[name]) for name in state)  # it stepped


def test_device_adamw_is_the_numpy_update():
    """The adamw graph against train/optim.py's AdamW over 4 steps, one parameter skipping one."""
    import tempfile
    from pathlib import Path

    from edgetune.export.onnx.optim import write_optimizer
    from edgetune.runtime.device_optim import DeviceAdamW
    from edgetune.runtime.sessions import SessionCache
    from edgetune.train.optim import AdamW

    rng = np.random.default_rng(1)
    params = {"a": rng.standard_normal((5, 7)).astype(np.float32),
              "b": rng.standard_normal(11).astype(np.float32)}
    place = Placement("cpu", resident=True)
    cfg = AdamWConfig(lr=1e-2, weight_decay=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_optimizer(Path(tmp))
        values = {k: place.upload(v) for k, v in params.items()}
        dev = DeviceAdamW(values, list(params), cfg, SessionCache(tmp, placement=place), files, place)
        ref = AdamW({k: v.copy() for k, v in params.items()}, cfg)
        for step in range(4):
            grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
            if step == 2:
                del grads["b"]  # b sits this step out: its t and moments stay
            ref.step({k: g.copy() for k, g in grads.items()}, 1e-2)
            dev.step({k: place.upload(g) for k, g in grads.items()}, 1e-2)
        for k in params:
            assert_close_normwise(values[k].numpy(), ref.params[k], k)
            assert not np.array_equal(values[k].numpy(), params[k])  # it moved
        assert dev.t == ref.t == {"a": 4, "b": 3}
