"""The generation graph of a language model: one step over a key/value cache.

    inputs:  input_ids (B, S), past_key_values.{i}.key / .value (B, H_kv, P, d_h) for every layer i
    outputs: logits (B, S, V), present.{i}.key / .value (B, H_kv, P + S, d_h)

The names are Hugging Face Optimum's and onnxruntime-genai's. The first call (prefill) feeds the
prompt after an empty cache (P = 0), or prefix tuning's keys and values; each later call feeds
one token and the previous call's presents. The positions of ``input_ids`` start at P.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgetune.export.models.base import TransformerModel
from edgetune.export.onnx.trace import strip_prefix, to_onnx
from edgetune.export.peft.prefix import attention_of


def past_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


class _Decoder(nn.Module):
    def __init__(self, model: TransformerModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, *past: Tensor):
        logits, presents = self.model.decode(input_ids, list(zip(past[0::2], past[1::2])))
        return (logits, *(t for kv in presents for t in kv))


def trace_decoder(model: TransformerModel, batch: int = 2, tokens: int | None = None):
    """(graph, inputs, outputs) of ``model.decode``, traced at a non-empty past so the cache
    length stays a dimension of its own."""
    model.eval()
    c = model.config
    (ids,) = model.example_inputs(batch, tokens)
    past = [torch.randn(batch, c.num_key_value_heads, 3, c.head_dim) for _ in past_names(model.num_layers)]
    inputs = ["input_ids", *past_names(model.num_layers)]
    outputs = ["logits", *present_names(model.num_layers)]
    axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    axes.update({n: {0: "batch", 2: "past"} for n in past_names(model.num_layers)})
    axes.update({n: {0: "batch", 2: "total"} for n in present_names(model.num_layers)})
    graph = to_onnx(_Decoder(model), (ids, *past), inputs, outputs, axes)
    strip_prefix(graph, "model.")
    return graph, inputs, outputs


def decoder_spec(model: TransformerModel) -> dict:
    """What generation needs besides the graph: the cache's shape, and prefix tuning's
    parameters that make each layer's initial past ((P, H_kv·d_h) → (1, H_kv, P, d_h))."""
    c = model.config
    paths = {id(m): n for n, m in model.named_modules()}
    prefix = []
    for layer in model.blocks:
        attn = attention_of(layer)
        if attn.prefix is not None:
            base = paths[id(attn)] + ".prefix"
            prefix.append([f"{base}.key", f"{base}.value"])
    return {"num_layers": model.num_layers, "num_kv_heads": c.num_key_value_heads, "head_dim": c.head_dim,
            "max_positions": c.max_position_embeddings, "eos_ids": list(c.eos_token_id),
            "prefix": prefix or None}
