"""Early stopping (``--patience``): a run ends after N validations without a better accuracy."""

from __future__ import annotations

import json

import pytest
from bundles import micro_bundle
from click.testing import CliRunner
from test_train import synthetic_images

from edgetune.bundle import Bundle
from edgetune.cli import main
from edgetune.errors import UsageError
from edgetune.train import TrainConfig, Trainer, load_data


def _setup(tmp_path):
    b = Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2, mode="adaptive"))
    return b, load_data(b, synthetic_images(tmp_path / "train.npz", n=96))


def test_a_run_that_stops_improving_ends_after_patience_validations(tmp_path):
    """At lr 1e-12 the parameters move by ~1e-12 of themselves: no prediction can change, so
    the first validation is the best and the run must end 2 validations later (step 6 of 40)."""
    b, data = _setup(tmp_path)
    config = TrainConfig(steps=40, batch_size=16, lr=1e-12, eval_every=2, patience=2, val_split=0.25)
    result = Trainer(b, data, None, config, out=tmp_path / "run").fit()
    assert result.steps == 6 and result.stopped is not None
    assert result.stopped.startswith("early stop: no better validation accuracy in 2 validations")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_accuracy" in r] == [2, 4, 6]
    assert all(r["elapsed_s"] > 0 for r in rows)
    assert [r["elapsed_s"] for r in rows] == sorted(r["elapsed_s"] for r in rows)
    ck = tmp_path / "run" / "checkpoints"
    assert json.loads((ck / "best.json").read_text())["checkpoint"].startswith("step-00000002")
    assert json.loads((ck / "last.json").read_text())["checkpoint"].startswith("step-00000006")


def test_patience_without_validation_data_is_refused(tmp_path):
    b, data = _setup(tmp_path)
    with pytest.raises(UsageError, match=r"TrainConfig.patience=3: early stopping needs validation data"):
        Trainer(b, data, None, TrainConfig(steps=4, batch_size=16, patience=3))
    with pytest.raises(UsageError, match=r"TrainConfig.patience=-1"):
        TrainConfig(steps=4, patience=-1)


def test_the_cli_stops_early_and_says_why(tmp_path):
    b, _ = _setup(tmp_path)
    res = CliRunner().invoke(main, ["train", str(b.path), "--data", str(tmp_path / "train.npz"),
                                    "--steps", "40", "--batch-size", "16", "--lr", "1e-12",
                                    "--eval-every", "2", "--patience", "1", "--val-split", "0.25",
                                    "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert ": 4 steps," in res.output
    assert "stopped early: early stop: no better validation accuracy in 1 validation (best" in res.output
