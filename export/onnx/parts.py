"""The model cut into parts for export: stem, one block, head — torch wrappers and their traces.

Wrappers hold the whole model (so parameter names are the model's, after stripping the
``model.`` prefix) and add the objective ``sum(y * dy)`` the gradient builder differentiates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import torch
from torch import Tensor, nn

from edgetune.export.models.base import TransformerModel
from edgetune.export.models.causal_lm import IGNORE
from edgetune.export.onnx.trace import strip_prefix, to_onnx

B, N, K = "batch", "tokens", "kept"


@dataclass
class Traced:
    """A part traced with its objective: the graph and the names around it."""

    model: onnx.ModelProto
    inputs: list[str]            # data inputs (not parameters), in order
    outputs: list[str]           # forward outputs (not the objective)
    grad_input: str | None       # the data input whose gradient flows down (x), if any
    seed: str | None             # the incoming gradient input (dy), if any
    loss: str                    # scalar the gradient builder differentiates
    params: list[str] = field(default_factory=list)


def has_key_bias(model: TransformerModel) -> bool:
    return "attention_mask" in model.input_names


def _params_of(graph: onnx.ModelProto, model: nn.Module) -> list[str]:
    names = {n for n, _ in model.named_parameters()}
    return [t.name for t in graph.graph.initializer if t.name in names]


def _finish(module: nn.Module, model: TransformerModel, args, inputs, outputs, axes,
            **kw) -> Traced:
    graph = to_onnx(module, args, inputs, outputs, axes)
    strip_prefix(graph, "model.")
    return Traced(graph, list(inputs), [o for o in outputs if o != kw["loss"]],
                  params=_params_of(graph, model), **kw)


class _Stem(nn.Module):
    def __init__(self, model: TransformerModel):
        super().__init__()
        self.model = model

    def forward(self, *args: Tensor):
        *inputs, dtokens = args
        tokens, bias = self.model.embed(*inputs)
        outs = ((tokens * dtokens).sum(), tokens)
        return outs + ((bias,) if bias is not None else ())


def trace_stem(model: TransformerModel, example: tuple[Tensor, ...]) -> Traced:
    with torch.no_grad():
        tokens, _ = model.embed(*example)
    bias = has_key_bias(model)
    inputs = list(model.input_names) + ["dtokens"]
    outputs = ["objective", "tokens"] + (["key_bias"] if bias else [])
    axes = {n: {0: B} for n in model.input_names}
    if "input_ids" in model.input_names:  # text: the sequence length varies too
        axes.update({n: {0: B, 1: "seq"} for n in model.input_names})
    if bias:
        axes["key_bias"] = {0: B, 1: N}
    axes.update(tokens={0: B, 1: N}, dtokens={0: B, 1: N})
    return _finish(_Stem(model), model, (*example, torch.randn_like(tokens)), inputs, outputs,
                   axes, grad_input=None, seed="dtokens", loss="objective")


class _Block(nn.Module):
    def __init__(self, model: TransformerModel, index: int, bias: bool, drops: bool):
        super().__init__()
        self.model, self.index, self.bias, self.drops = model, index, bias, drops

    def forward(self, x: Tensor, *rest: Tensor):
        drops = self.drops
        if drops:
            key_bias, keep, dy = rest if self.bias else (None, *rest)
        else:
            (key_bias, dy), keep = (rest if self.bias else (None, *rest)), None
        y, key_bias, attn = self.model.blocks[self.index](x, key_bias, keep)
        outs = ((y * dy).sum(), y) + ((key_bias,) if self.bias else ())
        return outs + ((attn,) if drops else ())


def trace_block(model: TransformerModel, index: int, batch: int, tokens: int, keep: int,
                dense: bool = False) -> Traced:
    """x (+ key_bias) (+ keep, for a model that drops tokens) + dy → objective, y (+ key_bias_out)
    (+ cls_attn). A language model's block keeps every token: no keep input, y as long as x;
    so does ``dense`` (the every-token twin of a block that can drop tokens)."""
    bias, drops = has_key_bias(model), model.drops_tokens and not dense
    kept = K if drops else N
    if not drops:
        keep = tokens
    d = model.hidden_size
    x, dy = torch.randn(batch, tokens, d), torch.randn(batch, keep, d)
    args = ((x,) + ((torch.zeros(batch, tokens),) if bias else ())
            + ((torch.tensor([keep]),) if drops else ()) + (dy,))
    inputs = ["x"] + (["key_bias"] if bias else []) + (["keep"] if drops else []) + ["dy"]
    outputs = ["objective", "y"] + (["key_bias_out"] if bias else []) + (["cls_attn"] if drops else [])
    axes = {"x": {0: B, 1: N}, "key_bias": {0: B, 1: N}, "dy": {0: B, 1: kept}, "y": {0: B, 1: kept},
            "key_bias_out": {0: B, 1: kept}, "cls_attn": {0: B, 1: N}}
    axes = {k: v for k, v in axes.items() if k in inputs + outputs}
    return _finish(_Block(model, index, bias, drops), model, args, inputs, outputs, axes,
                   grad_input="x", seed="dy", loss="objective")


class _Head(nn.Module):
    def __init__(self, model: TransformerModel, bias: bool):
        super().__init__()
        self.model, self.bias = model, bias

    def forward(self, tokens: Tensor, *rest: Tensor):
        key_bias, labels = rest if self.bias else (None, *rest)
        logits = self.model.classify(tokens, key_bias)
        return self.model.loss(logits, labels), logits


def trace_head(model: TransformerModel, batch: int, tokens: int) -> Traced:
    """tokens (+ key_bias when the model pools with the padding mask) + labels → loss, logits.
    A classifier's labels are (B,) and logits (B, C); a language model's labels (B, N) with −100
    where there is no target, logits (B, N, V)."""
    bias = has_key_bias(model) and model.pools_with_mask
    x = torch.randn(batch, tokens, model.hidden_size)
    key_bias = torch.zeros(batch, tokens)
    key_bias[0, -1] = torch.finfo(x.dtype).min  # a padded position, so the mask stays in the graph
    if model.task == "causal_lm":  # the text's positions: the tokens less a prompt's
        prompt = getattr(model, "prompt", None)
        text = tokens - (0 if prompt is None else prompt.embeddings.shape[0])
        labels = torch.randint(0, model.vocab_size, (batch, text))
        labels[0, -1] = IGNORE  # an untargeted position, so ignore_index stays in the graph
        axes = {"tokens": {0: B, 1: N}, "labels": {0: B, 1: "seq"}, "logits": {0: B, 1: "seq"}}
    else:
        labels = torch.zeros(batch, dtype=torch.int64)
        axes = {"tokens": {0: B, 1: N}, "labels": {0: B}, "logits": {0: B}}
    args = (x,) + ((key_bias,) if bias else ()) + (labels,)
    inputs = ["tokens"] + (["key_bias"] if bias else []) + ["labels"]
    if bias:
        axes["key_bias"] = {0: B, 1: N}
    return _finish(_Head(model, bias), model, args, inputs, ["loss", "logits"],
                   axes, grad_input="tokens", seed=None, loss="loss")
