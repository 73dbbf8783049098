"""Text batches padded to a multiple of a token count (data/padding.py): the same logits, fewer
batch lengths."""

from __future__ import annotations

import json

import numpy as np
from bundles import micro_bundle, micro_tokenizer

from edgetune.bundle import Bundle
from edgetune.data.padding import dataset_pad_id, pad_multiple
from edgetune.targets import IGNORE
from edgetune.train import TrainConfig, Trainer, load_data

from numerics import assert_close_normwise


def test_pad_multiple_widens_to_the_next_multiple_within_the_limit():
    ids = np.arange(10).reshape(2, 5)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": np.full((2, 5), 3)}
    out = pad_multiple(batch, 4, 64, pad_id=7)
    assert out["input_ids"].shape == (2, 8) and (out["input_ids"][:, 5:] == 7).all()
    assert (out["attention_mask"][:, 5:] == 0).all() and (out["labels"][:, 5:] == IGNORE).all()
    assert np.array_equal(out["input_ids"][:, :5], ids)
    assert pad_multiple(batch, 4, 6, 7)["input_ids"].shape == (2, 6)   # never past the limit
    assert pad_multiple(batch, 1, 64, 7) is batch and pad_multiple(batch, 5, 64, 7) is batch
    image = {"pixel_values": np.zeros((1, 3, 4, 4)), "labels": np.zeros(1)}
    assert pad_multiple(image, 8, 64) is image


def _text(tmp_path):
    b = Bundle.open(micro_bundle("bert-micro", "lora", num_classes=2, mode="adaptive", max_tokens=12,
                                 tokenizer=str(micro_tokenizer())))
    rows = [f"{'good fine' if i % 2 else 'bad poor'} {'film ' * (i % 5)}{i},{i % 2}" for i in range(64)]
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    return b, load_data(b, tmp_path / "t.csv")


def test_padded_batches_give_the_same_logits(tmp_path):
    b, data = _text(tmp_path)
    trainer = Trainer(b, data, None, TrainConfig(steps=1, batch_size=8, pad_multiple=8))
    batch = data.batch(np.arange(8))
    wide = trainer._pad(batch)
    assert wide["input_ids"].shape[1] % 8 == 0 or wide["input_ids"].shape[1] == 12
    assert wide["input_ids"].shape[1] > batch["input_ids"].shape[1]
    assert dataset_pad_id(data) == data.pad_id
    n = lambda x: np.full(trainer.engine.num_layers, x["input_ids"].shape[1], np.int64)  # noqa: E731
    assert_close_normwise(trainer.engine.predict(wide, n(wide)), trainer.engine.predict(batch, n(batch)),
                          "logits, padded vs not")


def test_a_run_pads_where_asked_and_records_it(tmp_path):
    b, data = _text(tmp_path)
    seen = []
    Trainer(b, data, None, TrainConfig(steps=4, batch_size=8, pad_multiple=8), out=tmp_path / "run",
            callbacks=[lambda r: seen.append(r["tokens"])]).fit()
    assert all(t % 8 == 0 or t == 12 for t in seen)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["pad_multiple"] == 8
    plain = Trainer(b, data, None, TrainConfig(steps=1, batch_size=8))
    assert plain.pad_to == 1


def test_a_language_models_batches_pad_without_a_mask():
    batch = {"input_ids": np.ones((2, 5), np.int64), "labels": np.full((2, 5), 4)}
    out = pad_multiple(batch, 8, 256, pad_id=0)
    assert out["input_ids"].shape == (2, 8) and "attention_mask" not in out
    assert (out["labels"][:, 5:] == IGNORE).all()


def test_padding_is_refused_with_alast():
    import pytest

    from edgetune.errors import UsageError

    with pytest.raises(UsageError, match="pad_multiple=8: ALaST keeps a share"):
        TrainConfig(steps=1, schedule="alast", pad_multiple=8)
