"""LoRA's gradients never form the frozen merged weight's gradient (export/onnx/low_rank.py):
the rank-r reordering is in every exported LoRA gradient graph, and gives the same gradients."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("torch", reason="exports a model (the workstation)")

from edgetune.export.onnx.adaptive import export_adaptive  # noqa: E402
from edgetune.export.onnx.gradients import build_gradient  # noqa: E402
from edgetune.export.onnx.low_rank import reassociate_lora_grads  # noqa: E402
from edgetune.export.peft import trainable_names  # noqa: E402

from export_cases import build  # noqa: E402
from numerics import assert_close_normwise, gradient_floor  # noqa: E402


def _products_of_tokens(graph: onnx.ModelProto) -> int:
    return sum(n.name.endswith("lora_dY_B") for n in graph.graph.node)


def test_every_lora_layer_gets_rank_r_gradients():
    model = build("vit-micro", "lora")
    parts = export_adaptive(model, set(trainable_names(model)))
    layers = sum(n.endswith("lora_A.weight") for n in trainable_names(model))
    # every backward graph that trains (train, first; saving or not; dense twin or not) has one
    # rank-r product per LoRA layer of its block
    twins = [t for p in parts.values() for t in (p, p.dense) if t is not None]
    per_variant = {k: sum(_products_of_tokens(t.graphs[k]) for t in twins if k in t.graphs)
                   for k in ("backward_train", "backward_train_store")}
    found = sum(_products_of_tokens(g) for t in twins for k, g in t.graphs.items()
                if k.startswith("backward_") and "frozen" not in k)
    assert per_variant["backward_train"] == 2 * layers, per_variant      # with the dense twins
    assert per_variant["backward_train_store"] == 2 * layers, per_variant
    assert found == 8 * layers, per_variant


def test_reordered_gradients_equal_the_merged_weights():
    import onnxruntime as ort
    import torch

    from edgetune.export.onnx.trace import to_onnx
    from edgetune.export.peft.lora import LoraLinear

    torch.manual_seed(0)
    layer = LoraLinear(torch.nn.Linear(6, 5), r=2, alpha=6.0)  # scale 3: a Mul in the chain
    with torch.no_grad():
        layer.lora_B.weight.normal_()

    class Objective(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x, dy):
            return (self.layer(x) * dy).sum()

    x, dy = torch.randn(3, 4, 6), torch.randn(3, 4, 5)
    graph = to_onnx(Objective(), (x, dy), ["x", "dy"], ["objective"], {"x": {0: "b"}, "dy": {0: "b"}})
    wrt = ["layer.lora_A.weight", "layer.lora_B.weight"]
    plain = build_gradient(graph, wrt, "objective")
    reordered = onnx.ModelProto()
    reordered.CopyFrom(plain)
    assert reassociate_lora_grads(reordered) == 1
    outs = [w + "_grad" for w in wrt]
    got = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           .run(outs, {"x": x.numpy(), "dy": dy.numpy()}) for m in (plain, reordered)]
    floor = gradient_floor(got[0])  # two association orders: norm-wise, as tests/numerics.py says
    for w, a, b in zip(wrt, *got):
        assert_close_normwise(b, a, w, atol=floor)
    assert any(np.abs(a).max() > 0 for a in got[0])
