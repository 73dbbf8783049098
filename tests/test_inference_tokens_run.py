"""An ALaST run's token choice end to end, on any ONNX Runtime build: validation both ways, the
choice in the checkpoint, ``eval --tokens`` and the merged graph's ``token_budgets``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundles import micro_bundle
from click.testing import CliRunner
from test_train import synthetic_images

from edgetune.bundle import Bundle
from edgetune.cli import main
from edgetune.errors import EdgetuneError
from edgetune.merge import merge_run
from edgetune.schedule.alast import AlastConfig
from edgetune.train import TrainConfig, Trainer, load_data
from edgetune.train.evaluate import evaluate_path, token_count
from edgetune.train.inference_tokens import ALL, TRAINED, keep_for

from numerics import assert_close_normwise


def _alast_setup(d, steps: int, eval_every: int):
    """A vit-micro LoRA bundle, train and val data in ``d``, and an ALaST config with a fast
    budget rule, so its budgets drop tokens within a few steps."""
    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    train, val = (load_data(b, p) for p in (synthetic_images(d / "train.npz"),
                                             synthetic_images(d / "val.npz", n=48, seed=1)))
    config = TrainConfig(steps=steps, batch_size=16, lr=1e-2, schedule="alast", eval_every=eval_every,
                         alast=AlastConfig(alpha=1.0, token_budget=0.4, b_min=0.2))
    return b, train, val, config


@pytest.fixture(scope="module")
def alast_run(tmp_path_factory):
    """vit-micro LoRA, ALaST with a fast budget rule, so its budgets drop tokens within 6 steps."""
    d = tmp_path_factory.mktemp("tokens")
    b, train, val, config = _alast_setup(d, steps=6, eval_every=3)
    trainer = Trainer(b, train, val, config, out=d / "run")
    result = trainer.fit()
    return d, b, trainer, result, val


def _state(run, name="last"):
    pointer = json.loads((run / "checkpoints" / f"{name}.json").read_text())
    return json.loads((run / "checkpoints" / pointer["checkpoint"] / "state.json").read_text())


def test_validation_measures_both_ways_and_the_checkpoint_says_which(alast_run):
    d, b, trainer, result, val = alast_run
    choice = _state(d / "run")["inference"]
    n = int(b.manifest["tokens"])
    assert choice["budgets"] is not None
    assert keep_for(tuple(choice["budgets"]), n, len(choice["budgets"])).min() < n  # tokens drop
    acc = choice["val_accuracy"]
    assert choice["tokens"] == (TRAINED if acc[TRAINED] >= acc[ALL] else ALL)
    assert result.inference is not None
    assert result.inference.tokens == _state(d / "run", "best")["inference"]["tokens"]
    rows = [json.loads(x) for x in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    validated = [r for r in rows if "val_accuracy" in r]
    assert [r["step"] for r in validated] == [3, 6]
    assert all("val_accuracy_trained" in r and "inference_tokens" in r for r in validated)
    assert validated[-1]["val_accuracy_trained"] == acc[TRAINED]
    assert result.best_accuracy == max(max(r["val_accuracy"], r["val_accuracy_trained"]) for r in validated)


def test_eval_follows_the_run_or_the_flag(alast_run, tmp_path):
    d, b, trainer, _, val = alast_run
    choice = _state(d / "run", "best")["inference"]
    batch = val.batch(np.arange(len(val)))
    n = token_count(batch, b)
    for tokens in ("all", "trained"):
        res = evaluate_path(d / "run", d / "val.npz", tokens=tokens)
        keep = keep_for(None if tokens == "all" else tuple(choice["budgets"]), n, trainer.engine.num_layers)
        assert res["tokens"] == tokens
        assert res["keep"] == (None if tokens == "all" else keep.tolist())
    run_default = evaluate_path(d / "run", d / "val.npz")
    assert run_default["tokens"] == choice["tokens"]
    out = CliRunner().invoke(main, ["eval", str(d / "run"), "--data", str(d / "val.npz"),
                                    "--tokens", "trained", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["tokens"] == "trained"
    bad = CliRunner().invoke(main, ["eval", str(b.path), "--data", str(d / "val.npz"), "--tokens", "trained"])
    assert bad.exit_code != 0 and "no trained budgets" in bad.output


@pytest.mark.parametrize("tokens", ["all", "trained"])
def test_merged_graph_drops_tokens_as_the_engine_does(alast_run, tokens):
    import onnxruntime

    d, b, trainer, _, val = alast_run
    out = merge_run(d / "run", checkpoint="last", out=d / f"merged-{tokens}", tokens=tokens)
    info = json.loads((out / "merged.json").read_text())
    assert info["tokens"] == tokens
    budgets = None if tokens == "all" else tuple(_state(d / "run")["inference"]["budgets"])
    assert info["token_budgets"] == (None if budgets is None else list(budgets))
    batch = val.batch(np.arange(len(val)))
    session = onnxruntime.InferenceSession(str(out / "inference.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"pixel_values": batch["pixel_values"]})[0]
    keep = keep_for(budgets, token_count(batch, b), trainer.engine.num_layers)
    assert_close_normwise(got, trainer.engine.predict(batch, keep), f"merged ({tokens}) vs the engine")
    if budgets is not None:  # and it is not the every-token model: dropping changed the logits
        every = trainer.engine.predict(batch, keep_for(None, token_count(batch, b), len(keep)))
        assert not np.allclose(got, every, rtol=1e-3, atol=1e-4)


def test_static_run_has_no_budgets_to_keep(tmp_path):
    b = Bundle.open(micro_bundle("vit-micro", "full", num_classes=2))
    train = load_data(b, synthetic_images(tmp_path / "train.npz"))
    Trainer(b, train, train, TrainConfig(steps=2, batch_size=16), out=tmp_path / "run").fit()
    assert _state(tmp_path / "run")["inference"]["tokens"] == ALL
    with pytest.raises(EdgetuneError, match="trained on every token"):
        merge_run(tmp_path / "run", tokens="trained")


def test_trainer_api_evaluates_either_way_and_reports_the_best_checkpoints_choice(alast_run):
    d, b, trainer, result, val = alast_run
    best = _state(d / "run", "best")["inference"]
    assert result.inference is not None and result.inference.to_dict() == best
    every, trained = trainer.evaluate(val, tokens="all"), trainer.evaluate(val, tokens="trained")
    assert trainer.evaluate(val)["accuracy"] == (trained if trainer.choice.tokens == TRAINED
                                                 else every)["accuracy"]
    last = _state(d / "run")["inference"]
    assert trained["accuracy"] == last["val_accuracy"][TRAINED]  # val is the validation split


def test_merge_follows_the_best_checkpoints_choice(alast_run):
    d, b, trainer, _, val = alast_run
    out = merge_run(d / "run", out=d / "merged-run")
    best = _state(d / "run", "best")["inference"]
    assert json.loads((out / "merged.json").read_text())["tokens"] == best["tokens"]


def test_resume_keeps_the_choice(tmp_path):
    b, train, val, config = _alast_setup(tmp_path, steps=4, eval_every=2)
    first = Trainer(b, train, val, config, out=tmp_path / "run")
    first.total_steps = 2  # stop half way, as an interrupted run does
    first.fit()
    resumed = Trainer(b, train, val, config, out=tmp_path / "run", resume=True)
    assert resumed.step == 2
    assert resumed.choice == first.choice and resumed.best_choice == first.best_choice
    assert resumed.best_accuracy == first.best_accuracy


def test_full_tail_trains_the_last_steps_on_every_token(tmp_path):
    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    train = load_data(b, synthetic_images(tmp_path / "train.npz"))
    config = TrainConfig(steps=6, batch_size=16, lr=1e-2, schedule="alast",
                         alast=AlastConfig(alpha=1.0, token_budget=0.4, b_min=0.2, full_tail=0.34))
    Trainer(b, train, None, config, out=tmp_path / "run").fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    n = int(b.manifest["tokens"])
    assert min(rows[2]["tokens_kept"]) < n  # ⌈0.34·6⌉ = 3 tail steps: 4, 5, 6
    assert all(r["tokens_kept"] == [n] * len(r["tokens_kept"]) for r in rows[3:])
    reason = _state(tmp_path / "run")["inference"]["reason"]  # 96 examples: too few to hold out
    assert "too few to hold out 10% by default" in reason and "rule measured for image" in reason


def test_a_bundle_from_before_token_budgets_merges_at_every_token():
    from edgetune.merge import _graph_budgets

    index = {"model": {"tensors": {"head.weight": {}}}}
    notes: list[str] = []
    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    assert _graph_budgets(index, (1.0, 0.5), "run", b, notes.append) is None
    assert "keeps every token" in notes[0]
    with pytest.raises(EdgetuneError, match="re-export the bundle to merge with --tokens trained"):
        _graph_budgets(index, (1.0, 0.5), "trained", b, notes.append)
    index["model"]["tensors"]["token_budgets"] = {}
    assert _graph_budgets(index, (1.0, 0.5), "run", b, notes.append) == (1.0, 0.5)


def _alast_config(**kw) -> TrainConfig:
    return TrainConfig(steps=4, batch_size=16, lr=1e-2, schedule="alast", eval_every=2,
                       alast=AlastConfig(alpha=1.0, token_budget=0.4, b_min=0.2), **kw)


def test_without_val_an_alast_run_decides_on_a_held_out_slice_it_never_trains_on(tmp_path):
    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    data = load_data(b, synthetic_images(tmp_path / "train.npz", n=240))
    trainer = Trainer(b, data, None, _alast_config(), out=tmp_path / "run")
    held, rest = trainer.val_data, trainer.train_data
    assert len(held) == 24 and len(rest) == 216 and trainer.sampler.n == 216
    assert not set(held.indices.tolist()) & set(rest.indices.tolist())
    trainer.fit()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["held_out"] == {"fraction": 0.1, "examples": 24, "of": 240}
    assert info["data"]["samples"] == 216 and info["val"]["samples"] == 24
    choice = _state(tmp_path / "run")["inference"]
    assert choice["val_accuracy"] is not None and choice["reason"].startswith("validation")
    a = trainer.evaluate(held)  # the same split again from the same seed
    assert a["count"] == 24


def test_a_static_run_holds_nothing_out_unless_asked(tmp_path):
    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    data = load_data(b, synthetic_images(tmp_path / "train.npz", n=240))
    plain = Trainer(b, data, None, TrainConfig(steps=1, batch_size=16))
    assert plain.val_data is None and len(plain.train_data) == 240
    asked = Trainer(b, data, None, TrainConfig(steps=1, batch_size=16, val_split=0.25))
    assert len(asked.val_data) == 60 and len(asked.train_data) == 180
    given = Trainer(b, data, data, _alast_config())  # with --val nothing is held out
    assert given.val_data is data and given.train_data is data


@pytest.mark.parametrize("model,kind,tokens", [("vit-micro", "image", TRAINED), ("bert-micro", "text", ALL)])
def test_opting_out_follows_the_rule_measured_for_the_input_kind(tmp_path, model, kind, tokens):
    from bundles import micro_tokenizer

    text = {"max_tokens": 12, "tokenizer": str(micro_tokenizer())} if kind == "text" else {}
    b = Bundle.open(micro_bundle(model, "lora", num_classes=2, mode="adaptive", **text))
    if kind == "text":
        rows = [f"{'good fine' if i % 2 else 'bad poor'} film {i},{i % 2}" for i in range(64)]
        (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
        data = load_data(b, tmp_path / "train.csv")
    else:
        data = load_data(b, synthetic_images(tmp_path / "train.npz", n=64))
    trainer = Trainer(b, data, None, _alast_config(val_split=0.0), out=tmp_path / "run")
    assert trainer.val_data is None
    trainer.fit()
    choice = _state(tmp_path / "run")["inference"]
    assert choice["budgets"] is not None and choice["val_accuracy"] is None
    assert choice["tokens"] == tokens
    assert choice["reason"].startswith("no validation data (--val-split 0)") and kind in choice["reason"]


@pytest.mark.parametrize("value", [0.6, -0.1, float("nan")])
def test_val_split_is_checked_on_construction(value):
    from edgetune.errors import UsageError

    with pytest.raises(UsageError, match=r"TrainConfig.val_split=.*must be a finite number in \[0.0, 0.5\]"):
        TrainConfig(steps=1, val_split=value)


def patch_images(path, n, seed, strength=200.0):
    """Class 1: one bright 8×8 patch at a random place on noise; class 0: noise only. Trained
    at a low token budget, the model learns from the few tokens it keeps (the patch ranks
    first by the class token's attention) and every-token inference dilutes that signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    x = rng.integers(0, 120, (n, 32, 32, 3)).astype(np.float32)
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, 4, 2)
        x[i, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += strength
    np.savez(path, x=np.clip(x, 0, 255).astype(np.uint8), y=y)
    return path


def test_without_val_the_default_split_picks_the_trained_budgets_where_every_token_is_worse(tmp_path):
    """Measured on this task (seeds 0–2): the held-out slice scores 100 % at the trained
    budgets and 48 % (chance) at every token; the test asks for a 20-point gap, so a CPU
    whose sums round elsewhere cannot flip it."""
    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    data = load_data(b, patch_images(tmp_path / "train.npz", 400, 0))
    config = TrainConfig(steps=30, batch_size=16, lr=1e-2, schedule="alast",
                         alast=AlastConfig(alpha=1.0, token_budget=0.25, b_min=0.1))
    trainer = Trainer(b, data, None, config, out=tmp_path / "run")
    assert len(trainer.val_data) == 40  # the default 10 %, never trained on
    result = trainer.fit()
    choice = result.inference
    assert choice is not None and choice.tokens == TRAINED and choice.val_accuracy is not None
    assert choice.val_accuracy[TRAINED] >= choice.val_accuracy[ALL] + 0.2
    test = patch_images(tmp_path / "test.npz", 200, 2)
    assert evaluate_path(tmp_path / "run", test)["tokens"] == TRAINED  # eval follows it


def test_val_split_with_val_data_is_refused(tmp_path):
    from edgetune.errors import UsageError

    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    data = load_data(b, synthetic_images(tmp_path / "train.npz", n=64))
    with pytest.raises(UsageError, match=r"val_split=0.2: validation data is given \(--val\)"):
        Trainer(b, data, data, TrainConfig(steps=1, batch_size=16, val_split=0.2))
