"""bench/caps.py --quick: the RAM and energy caps measured from outside, end to end."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_caps_bench_quick_holds_every_cap(tmp_path):
    pytest.importorskip("torch", reason="bench/caps.py exports its bundles (the workstation)")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "caps.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stdout.rstrip().endswith("0 failure(s)")
    rows = [line for line in out.stdout.splitlines() if line.startswith("vit-micro-lora")]
    trained = [r for r in rows if r.rstrip().endswith("PASS")]        # trained under a cap
    assert len(trained) >= 2, out.stdout                             # 150 %, both schedules
    assert not any("FAIL" in r for r in rows)
