"""bench/peft_cost.py --quick: every configuration x engine trains in its own process, and the
report has its time, peak RSS, per-graph breakdown and memory for each."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_peft_cost_bench_quick(tmp_path):
    pytest.importorskip("torch", reason="bench/peft_cost.py exports its bundles (the workstation)")
    pytest.importorskip("onnxruntime.training", reason="the static rows need the training build")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "peft_cost.py"), "--quick", "--profile",
                          "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    rows = report["results"]
    assert set(rows) == {"full/static", "full/adaptive", "lora/static", "lora/adaptive",
                         "alast-lora/adaptive"}
    for tag, r in rows.items():
        assert r["mode"] == tag.split("/")[1]
        assert r["s_per_step"] > 0 and r["peak_rss_mb"] > 0
        assert sum(r["breakdown"].values()) <= r["s_per_step"] * 1.5 + 0.05  # within the step
        assert r["profile"]["forward_s"] > 0 and r["profile"]["backward_s"] > 0
    memory = {tag: r["memory_mb"] for tag, r in rows.items()}
    assert memory["lora/static"]["params_trainable"] < memory["full/static"]["params_trainable"]
    assert any(k.startswith("block backward") for k in rows["lora/adaptive"]["breakdown"])
    assert "static training graph" in rows["lora/static"]["breakdown"]
