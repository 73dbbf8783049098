"""bench/gpu.py without a CUDA device: one line saying so, exit 0 (CI machines have no GPU)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu  # noqa: E402


def test_gpu_bench_without_cuda_says_so_and_exits_0(tmp_path):
    if gpu.cuda_device() is not None:
        pytest.skip("a CUDA device is here: run bench/gpu.py itself")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "run", "--bundles",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no CUDA device")
