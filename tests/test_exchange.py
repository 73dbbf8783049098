"""The trainable parameters a Trainer hands out and takes in (train/exchange.py), what a
fleet's clients send: only the trainable ones, copies both ways, a mismatched state refused
whole, AdamW's state kept or reset, rounds of ``fit(steps=k)`` on one Trainer, and FedAvg over
two clients. Both engines; the static one where the training build is installed."""

import json

import numpy as np
import pytest
from bundles import micro_bundle
from test_train import synthetic_images

from edgetune.bundle import Bundle
from edgetune.errors import UsageError
from edgetune.train import TrainConfig, Trainer, load_data

from conftest import training_api
from numerics import RTOL, U, assert_close_normwise

MODES = [pytest.param("adaptive", id="adaptive"), pytest.param("static", marks=training_api, id="static")]


@pytest.fixture(scope="module")
def lora():
    return Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("exchange")
    return synthetic_images(d / "train.npz", n=128), synthetic_images(d / "val.npz", n=64, seed=1)


def trainer(bundle, images, mode, steps=4, **config):
    cfg = dict(steps=steps, batch_size=16, lr=5e-3, threads=1, mode=mode, schedule="static")
    return Trainer(bundle, load_data(bundle, images[0]), config=TrainConfig(**{**cfg, **config}))


def equal(a, b):
    return list(a) == list(b) and all(np.array_equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("mode", MODES)
def test_only_the_trainable_parameters_travel_and_come_back(lora, images, mode):
    a = trainer(lora, images, mode)
    before = a.trainable_state_dict()
    assert list(before) == a.trainable_names == a.engine.trainable   # the bundle's order
    assert sum(v.size for v in before.values()) == lora.manifest["params"]["trainable"]
    assert all(v.dtype == np.float32 for v in before.values())
    a.fit()
    after = a.trainable_state_dict()
    assert not equal(before, after)                                  # trained, and `before` a copy
    after[next(iter(after))] += 1.0                                  # a copy the other way too
    assert not equal(after, a.trainable_state_dict())
    after = a.trainable_state_dict()

    b = trainer(lora, images, mode)
    b.load_trainable_state_dict({n: v.astype(np.float64) for n, v in after.items()})  # any float dtype
    assert equal(b.trainable_state_dict(), after)
    val = load_data(lora, images[1])
    ea, eb = a.evaluate(val), b.evaluate(val)
    # the same parameters in the same graphs: only the sessions differ
    assert eb["accuracy"] == ea["accuracy"] and eb["loss"] == pytest.approx(ea["loss"], rel=RTOL)


@pytest.mark.parametrize("mode", MODES)
def test_a_state_that_does_not_match_the_bundle_is_refused_whole(lora, images, mode):
    t = trainer(lora, images, mode)
    good = t.trainable_state_dict()
    names = list(good)
    last = names[-1]
    cases = [
        ([1, 2], "expected a mapping"),
        ({n: good[n] for n in names[1:]}, f"lacks 1 of the bundle's {len(names)} trainable"),
        ({**good, "blocks.0.attn.qkv.weight": good[last]}, "does not train.*frozen parameters never travel"),
        ({**good, last: good[last][..., :1]}, f"'{last}': shape"),
        ({**good, last: good[last].astype(np.int64)}, f"'{last}': dtype int64"),
        ({**good, last: np.where(np.arange(good[last].size).reshape(good[last].shape) == 0, np.nan,
                                 good[last])}, f"'{last}': 1 of {good[last].size} values are not finite"),
    ]
    shifted = {n: v + 1.0 for n, v in good.items()}
    for state, message in cases:
        if isinstance(state, dict):  # every other entry would change the parameters
            state = {n: (state[n] if n == last or n not in shifted else shifted[n]) for n in state}
        with pytest.raises(UsageError, match=message):
            t.load_trainable_state_dict(state)
        assert equal(t.trainable_state_dict(), good)                  # nothing changed


@pytest.mark.parametrize("mode", MODES)
def test_reset_optimizer_restarts_adamw_and_the_default_keeps_it(lora, images, mode):
    """After a reset the next update is a fresh optimizer's (first-step AdamW); without one, the
    moments the trainer built carry into it."""
    trained = trainer(lora, images, mode)
    trained.fit()
    start = trained.trainable_state_dict()
    batch = [load_data(lora, images[0]).batch(np.arange(16))]
    L = trained.engine.num_layers
    keep, every = np.full(L, int(lora.manifest["tokens"])), np.ones(L, bool)

    def update(t, reset):
        t.load_trainable_state_dict(start, reset_optimizer=reset)
        t.engine.train_step(batch, keep, every, 1e-3)
        return t.trainable_state_dict()

    fresh = update(trainer(lora, images, mode), False)
    kept = update(trained, False)   # the moments of its four steps carry in
    reset = update(trained, True)
    for n in start:  # one first AdamW step from the same parameters and gradients; the
        # displacement, whose floor is each side's rounding of p (test_optim.py)
        atol = 2 * U * float(np.sqrt(np.mean(np.square(start[n], dtype=np.float64))))
        assert_close_normwise(reset[n] - start[n], fresh[n] - start[n], n, atol=atol)
    diff = sum(float(np.abs(kept[n] - fresh[n]).sum()) for n in start)
    scale = sum(float(np.abs(fresh[n] - start[n]).sum()) for n in start)
    assert diff > 0.01 * scale, (diff, scale)  # a first step moves every entry by about lr


def test_rounds_of_fit_on_one_trainer_are_one_run(lora, images):
    """fit(steps=2) three times is fit() once: the schedule spans the run, not the call."""
    whole = trainer(lora, images, "adaptive", steps=6, warmup=2)
    whole.fit()
    rounds = trainer(lora, images, "adaptive", steps=6, warmup=2)
    results = [rounds.fit(steps=2) for _ in range(3)]
    assert [r.steps for r in results] == [2, 4, 6] and all(r.steps_run == 2 for r in results)
    want, got = whole.trainable_state_dict(), rounds.trainable_state_dict()
    for n in want:
        assert_close_normwise(got[n], want[n], n)
    assert rounds.fit(steps=5).steps_run == 0                        # never past total_steps
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match=r"steps=.*must be an integer >= 1"):
            rounds.fit(steps=bad)


def test_fedavg_over_two_clients_learns(lora, images):
    """Two clients on disjoint halves, three rounds of: take the global state, two local steps,
    send the trainable parameters back; the server averages them (FedAvg, McMahan et al. 2017)."""
    data, val = load_data(lora, images[0]), load_data(lora, images[1])
    cfg = TrainConfig(steps=6, batch_size=16, lr=5e-3, threads=1, mode="adaptive", schedule="static")
    clients = [Trainer(lora, data.subset(np.arange(i, len(data), 2)), config=cfg) for i in range(2)]
    server = Trainer(lora, data, config=cfg)                          # evaluates the global state
    start = server.evaluate(val)
    state = server.trainable_state_dict()
    for _ in range(3):
        sent = []
        for c in clients:
            c.load_trainable_state_dict(state)
            assert equal(c.trainable_state_dict(), state)
            c.fit(steps=2)
            sent.append(c.trainable_state_dict())
        state = {n: (sent[0][n] + sent[1][n]) / 2 for n in state}
    server.load_trainable_state_dict(state)
    end = server.evaluate(val)
    assert end["loss"] < 0.8 * start["loss"], (start, end)
    assert end["accuracy"] >= 0.8, end


def test_the_engines_check_a_state_themselves(lora, images):
    engine = trainer(lora, images, "adaptive").engine
    good = engine.trainable_arrays()
    name = next(iter(good))
    with pytest.raises(UsageError, match=f"'{name}': shape"):
        engine.load_trainable({**good, name: good[name].ravel()[:1]})   # not broadcast into place
    assert equal(engine.trainable_arrays(), good)


def test_rounds_in_a_run_folder(lora, images, tmp_path):
    """Rounds write one metrics row per step and a "last" checkpoint per round; a state loaded
    at a step already checkpointed is a new revision of it, never the old folder; the best
    is set afresh after a load; a resumed run keeps counting revisions."""
    val = load_data(lora, images[1])
    cfg = TrainConfig(steps=4, batch_size=16, lr=5e-3, threads=1, mode="adaptive", eval_every=2)
    run = tmp_path / "run"

    def pointed():
        return json.loads((run / "checkpoints" / "last.json").read_text())["checkpoint"]

    t = Trainer(lora, load_data(lora, images[0]), val, cfg, out=run)
    t.fit(steps=2)
    assert pointed() == "step-00000002"
    t.fit(steps=2)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and pointed() == "step-00000004"
    assert t.best_accuracy is not None

    shifted = {n: v + 0.01 for n, v in t.trainable_state_dict().items()}
    t.load_trainable_state_dict(shifted)
    assert t.best_accuracy is None                   # the best so far scored other parameters
    assert t.fit().steps_run == 0                    # at total_steps: checkpoints the new state
    assert pointed() == "step-00000004-r1"
    from edgetune.train.engines import AdaptiveEngine
    assert equal(AdaptiveEngine.read_trained(run / "checkpoints" / "step-00000004-r1"), shifted)
    # the old best scored other parameters: its pointer went, so eval (best) falls back to last
    assert not (run / "checkpoints" / "best.json").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["step-00000004-r1"]
    from edgetune.train.evaluate import evaluate_path
    assert "step-00000004-r1" in evaluate_path(run, images[1])["source"]
    state = json.loads((run / "checkpoints" / "step-00000004-r1" / "state.json").read_text())
    assert state["inference"]["val_accuracy"] is None and state["best_accuracy"] is None

    resumed = Trainer(lora, load_data(lora, images[0]), val, cfg, out=run, resume=True)
    assert resumed.step == 4 and equal(resumed.trainable_state_dict(), shifted)
    assert resumed.best_accuracy is None and resumed.best_choice is None
    resumed.load_trainable_state_dict(t.trainable_state_dict())
    resumed.fit()
    assert pointed() == "step-00000004-r2"
    names = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert "step-00000004-r1" not in names           # pruned: no pointer names it


def test_a_fit_that_runs_no_step_writes_no_second_checkpoint(lora, images, tmp_path, monkeypatch):
    from edgetune.train.checkpoint import CheckpointStore

    cfg = TrainConfig(steps=2, batch_size=16, lr=5e-3, threads=1, mode="adaptive")
    t = Trainer(lora, load_data(lora, images[0]), config=cfg, out=tmp_path / "run")
    t.fit()
    writes, real = [], CheckpointStore.save

    def save(self, step, *args, **kwargs):
        writes.append(step)
        return real(self, step, *args, **kwargs)

    monkeypatch.setattr(CheckpointStore, "save", save)
    assert t.fit().steps_run == 0 and t.fit(steps=3).steps_run == 0
    assert writes == []                              # step 2 is checkpointed already
    t.load_trainable_state_dict(t.trainable_state_dict())
    t.fit()
    assert writes == [2]                             # a new revision of step 2
