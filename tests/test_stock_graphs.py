"""Every adaptive graph of every method on both micro models loads and trains on the ONNX
Runtime build of this environment: the training build in the workstation venv, stock
onnxruntime in the device venv (``make test`` runs both, on the same cached bundle files).

The bundles' graphs hold only standard ONNX ops and the contrib ops stock builds ship
(test_export_adaptive.py checks that statically, test_lowering.py each lowering against ORT's
kernel); here a session is built for every file, and one step with every layer trained runs
the whole backward walk: a finite loss, and a finite, nonzero-somewhere gradient for every
trainable parameter (a zero everywhere would mean a lowered gradient lost its input).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bundles import micro_bundle, micro_tokenizer

MODELS = ("vit-micro", "bert-micro")
METHODS = ("full", "bitfit", "lora", "adapter", "prefix", "prompt", "propulsion", "ia3")


def _bundle(model: str, method: str) -> Path:
    text = {"max_tokens": 12, "tokenizer": str(micro_tokenizer())} if model.startswith("bert") else {}
    return micro_bundle(model, method, num_classes=3, mode="adaptive", **text)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_every_adaptive_graph_loads_and_trains_here(model, method):
    import onnxruntime

    from edgetune.runtime import AdaptiveRunner

    folder = _bundle(model, method) / "adaptive"
    files = sorted(folder.rglob("*.onnx"))
    assert len(files) >= 10
    for f in files:  # every file, the optimizer graphs of device-resident runs included
        onnxruntime.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    runner = AdaptiveRunner(folder)
    rng = np.random.default_rng(0)
    if model.startswith("vit"):
        inputs, n = {"pixel_values": rng.standard_normal((3, 3, 32, 32)).astype(np.float32)}, 17
    else:
        extra = int(json.loads((folder.parent / "manifest.json").read_text()).get("extra_tokens", 0))
        inputs = {"input_ids": rng.integers(4, 18, (3, 12)), "attention_mask": np.ones((3, 12), np.int64)}
        n = 12 + extra
    res = runner.step(inputs, np.array([0, 1, 2]), [n, max(2, n // 2)], train_stem=True)
    assert np.isfinite(res.loss)
    trainable = set(runner.index["trainable"])
    assert set(res.grads) == trainable
    norms = {k: float(np.linalg.norm(v)) for k, v in res.grads.items()}
    assert all(np.isfinite(v) for v in norms.values())
    assert sum(norms.values()) > 0
