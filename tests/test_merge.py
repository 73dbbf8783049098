"""``merge_run``: a trained run → inference.onnx (plain onnxruntime) + a PEFT-format adapter.

Every case trains a micro model for a few steps, merges it, and checks the inference model's
logits against the trained model rebuilt in torch from the written adapter, and against the
run's own engine. Mergeable methods must come out truly merged (no adapter tensor in the graph).
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
import onnxruntime as ort  # noqa: E402

from edgetune.data import ImageSpec, TextSpec, build_word_level_tokenizer, load_dataset  # noqa: E402
from edgetune.errors import EdgetuneError, UsageError  # noqa: E402
from edgetune.export import export_bundle  # noqa: E402
from edgetune.export.models.registry import create_model  # noqa: E402
from edgetune.export.onnx import prepare_model  # noqa: E402
from edgetune.export.onnx.inference import inference_model  # noqa: E402
from edgetune.export.peft import load_adapter, merge_model, trainable_names  # noqa: E402
from edgetune.merge import apply_recipe, merge_run  # noqa: E402
from edgetune.train.config import TrainConfig  # noqa: E402
from edgetune.train.trainer import Trainer, token_count  # noqa: E402

from conftest import hf_twin  # noqa: E402
from numerics import assert_close_normwise, method_rtol, normwise_error  # noqa: E402

CLASSES = 3
ADAPTER_TENSORS = ("lora_", "ia3_l", "propulsion_z", "base_layer")
WORDS = "good bad great awful fine poor nice dull superb weak".split()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("merge")


@pytest.fixture(scope="module")
def images(work):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (24, 32, 32, 3), dtype=np.uint8)
    np.savez(work / "images.npz", x=x, y=rng.integers(0, CLASSES, 24))
    return load_dataset(work / "images.npz", ImageSpec(image_size=32, channels=3, num_classes=CLASSES))


@pytest.fixture(scope="module")
def texts(work):
    rng = np.random.default_rng(1)
    rows = [" ".join(rng.choice(WORDS, rng.integers(2, 9))) for _ in range(24)]
    tok = build_word_level_tokenizer(rows, work / "tokenizer.json")
    lines = ["text,label"] + [f"{r},{rng.integers(0, CLASSES)}" for r in rows]
    (work / "texts.csv").write_text("\n".join(lines) + "\n")
    return tok, load_dataset(work / "texts.csv", TextSpec(tok, max_length=12, num_classes=CLASSES))


class Run:
    def __init__(self, model, method, mode, folder, trainer, data, pooling=None):
        self.model, self.method, self.mode, self.pooling = model, method, mode, pooling
        self.folder, self.trainer, self.data = folder, trainer, data

    def batch(self):
        return self.data.batch(np.arange(len(self.data)))

    def engine_logits(self):
        batch = self.batch()
        keep = np.full(self.trainer.engine.num_layers, token_count(batch, self.trainer.bundle), np.int64)
        return self.trainer.engine.predict(batch, keep)


def train(work, data, model, method, mode, tokenizer=None, validate=True, name=None,
          pooling=None) -> Run:
    folder = work / (name or f"{model}-{method}-{mode}-{pooling}")
    export_bundle(model, method, folder / "bundle", num_classes=CLASSES, mode=mode,
                  tokenizer=tokenizer, max_tokens=12 if tokenizer else None, pooling=pooling)
    trainer = Trainer(folder / "bundle", data, data if validate else None,
                      TrainConfig(steps=3, batch_size=8, lr=2e-2, mode=mode),
                      out=folder / "run")
    trainer.fit()
    return Run(model, method, mode, folder / "run", trainer, data, pooling)


@pytest.fixture(scope="module")
def runs(work, images):
    cache: dict[tuple, Run] = {}

    def get(method, mode):
        if (method, mode) not in cache:
            cache[method, mode] = train(work, images, "vit-micro", method, mode)
        return cache[method, mode]

    return get


@pytest.fixture(scope="module")
def text_run(work, texts):
    tok, data = texts
    return train(work, data, "bert-micro", "lora", "static", tokenizer=tok)


def feeds(run: Run, session) -> dict:
    batch = run.batch()
    return {i.name: batch[i.name] for i in session.get_inputs()}


def torch_logits(run: Run, adapter: Path, batch: dict) -> np.ndarray:
    model = prepare_model(run.model, run.method, num_classes=CLASSES, seed=0, pooling=run.pooling)
    load_adapter(model, adapter)
    inputs = [torch.from_numpy(batch[n]) for n in model.input_names]
    with torch.no_grad():
        return model(*inputs).numpy()


def untrained_logits(run: Run, batch: dict) -> np.ndarray:
    model = prepare_model(run.model, run.method, num_classes=CLASSES, seed=0, pooling=run.pooling)
    with torch.no_grad():
        return model(*[torch.from_numpy(batch[n]) for n in model.input_names]).numpy()


def check_merged(run: Run, out: Path) -> np.ndarray:
    """The inference model's logits == torch's (rebuilt from the adapter) == the run's engine."""
    session = ort.InferenceSession(str(out / "inference.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    got = session.run(["logits"], feeds(run, session))[0]
    batch = run.batch()
    expected = torch_logits(run, out / "adapter", batch)
    rtol = method_rtol(run.method)
    assert_close_normwise(got, expected, f"{run.method} inference.onnx vs torch", rtol=rtol)
    assert_close_normwise(got, run.engine_logits(), f"{run.method} inference.onnx vs engine", rtol=rtol)
    # training moved the values: the comparison is not the initial model against itself
    assert normwise_error(got, untrained_logits(run, batch)) > 100 * rtol
    return got


CASES = [("lora", "static"), ("ia3", "adaptive"), ("propulsion", "static"),
         ("prefix", "static"), ("adapter", "adaptive"), ("full", "static")]


@pytest.mark.parametrize("method,mode", CASES)
def test_inference_model_matches_trained_model(runs, method, mode):
    run = runs(method, mode)
    out = merge_run(run.folder)
    assert out == run.folder / "merged"
    check_merged(run, out)
    info = json.loads((out / "merged.json").read_text())
    best = json.loads((run.folder / "checkpoints" / "best.json").read_text())
    assert info["checkpoint"] == best["checkpoint"] and info["mode"] == mode
    assert info["method"] == method and info["inference"]["inputs"] == ["pixel_values"]
    graph = onnx.load(str(out / "inference.onnx"))
    names = [t.name for t in graph.graph.initializer]
    adapter_left = [n for n in names if any(a in n for a in ADAPTER_TENSORS)]
    if method in ("lora", "ia3", "propulsion", "full"):  # folded into the weights
        assert info["merged"] is True and adapter_left == []
    else:  # adapter, prefix: extra computation stays
        assert info["merged"] is False
    assert {i.name for i in graph.graph.input} == {"pixel_values"}
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config == run.trainer.bundle.manifest["adapter"]["config"]


def test_text_model_and_tokenizer(text_run):
    out = merge_run(text_run.folder, checkpoint="last", out=text_run.folder.parent / "m")
    check_merged(text_run, out)
    info = json.loads((out / "merged.json").read_text())
    assert info["inference"]["inputs"] == ["input_ids", "attention_mask"]
    assert info["tokenizer"] == "tokenizer.json" and (out / "tokenizer.json").is_file()
    last = json.loads((text_run.folder / "checkpoints" / "last.json").read_text())
    assert info["checkpoint"] == last["checkpoint"] and info["step"] == 3


@pytest.mark.parametrize("mode", ["static", "adaptive"])
def test_mean_pooled_text_model_merges(work, texts, mode):
    """Mean pooling (the head reads the padding mask) through training, merge and inference."""
    tok, data = texts
    run = train(work, data, "bert-micro", "lora", mode, tokenizer=tok, pooling="mean")
    assert run.trainer.bundle.manifest["model"]["config"]["pooling"] == "mean"
    out = merge_run(run.folder, checkpoint="last", out=run.folder.parent / "m")
    check_merged(run, out)


def test_lora_adapter_loads_in_hugging_face_peft(text_run):
    peft = pytest.importorskip("peft")
    out = merge_run(text_run.folder, out=text_run.folder.parent / "for-peft")
    torch.manual_seed(0)  # the bundle's base weights: prepare_model builds with seed 0
    base = create_model("bert-micro", CLASSES).eval()
    loaded = peft.PeftModel.from_pretrained(hf_twin(base), str(out / "adapter")).eval()
    batch = text_run.batch()
    with torch.no_grad():
        theirs = loaded(input_ids=torch.from_numpy(batch["input_ids"]),
                        attention_mask=torch.from_numpy(batch["attention_mask"])).logits.numpy()
    session = ort.InferenceSession(str(out / "inference.onnx"), providers=["CPUExecutionProvider"])
    assert_close_normwise(session.run(["logits"], feeds(text_run, session))[0], theirs, "peft logits")


@pytest.mark.parametrize("name", ["vit-micro", "bert-micro"])
@pytest.mark.parametrize("method", ["lora", "ia3", "propulsion"])
def test_recipe_folds_like_torch_merge(name, method):
    """The bundle's recipe, applied in numpy to base weights, gives merge_model's weights."""
    model = prepare_model(name, method, num_classes=CLASSES, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    params = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    plain, trainable, merge = inference_model(model, trainable_names(model))
    assert merge["merged"] and merge["tensors"]
    expected = merge_model(copy.deepcopy(model)).state_dict()
    plain_params = dict(plain.named_parameters())
    assert set(plain_params) == {n for n, _ in merge_model(copy.deepcopy(model)).named_parameters()}
    for target, entry in merge["tensors"].items():
        base = plain_params[target].detach().numpy()
        np.testing.assert_array_equal(base, params[entry["base"]])  # traced with base weights
        got = apply_recipe(entry, base, params)
        assert_close_normwise(got, expected[target], target, rtol=method_rtol(method))
    assert set(trainable) == set(trainable_names(model)) - {
        n for e in merge["tensors"].values() for k in ("A", "B", "by") if (n := e.get(k))}


@pytest.fixture
def no_torch_env(tmp_path):
    for name in ("torch", "onnx"):
        (tmp_path / "shim" / name).mkdir(parents=True)
        (tmp_path / "shim" / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n')
    return {**os.environ, "PYTHONPATH": str(tmp_path / "shim")}


@pytest.mark.parametrize("method,mode", [("lora", "static"), ("ia3", "adaptive")])
def test_merge_runs_without_torch(runs, method, mode, no_torch_env, tmp_path):
    run = runs(method, mode)
    code = textwrap.dedent(f"""
        import sys
        from edgetune.merge import merge_run
        merge_run({str(run.folder)!r}, out={str(tmp_path / 'm')!r})
        assert sys.modules.get("torch") is None and sys.modules.get("onnx") is None
    """)
    done = subprocess.run([sys.executable, "-c", code], env=no_torch_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check_merged(run, tmp_path / "m")


# ---- errors ------------------------------------------------------------------------------------

def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_not_a_run_folder(tmp_path):
    with pytest.raises(EdgetuneError) as e:
        merge_run(tmp_path)
    assert str(tmp_path) in one_line(e) and "run.json" in str(e.value)
    with pytest.raises(EdgetuneError) as e:
        merge_run(tmp_path / "nope")
    assert str(tmp_path / "nope") in one_line(e)
    assert list(tmp_path.iterdir()) == []


def test_run_without_checkpoint(runs, tmp_path):
    run = runs("lora", "static")
    (tmp_path / "run.json").write_text((run.folder / "run.json").read_text())
    with pytest.raises(EdgetuneError) as e:
        merge_run(tmp_path)
    assert str(tmp_path) in one_line(e) and "no checkpoint" in str(e.value)
    with pytest.raises(UsageError) as e:
        merge_run(run.folder, checkpoint="step-99")
    assert "step-99" in one_line(e)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_existing_output_needs_overwrite(runs, tmp_path):
    run = runs("lora", "static")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError) as e:
        merge_run(run.folder, out=out)
    assert str(out) in one_line(e) and "overwrite" in str(e.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    merge_run(run.folder, out=out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "inference.onnx", "merged.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_leaves_nothing_half_written(runs, tmp_path, monkeypatch):
    import edgetune.merge as merge

    run = runs("lora", "static")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(merge, "save_adapter_arrays", boom)
    with pytest.raises(OSError):
        merge_run(run.folder, out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_best_falls_back_to_last(runs, tmp_path):
    trained = runs("full", "static")
    shutil.copytree(trained.folder, tmp_path / "run", ignore=shutil.ignore_patterns("merged"))
    (tmp_path / "run" / "checkpoints" / "best.json").unlink()
    run = copy.copy(trained)
    run.folder = tmp_path / "run"
    out = merge_run(run.folder)
    check_merged(run, out)
    last = json.loads((run.folder / "checkpoints" / "last.json").read_text())
    assert json.loads((out / "merged.json").read_text())["checkpoint"] == last["checkpoint"]
