"""Static mode: ORT's own training artifacts (training, eval, optimizer graphs + checkpoint).

The traced model takes the raw inputs and ``keep`` (L,) int64, and returns ``logits`` and
``cls_delta`` (L,): ALaST's per-layer importance, mean over the batch of the squared change of
the class token. The loss is ORT's cross-entropy on the logits (mean over the batch); the
labels input is named ``labels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from edgetune.bundle import STATIC_FILES, TOKEN_BUDGETS
from edgetune.export.models.base import TransformerModel
from edgetune.export.onnx.gradients import quiet_ort, quiet_stderr
from edgetune.export.onnx.low_rank import reassociate_lora_grads
from edgetune.export.onnx.trace import clamp_file, save_model, strip_prefix, to_onnx


def cls_delta(cls_tokens: Sequence[Tensor]) -> Tensor:
    """ALaST's importance inside the traced graph, (L,) from the L+1 class tokens (B, D):
    Δ_l = mean over the batch of Σ_features (CLS_l − CLS_{l−1})².

    The torch twin of :func:`edgetune.schedule.alast.importance.class_token_delta`, which owns
    the definition (and the adaptive runtime's Δ); tests/test_export_static.py checks this
    graph's ``cls_delta`` against it.
    """
    return torch.stack([((b - a) ** 2).sum(-1).mean() for a, b in zip(cls_tokens, cls_tokens[1:])])


class _Whole(nn.Module):
    def __init__(self, model: TransformerModel):
        super().__init__()
        self.model = model

    def forward(self, *args: Tensor):
        *inputs, keep = args
        out = self.model.forward_features(*inputs, keep=keep)
        return out.logits, cls_delta(out.cls_tokens)


def trace_whole(model: TransformerModel, batch: int = 2, tokens: int | None = None) -> onnx.ModelProto:
    """The whole model with ``keep`` as an input; batch (and sequence length for text) dynamic."""
    model.eval()
    example = model.example_inputs(batch, tokens)
    with torch.no_grad():
        n = model.embed(*example)[0].shape[1]
    keep = torch.tensor([max(2, n - 1 - i) for i in range(model.num_layers)])
    text = "attention_mask" in model.input_names
    axes = {name: ({0: "batch", 1: "seq"} if text else {0: "batch"}) for name in model.input_names}
    axes["logits"] = {0: "batch"}
    graph = to_onnx(_Whole(model), (*example, keep), [*model.input_names, "keep"],
                    ["logits", "cls_delta"], axes)
    strip_prefix(graph, "model.")
    return graph


class _Logits(nn.Module):
    """inputs → logits, with the token budgets a tensor of the graph (``TOKEN_BUDGETS``, all 1:
    every token kept) that ``edgetune merge`` overwrites with an ALaST run's."""

    def __init__(self, model: TransformerModel):
        super().__init__()
        self.model = model
        self.register_parameter(TOKEN_BUDGETS, nn.Parameter(torch.ones(model.num_layers),
                                                            requires_grad=False))

    def forward(self, *inputs: Tensor):
        return self.model.forward_features(*inputs, budgets=getattr(self, TOKEN_BUDGETS)).logits


def trace_inference(model: TransformerModel, batch: int = 2, tokens: int | None = None) -> onnx.ModelProto:
    """The plain model (inputs → logits; every token kept until ``edgetune merge`` writes an
    ALaST run's budgets into its ``token_budgets``)."""
    model.eval()
    example = model.example_inputs(batch, tokens)
    text = "input_ids" in model.input_names
    axes = {name: ({0: "batch", 1: "seq"} if text else {0: "batch"}) for name in model.input_names}
    axes["logits"] = {0: "batch", 1: "seq"} if model.task == "causal_lm" else {0: "batch"}
    graph = to_onnx(_Logits(model), example, list(model.input_names), ["logits"], axes)
    strip_prefix(graph, "model.")
    return graph


def export_static(model: TransformerModel, trainable: list[str], out_dir: str | Path,
                  batch: int = 2, tokens: int | None = None, optimizer: str = "AdamW") -> dict:
    """Write ORT's artifacts into ``out_dir``; returns the index entry describing them."""
    from onnxruntime.training import artifacts

    quiet_ort()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # generate_artifacts wants it to exist
    graph = trace_whole(model, batch, tokens)
    extra = ["logits", "cls_delta"]
    present = {t.name for t in graph.graph.initializer}
    params = [n for n, _ in model.named_parameters() if n in present]
    requires_grad = [n for n in params if n in set(trainable)]
    frozen = [n for n in params if n not in set(trainable)]
    with quiet_stderr():  # the artifact builder logs at INFO whatever the default severity
        artifacts.generate_artifacts(
            graph, requires_grad=requires_grad, frozen_params=frozen,
            loss=artifacts.LossType.CrossEntropyLoss,
            optimizer=getattr(artifacts.OptimType, optimizer), artifact_directory=str(out_dir),
            additional_output_names=extra, loss_input_names=["logits"])
    training = out_dir / STATIC_FILES["training"]
    graph = onnx.load_model(str(training))
    if reassociate_lora_grads(graph):  # LoRA's factor gradients without dW' (low_rank.py)
        save_model(graph, training)
    for key in ("training", "eval", "optimizer"):
        clamp_file(out_dir / STATIC_FILES[key])
    evaluation = onnx.load_model(str(out_dir / STATIC_FILES["eval"]), load_external_data=False)
    return {
        "files": dict(STATIC_FILES),  # the names generate_artifacts writes
        "inputs": [i.name for i in evaluation.graph.input if i.name not in present],
        "outputs": [o.name for o in evaluation.graph.output],
        "trainable": requires_grad,
        "frozen": frozen,
    }
