"""A language model's LoRA served by plain onnxruntime: the base decoder with every LoRA pair as
an *overridable* input, and the trained pairs in onnxruntime's adapter format.

    y = x Wᵀ + (x Aᵀ) B'ᵀ,   B' = (α/r)·B

``A`` (r, in) and ``B'`` (out, r) are graph inputs that are also initializers holding rank-0
defaults ((0, in), (out, 0)): without an adapter the branch is an empty product and the graph is
the base model; ``RunOptions.add_active_adapter(LoraAdapter)`` feeds an adapter's tensors by
these names (``model.layers.0.self_attn.q_proj.lora_A.weight``, the bundle's own parameter
names, B already scaled), so several adapters serve over one base, switched per request.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from onnx import helper, numpy_helper
from torch import Tensor, nn

from edgetune.export.models.base import TransformerModel
from edgetune.export.onnx.decoder import trace_decoder
from edgetune.export.onnx.trace import save_model
from edgetune.export.peft.lora import LoraLinear

LORA_DECODER = "decoder_lora.onnx"


class _Factored(nn.Module):
    """x Wᵀ + b + (x Aᵀ) B'ᵀ with the parameters under LoraLinear's names."""

    def __init__(self, lora: LoraLinear):
        super().__init__()
        self.base_layer = lora.base_layer
        self.lora_A = nn.Linear(lora.lora_A.in_features, lora.lora_A.out_features, bias=False)
        self.lora_B = nn.Linear(lora.lora_B.in_features, lora.lora_B.out_features, bias=False)
        with torch.no_grad():
            self.lora_A.weight.copy_(lora.lora_A.weight)
            self.lora_B.weight.copy_(lora.lora_B.weight * lora.scaling)

    def forward(self, x: Tensor) -> Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(x))


def write_lora_decoder(model: TransformerModel, folder: Path, batch: int, tokens: int | None) -> dict | None:
    """``folder/decoder_lora.onnx`` for a LoRA language model (else None) and its index entry:
    the file, and per adapter tensor its shape with the rank as ``r``."""
    if model.task != "causal_lm" or getattr(model, "peft_method", None) != "lora":
        return None
    factored = copy.deepcopy(model).eval()
    for name, module in [(n, m) for n, m in factored.named_modules() if isinstance(m, LoraLinear)]:
        parent, _, child = name.rpartition(".")
        setattr(factored.get_submodule(parent) if parent else factored, child, _Factored(module))
    graph, inputs, outputs = trace_decoder(factored, batch, tokens)
    lora = {n for n, _ in factored.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    shapes = {}
    for t in graph.graph.initializer:
        if t.name not in lora:
            continue
        rows, cols = t.dims
        is_a = ".lora_A." in t.name
        dims = ["r_" + t.name, cols] if is_a else [rows, "r_" + t.name]
        graph.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, dims))
        empty = np.zeros((0, cols) if is_a else (rows, 0), np.float32)
        t.CopyFrom(numpy_helper.from_array(empty, t.name))
        shapes[t.name] = ["r", int(cols)] if is_a else [int(rows), "r"]
    save_model(graph, folder / LORA_DECODER)
    return {"file": LORA_DECODER, "inputs": inputs, "outputs": outputs, "adapter": shapes}
