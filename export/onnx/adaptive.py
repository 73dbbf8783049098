"""Adaptive (ALaST) mode: per-part forward / backward graphs with parameters as inputs.

Per block: ``forward`` (outputs only), and for each variant ``train`` (gradients for x and the
block's trainable parameters), ``frozen`` (x only) and ``first`` (the parameters only: the
lowest trained block when nothing below it trains, the stem included, so no input gradient):
``forward_<v>`` (outputs + saved activations) and ``backward_<v>`` (saved + dy → gradients).
Each variant comes twice: as is, backward recomputing what :mod:`.recompute`'s rules name (the
attention probabilities, the MLP's activation) from what crosses anyway, and as
``<kind>_<v>_store``, saving the MLP's pre-activation instead of rebuilding it with a linear
layer's matmul (faster; the runtime recomputes only where the RAM cap needs it). A block that
can drop tokens has a ``dense`` twin, traced keeping every token (no ranking, no gather or
scatter), which the runtime runs at a full keep count.
The stem gets the ``train`` variant when it has trainable parameters; the head one ``train``
graph (tokens + labels → loss, logits, gradients) and ``forward`` (→ logits). Every graph is
lowered to standard ONNX (:mod:`~edgetune.export.onnx.lowering`): stock onnxruntime runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import torch

from edgetune.bundle import STORE
from edgetune.export.models.base import TransformerModel
from edgetune.export.onnx.gradients import (
    build_gradient,
    forward_tensors,
    optimize_for_training,
    split,
    subgraph,
)
from edgetune.export.onnx.low_rank import reassociate_lora_grads
from edgetune.export.onnx.lowering import lower
from edgetune.export.onnx.parts import Traced, trace_block, trace_head, trace_stem
from edgetune.export.onnx.quantize import check_base, quantize_frozen
from edgetune.export.onnx.recompute import DEFAULT_RULES, SAVING_RULES
from edgetune.export.onnx.trace import initializers_to_inputs, tensor_elem_types
from edgetune.export.peft.lora import factor


@dataclass
class PartGraphs:
    """One part's graphs by variant name, with what the runtime needs to wire them."""

    graphs: dict[str, onnx.ModelProto]
    params: list[str]
    trainable: list[str]
    inputs: list[str]
    outputs: list[str]
    saved: dict[str, list[str]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # variant → variant with same graph
    dense: PartGraphs | None = None  # the block keeping every token (a block that drops some)

    def quantize(self, frozen: dict) -> None:
        """Every graph's frozen products on int8 kernels (:mod:`.quantize`)."""
        for graph in self.graphs.values():
            quantize_frozen(graph, frozen)
        if self.dense is not None:
            self.dense.quantize(frozen)

    def reads(self) -> set[str]:
        """The parameters some graph of this part (or its dense twin) takes as an input."""
        own = {i.name for g in self.graphs.values() for i in g.graph.input} & set(self.params)
        return own | (self.dense.reads() if self.dense is not None else set())


def _grad_name(name: str) -> str:
    return name + "_grad"


def export_part(traced: Traced, trainable: set[str], frozen_variant: bool,
                first_variant: bool = False) -> PartGraphs:
    model = traced.model
    initializers_to_inputs(model, traced.params)
    types = tensor_elem_types(model)
    nodes = list(model.graph.node)
    data_inputs = [i for i in traced.inputs if i != traced.seed]
    part = PartGraphs({"forward": subgraph(model, nodes, traced.outputs, types, "forward")},
                      list(traced.params), [p for p in traced.params if p in trainable],
                      data_inputs, list(traced.outputs))
    variants = {"train": part.trainable}
    if first_variant and part.trainable and traced.grad_input:
        variants["first"] = part.trainable
    if frozen_variant:
        if part.trainable:
            variants["frozen"] = []
        else:
            variants = {"frozen": []}
            part.aliases = {f"{k}_train{s}": f"{k}_frozen{s}" for k in ("forward", "backward")
                            for s in ("", STORE)}
    if traced.grad_input or any(variants.values()):
        # Differentiate the graph ORT's training transformers fused, as static mode does.
        model = optimize_for_training(model, traced.params)
        types = tensor_elem_types(model)
    fwd_names = forward_tensors(model, [traced.seed] if traced.seed else [])
    for variant, params in variants.items():
        wrt = ([traced.grad_input] if traced.grad_input and variant != "first" else []) + params
        if not wrt:
            continue
        grad = build_gradient(model, wrt, traced.loss)
        reassociate_lora_grads(grad)  # LoRA's factor gradients without dW' (low_rank.py)
        grads = [_grad_name(w) for w in wrt]
        for suffix, rules in (("", DEFAULT_RULES), (STORE, SAVING_RULES)):
            fwd, bwd, saved = split(grad, fwd_names, traced.outputs, grads, types,
                                    params=traced.params, seed=traced.seed, rules=rules)
            if suffix and saved == part.saved[variant]:
                continue  # nothing was recomputed: no second pair
            name = variant + suffix
            part.graphs[f"forward_{name}"] = lower(fwd, f"forward_{name}")
            part.graphs[f"backward_{name}"] = lower(bwd, f"backward_{name}")
            part.saved[name] = saved
    part.aliases = {k: v for k, v in part.aliases.items() if v in part.graphs}
    return part


def export_head(traced: Traced, trainable: set[str]) -> PartGraphs:
    model = traced.model
    initializers_to_inputs(model, traced.params)
    types = tensor_elem_types(model)
    params = [p for p in traced.params if p in trainable]
    wrt = [traced.grad_input] + params
    forward = subgraph(model, list(model.graph.node), ["logits"], types, "forward")
    model = optimize_for_training(model, traced.params)
    types = tensor_elem_types(model)
    grad = build_gradient(model, wrt, traced.loss)
    outs = ["loss", "logits"] + [_grad_name(w) for w in wrt]
    graphs = {"forward": forward,
              "train": lower(subgraph(grad, list(grad.graph.node), outs, types, "train"), "head train")}
    return PartGraphs(graphs, list(traced.params), params, list(traced.inputs), outs)


def export_adaptive(model: TransformerModel, trainable: set[str], batch: int = 2,
                    tokens: int | None = None, base: str = "fp32") -> dict[str, PartGraphs]:
    """All parts of ``model``: {"stem": ..., "block_00": ..., ..., "head": ...}; ``base``
    "int8": the frozen weights' products on int8 kernels (LoRA in its factored form)."""
    model.eval()
    if check_base(base) == "int8":
        factor(model, True)
        try:
            parts = export_adaptive(model, trainable, batch, tokens)
        finally:
            factor(model, False)
        frozen = {n: p.detach().cpu().numpy() for n, p in model.named_parameters()
                  if n not in trainable and p.dim() == 2}
        for part in parts.values():
            part.quantize(frozen)
        return parts
    example = model.example_inputs(batch, tokens)
    with torch.no_grad():
        n = model.embed(*example)[0].shape[1]
    parts = {"stem": export_part(trace_stem(model, example), trainable, frozen_variant=False)}
    keep = n
    for i in range(model.num_layers):
        # trace below the full count (a model that drops no tokens: at it)
        k = (max(2, keep - 1) if keep > 2 else keep) if model.drops_tokens else keep
        part = export_part(trace_block(model, i, batch, keep, k), trainable,
                           frozen_variant=True, first_variant=True)
        if model.drops_tokens:
            part.dense = export_part(trace_block(model, i, batch, keep, keep, dense=True),
                                     trainable, frozen_variant=True, first_variant=True)
        parts[f"block_{i:02d}"] = part
        keep = k
    parts["head"] = export_head(trace_head(model, batch, keep), trainable)
    return parts
