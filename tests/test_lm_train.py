"""Language models on the device: JSONL text → next-token targets, an adaptive bundle of a micro
LLaMA trained torch-free on stock onnxruntime, and its step against torch autograd.

- data: ``text`` rows learn every next token, ``prompt`` + ``completion`` rows only the
  completion's (and the EOS); bad rows are one line naming the row;
- a step of every method on llama-micro (and qwen2-micro's biases): loss, logits, ALaST's
  per-layer signal and every gradient equal torch's, norm-wise at the suite's fp32 bound
  (tests/numerics.py), with padded (−100) positions and a batch and length unlike the trace's;
  the tied embedding under full fine-tuning gets the sum of the stem's and the head's gradients;
- training: loss and perplexity fall; ALaST keeps every token and chooses layers; resumable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bundles import micro_bundle

from edgetune.bundle import Bundle
from edgetune.data import DataError, LMSpec, build_bpe_tokenizer, load_dataset
from edgetune.errors import UsageError
from edgetune.targets import IGNORE

WORDS = "the cat dog sat on mat ran to park a big small red blue house tree and".split()


def corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 16)))) for _ in range(n)]


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    """A BPE tokenizer (512 ids, end token 0), train / val text and prompt-completion files."""
    d = tmp_path_factory.mktemp("lm")
    build_bpe_tokenizer(corpus(300, 0), d / "tokenizer.json", 512)
    for name, texts in (("train", corpus(240, 1)), ("val", corpus(60, 2))):
        (d / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    pairs = [{"prompt": f"Q: {t.split()[0]}", "completion": " " + t} for t in corpus(40, 3)]
    (d / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return d


def spec(files: Path, **kw) -> LMSpec:
    return LMSpec(tokenizer_path=files / "tokenizer.json", eos_id=0, **{"max_length": 64, **kw})


# ---- data ---------------------------------------------------------------------------------
def test_text_rows_learn_every_next_token(lm_files):
    ds = load_dataset(lm_files / "train.jsonl", spec(lm_files))
    b = ds.batch(np.arange(4))
    ids, labels = b["input_ids"], b["labels"]
    assert ids.shape == labels.shape and ids.shape[1] == ds.lengths[:4].max()
    for row in range(4):
        n = int(ds.lengths[row])
        assert ids[row, n - 1] == 0                                  # EOS closes the row
        np.testing.assert_array_equal(labels[row, :n - 1], ids[row, 1:n])
        assert (labels[row, n - 1:] == IGNORE).all()                 # last position, padding


def test_prompt_completion_rows_learn_the_completion_only(lm_files):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(lm_files / "tokenizer.json"))
    ds = load_dataset(lm_files / "pairs.jsonl", spec(lm_files))
    row = json.loads((lm_files / "pairs.jsonl").read_text().splitlines()[0])
    prompt = tok.encode(row["prompt"]).ids
    completion = tok.encode(row["completion"], add_special_tokens=False).ids + [0]
    b = ds.batch([0])
    n = len(prompt) + len(completion)
    np.testing.assert_array_equal(b["input_ids"][0, :n], prompt + completion)
    learned = b["labels"][0]
    assert (learned[:len(prompt) - 1] == IGNORE).all()
    np.testing.assert_array_equal(learned[len(prompt) - 1:n - 1], completion)
    assert ds.targets == sum(int((ds.labels[i] != IGNORE).sum()) for i in range(len(ds)))


def test_packing_fills_every_row_and_learns_every_token_once(lm_files):
    plain = load_dataset(lm_files / "train.jsonl", spec(lm_files))
    packed = load_dataset(lm_files / "train.jsonl", spec(lm_files, max_length=32, pack=True))
    total = int(plain.lengths.sum())  # every text's tokens and its EOS
    assert (packed.lengths[:-1] == 32).all() and packed.ids.shape[1] == 32
    assert packed.targets == total - 1  # all but the very first token, each once
    with pytest.raises(DataError, match="pack applies to text rows"):
        load_dataset(lm_files / "pairs.jsonl", spec(lm_files, pack=True))


def test_packing_fills_every_row_when_rows_outnumber_the_lines(lm_files, tmp_path):
    """One long text packs into many rows: each is filled, not only as many as there are lines."""
    text = " ".join(corpus(40, 5))
    (tmp_path / "long.jsonl").write_text(json.dumps({"text": text}) + "\n")
    packed = load_dataset(tmp_path / "long.jsonl", spec(lm_files, max_length=16, pack=True))
    assert len(packed) > 2 and (packed.lengths[:-1] == 16).all() and packed.lengths[-1] >= 2


def test_max_length_cuts_rows(lm_files):
    ds = load_dataset(lm_files / "train.jsonl", spec(lm_files, max_length=6))
    assert ds.ids.shape[1] == 6 and ds.lengths.max() == 6


@pytest.mark.parametrize("rows, problem", [
    ([{"txt": "a b"}], "no 'text' column, nor 'prompt' + 'completion'"),
    ([{"text": "the cat"}, {"text": 3}], "line 2: text 'text' is 3, not a string"),
    ([{"text": "the cat"}, {"text": "  "}], "line 2: empty text"),
    ([{"prompt": "Q:", "completion": ""}], "line 1: empty completion"),
    ([{"prompt": "the cat sat on the mat " * 20, "completion": " a"}], "line 1: the prompt's"),
])
def test_bad_rows_are_one_line_naming_the_row(lm_files, tmp_path, rows, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as e:
        load_dataset(path, spec(lm_files, max_length=16))
    assert problem in str(e.value) and "\n" not in str(e.value)


# ---- a step against torch ------------------------------------------------------------------
STEP_CASES = [("llama-micro", m) for m in ("lora", "full", "ia3", "adapter", "propulsion", "prefix",
                                             "prompt")] + [("qwen2-micro", m) for m in ("lora", "bitfit")] \
    + [("gpt2-micro", m) for m in ("lora", "full", "ia3", "prefix", "prompt")]


@pytest.mark.parametrize("name, method", STEP_CASES, ids=[f"{n}-{m}" for n, m in STEP_CASES])
def test_step_matches_torch(name, method, tmp_path):
    torch = pytest.importorskip("torch")
    from edgetune.export.onnx import export_mode, prepare_model
    from edgetune.export.peft import trainable_names
    from edgetune.runtime import AdaptiveRunner
    from edgetune.schedule.alast.importance import class_token_delta

    from export_cases import assert_close, gradient_atol, rtol_for

    model = prepare_model(name, method, seed=0)
    with torch.no_grad():  # move the identity-at-init parameters so their gradients are generic
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    runner = AdaptiveRunner(export_mode(model, None, tmp_path / "bundle"))
    assert "keep" not in runner.parts["block_00"]["inputs"]  # a language model drops no tokens
    rtol = rtol_for(model)
    for batch, seq in ((1, 20), (3, 11)):  # both unlike the trace's (2, 16)
        torch.manual_seed(seq)
        ids = torch.randint(0, model.vocab_size, (batch, seq))
        labels = torch.randint(0, model.vocab_size, (batch, seq))
        labels[0, seq // 2:] = IGNORE  # a padded tail
        model.zero_grad()
        out = model.forward_features(ids)
        loss = model.loss(out.logits, labels)
        loss.backward()
        params = dict(model.named_parameters())
        grads = {n: params[n].grad.numpy() for n in trainable_names(model)}
        summary = np.stack([s.detach().numpy() for s in out.cls_tokens])
        res = runner.step([ids.numpy()], labels.numpy(), [ids.shape[1] + 0] * model.num_layers)
        where = f"batch={batch} seq={seq}"
        assert_close(res.loss, loss.item(), f"loss {where}", rtol)
        assert_close(res.logits, out.logits.detach().numpy(), f"logits {where}", rtol)
        assert_close(res.cls_delta, class_token_delta(summary[:-1], summary[1:]), f"delta {where}", rtol)
        assert sorted(res.grads) == sorted(grads)
        atol = gradient_atol(grads)
        for n, g in grads.items():
            assert_close(res.grads[n], g, f"{n} {where}", rtol, atol)


def test_bitfit_needs_biases():
    pytest.importorskip("torch")
    from edgetune.export.onnx import prepare_model

    with pytest.raises(UsageError, match="no biases"):
        prepare_model("llama-micro", "bitfit")


def test_language_models_export_adaptive_only(lm_files, tmp_path):
    pytest.importorskip("torch")
    from edgetune.export import export_bundle

    with pytest.raises(UsageError, match="mode adaptive"):
        export_bundle("llama-micro", "lora", tmp_path / "b", mode="static",
                      tokenizer=lm_files / "tokenizer.json")
    with pytest.raises(UsageError, match="has no classes"):
        export_bundle("llama-micro", "lora", tmp_path / "b", num_classes=3,
                      tokenizer=lm_files / "tokenizer.json")
    assert not (tmp_path / "b").exists()


# ---- training on the device ------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm_bundle(lm_files):
    return Bundle.open(micro_bundle("llama-micro", "lora", tokenizer=str(lm_files / "tokenizer.json"),
                                    max_tokens=64))


def test_bundle_describes_a_language_model(lm_bundle):
    assert lm_bundle.task == "causal_lm" and not lm_bundle.drops_tokens
    assert lm_bundle.modes == ["adaptive"]
    assert lm_bundle.inputs["eos_ids"] == [0]
    with pytest.raises(UsageError, match="no classes"):
        _ = lm_bundle.num_classes


@pytest.mark.parametrize("schedule", ["static", "alast"])
def test_training_lowers_perplexity(lm_bundle, lm_files, tmp_path, schedule):
    from edgetune.train import load_data
    from edgetune.train.config import TrainConfig
    from edgetune.train.trainer import Trainer

    train, val = load_data(lm_bundle, lm_files / "train.jsonl"), load_data(lm_bundle, lm_files / "val.jsonl")
    from edgetune.schedule.alast import AlastConfig

    cfg = TrainConfig(steps=40, batch_size=16, lr=5e-3, schedule=schedule, eval_every=40,
                      alast=AlastConfig(n_train=1))
    t = Trainer(lm_bundle, train, val, cfg, out=tmp_path / "run")
    before = t.evaluate(val)
    t.fit()
    after = t.evaluate(val)
    assert after["loss"] < before["loss"] - 0.1
    assert after["perplexity"] == pytest.approx(np.exp(after["loss"]), rel=1e-6)
    assert after["count"] == val.targets
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "tokens_kept" in r]
    assert len(steps) == 40
    assert all(k == r["tokens"] for r in steps for k in r["tokens_kept"])  # every token, always
    assert all(r["targets"] > 0 and r["perplexity"] > 1 for r in steps)
    if schedule == "alast":  # ALaST chose one layer a step, by its budgets
        assert all(len(r["layers_trained"]) == 1 for r in steps)
        assert len({r["layers_trained"][0] for r in steps}) == 2
        assert all("budgets" not in r for r in steps)  # no token budgets for inference


def test_training_resumes(lm_bundle, lm_files, tmp_path):
    from edgetune.train import load_data
    from edgetune.train.config import TrainConfig
    from edgetune.train.trainer import Trainer

    train = load_data(lm_bundle, lm_files / "train.jsonl")
    cfg = TrainConfig(steps=6, batch_size=8, lr=5e-3, checkpoint_every=3)
    whole = Trainer(lm_bundle, train, None, cfg, out=tmp_path / "a")
    whole.fit()
    half = Trainer(lm_bundle, train, None, cfg, out=tmp_path / "b")
    half.fit(steps=3)
    again = Trainer(lm_bundle, train, None, cfg, out=tmp_path / "b", resume=True)
    again.fit()
    a, b = whole.trainable_state_dict(), again.trainable_state_dict()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6 * (1 + np.abs(a[name]).max()))


def test_a_ram_cap_shrinks_the_micro_batch_never_the_tokens(lm_bundle):
    import re

    from edgetune.caps import Caps
    from edgetune.caps.dry_run import plan_report
    from edgetune.devices import get_device
    from edgetune.errors import EdgetuneError

    device = get_device("jetson-nano")
    with pytest.raises(EdgetuneError, match="keep 64 of 64 tokens per layer") as e:
        plan_report(lm_bundle.manifest, device, Caps.parse(ram="1MB"), batch_size=16)
    smallest = float(re.search(r"would work is --ram-cap ([\d.]+)MB", str(e.value)).group(1))
    plans = [plan_report(lm_bundle.manifest, device, Caps.parse(ram=f"{smallest + d}MB"), batch_size=16)
             for d in (1, 4, 1000)]
    assert all(p["step"]["plan"]["keep"] == [64, 64] for p in plans)
    assert plans[0]["step"]["plan"]["micro_batch"] < 16 == plans[-1]["step"]["plan"]["micro_batch"]
