"""``edgetune merge`` on the device side, on whatever ONNX Runtime build this environment has
(stock onnxruntime in the device venv: no training API, no ``onnx`` package): the merged
``inference.onnx`` gives the trained engine's logits."""

import numpy as np
from test_train import bundle, data  # noqa: F401  (fixtures)

from edgetune.bundle import Bundle
from edgetune.merge import merge_run
from edgetune.train import TrainConfig, Trainer, load_data
from edgetune.train.evaluate import token_count

from numerics import assert_close_normwise


def test_merge_writes_an_inference_model_any_build_runs(bundle, data, tmp_path):  # noqa: F811
    import onnxruntime

    b = Bundle.open(bundle)
    ds = load_data(b, data[1])
    trainer = Trainer(b, load_data(b, data[0]), config=TrainConfig(steps=3, batch_size=16, lr=1e-2),
                      out=tmp_path / "run")
    trainer.fit()
    out = merge_run(tmp_path / "run", checkpoint="last")
    batch = ds.batch(np.arange(len(ds)))
    session = onnxruntime.InferenceSession(str(out / "inference.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"pixel_values": batch["pixel_values"]})[0]
    keep = np.full(trainer.engine.num_layers, token_count(batch, b), np.int64)
    want = trainer.engine.predict(batch, keep)
    assert_close_normwise(got, want, "merged inference.onnx vs the trained engine")
    untrained = onnxruntime.InferenceSession(str(b.path / "inference" / "inference.onnx"),
                                             providers=["CPUExecutionProvider"])
    before = untrained.run(["logits"], {"pixel_values": batch["pixel_values"]})[0]
    assert not np.allclose(before, got)  # the trained values were written, not the bundle's


def test_predict_classifies_texts_with_a_merged_model(tmp_path):
    import json

    from bundles import micro_bundle, micro_tokenizer
    from click.testing import CliRunner

    from edgetune.cli import main

    b = Bundle.open(micro_bundle("bert-micro", "lora", num_classes=2, mode="adaptive", max_tokens=12,
                                 tokenizer=str(micro_tokenizer())))
    rows = [f"{'good fine' if i % 2 else 'bad poor'} film,{'fresh' if i % 2 else 'rotten'}"
            for i in range(32)]
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    Trainer(b, load_data(b, tmp_path / "t.csv"), config=TrainConfig(steps=2, batch_size=8),
            out=tmp_path / "run").fit()
    out = merge_run(tmp_path / "run", checkpoint="last")
    got = CliRunner().invoke(main, ["predict", str(out), "good fine film", "bad poor film", "--json"])
    assert got.exit_code == 0, got.output
    res = json.loads(got.stdout)
    assert [set(r["probabilities"]) for r in res] == [{"fresh", "rotten"}] * 2  # the run's label names
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in res)
    assert all(r["label"] == max(r["probabilities"], key=r["probabilities"].get) for r in res)
    text = CliRunner().invoke(main, ["predict", str(out), "good fine film"])
    assert text.exit_code == 0 and text.stdout.endswith(": good fine film\n")
    bad = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), "x"])
    assert bad.exit_code == 2 and "not a merged folder" in bad.output
