"""bench/pretrain_vit.py --quick: a ViT of our own, saved as a folder ``edgetune export`` loads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.slow
def test_pretrain_quick_writes_a_folder_the_exporter_loads(tmp_path):
    pytest.importorskip("torch", reason="pretraining runs on the workstation")
    if not DATA.is_file():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    from edgetune.export.models.registry import create_model

    out = subprocess.run([sys.executable, str(ROOT / "bench" / "pretrain_vit.py"), "--quick",
                          "--out", str(tmp_path / "vit")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "vit" / "results.json").read_text())
    assert results["steps"] == 20 and 0.0 <= results["test_accuracy"] <= 1.0
    model = create_model(tmp_path / "vit", 4)          # a new 4-class head, the backbone loaded
    assert model.config.image_size == 28 and model.config.in_chans == 1
