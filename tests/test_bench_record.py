"""bench/record.py: a finished row is reused only with the same arguments, python and runtime."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import record  # noqa: E402

ARGS = ["bundle", "--lr", "0.001", "--seed", "0"]
ROW = {"name": "lora-static", "args": ARGS, "python": "/py", "test_accuracy": 0.9, "val_best": 0.91,
       "series": {"loss": [2.302585, None, 0.123456789], "step_time": [0.1, 0.2, 0.3]}}
MACHINE = {"cpu": "some CPU", "date": "2026-12-07", "matmul_gflops": 200.0}


def test_a_recorded_row_comes_back_only_for_the_same_run(tmp_path):
    record.save(tmp_path, "vit", "k", ROW, MACHINE)
    got = record.load(tmp_path, "vit", "k", ARGS, "/py")
    assert got is not None and got["test_accuracy"] == 0.9 and got["machine"] == MACHINE
    assert got["runtime"] == record.runtime_digest()
    assert got["series"] == {"loss": [2.303, None, 0.1235]}       # the loss plot's series, 4 digits
    assert record.load(tmp_path, "vit", "k", [*ARGS[:-1], "1"], "/py") is None   # another seed
    assert record.load(tmp_path, "vit", "k", ARGS, "/other/python") is None
    assert record.load(tmp_path, "vit", "other", ARGS, "/py") is None
    assert record.load(None, "vit", "k", ARGS, "/py") is None
    p = record.path_of(tmp_path, "vit", "k")
    stale = {**json.loads(p.read_text()), "runtime": "000000000000"}          # another runtime
    p.write_text(json.dumps(stale))
    assert record.load(tmp_path, "vit", "k", ARGS, "/py") is None


def test_only_finished_rows_are_recorded_and_their_machine_is_kept(tmp_path):
    record.save(tmp_path, "vit", "failed", {**ROW, "error": "diverged"}, MACHINE)
    record.save(tmp_path, "vit", "untested", {**ROW, "test_accuracy": None}, MACHINE)
    assert not (tmp_path / "vit").exists()
    earlier = {**MACHINE, "date": "2026-12-05"}
    record.save(tmp_path, "vit", "k", {**ROW, "machine": earlier}, MACHINE)
    assert record.load(tmp_path, "vit", "k", ARGS, "/py")["machine"] == earlier
    assert [p.name for p in (tmp_path / "vit").iterdir()] == ["k.json"]       # no temporary left


def test_the_runtime_digest_covers_the_device_runtime():
    d = record.runtime_digest()
    assert len(d) == 12 and d == record.runtime_digest()
    assert any((ROOT / "edgetune").rglob("*.py"))
