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
