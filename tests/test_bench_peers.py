"""bench/peers.py --quick: every row (transformers + PEFT and edgetune's engines) trains in its own
process on the same batches, and the report has its time, peak, FLOPs, share of its engine's
matmul peak, where the peak goes, and a verdict per target."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_peers_bench_quick(tmp_path):
    pytest.importorskip("torch", reason="bench/peers.py exports its bundles (the workstation)")
    pytest.importorskip("peft", reason="the peer rows run transformers + PEFT")
    bundles = ROOT / "build" / "test-bundles" / "bench-peers"
    fast = shutil.which("cc") is not None  # the peers again with MKL's fast path forced on
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "peers.py"), "--quick", "--models",
                          "bert-micro", "--bundles", str(bundles), "--out", str(tmp_path),
                          *(["--hf-mkl-fast-path"] if fast else [])],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    m = report["models"]["bert-micro"]
    rows = m["results"]
    engines = ["adaptive"] + (["static"] if "training" in next(iter(report["onnxruntime"].values())) else [])
    expected = {"hf-lora", "hf-full", "alast-lora/adaptive"}
    expected |= {"hf-lora/mkl-fast", "hf-full/mkl-fast"} if fast else set()
    expected |= {f"{r}/{e}" for r in ("lora", "full") for e in engines}
    ort = next(iter(report["onnxruntime"].values())).split()[0]
    if tuple(int(p) for p in ort.split(".")[:2]) >= (1, 22):  # an int8 base runs there
        expected |= {"lora-int8/adaptive", "alast-lora-int8/adaptive"}
    assert set(rows) == expected
    for tag, r in rows.items():
        assert r["s_per_step"] > 0 and r["peak_rss_mb"] > 0, tag
        assert r["flops"] > 0 and 0 < r["share"] and math.isfinite(r["gflops"]), tag
        assert r["mode"] == ("torch" if tag.startswith("hf-") else tag.split("/")[1])
        split = r["rss_mb"]
        assert 0 < split["imported"] <= r["peak_rss_mb"], tag
    # equal work: the peers trained on batches of the same shape, every text filling its positions
    assert all(r["input_shapes"] == [[4, 16]] for t, r in rows.items() if t.startswith("hf-"))
    assert all(r["plans"][0]["tokens"] == 16 for t, r in rows.items() if not t.startswith("hf-"))
    hf_trainable = rows["hf-lora"]["memory_mb"]["params_trainable"]
    assert hf_trainable < rows["hf-full"]["memory_mb"]["params_trainable"]
    ours = {t: rows[t]["memory_mb"]["params_trainable"] for t in ("lora/adaptive", "full/adaptive")}
    assert ours["lora/adaptive"] < ours["full/adaptive"]
    # every target has a verdict per edgetune engine, with the ratio it was judged on
    v = {(x["row"], x["peer"]): x for x in m["verdicts"]}
    ours = {t for t in rows if not t.startswith("hf-")}
    assert {r for r, _ in v} == ours and len(v) == len(ours) * (2 if fast else 1)
    for x in v.values():
        peer = rows[x["peer"]]
        assert x["speed"] == pytest.approx(peer["s_per_step"] / rows[x["row"]]["s_per_step"])
        assert x["speed_met"] == (x["speed"] >= x["speed_target"])
    assert "target lora/adaptive vs hf-lora" in out.stdout and "where the peak goes" in out.stdout
