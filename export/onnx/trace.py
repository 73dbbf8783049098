"""torch → ONNX with the legacy TorchScript exporter, plus the fixes ORT 1.19.2 training needs.

Every graph we write goes through ``save_model``, which clamps the IR version to what the
runtime accepts. ``to_onnx`` keeps parameter names (no constant folding, no deduplication of
equal-valued tensors) so they can be matched to the model's ``named_parameters``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

MAX_IR_VERSION = 10  # onnxruntime 1.19.2 refuses newer
OPSET = 17


def clamp_ir(model: onnx.ModelProto) -> onnx.ModelProto:
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` with its IR version clamped (the only way graphs leave this package)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(clamp_ir(model), str(path))
    return path


def clamp_file(path: str | Path) -> None:
    """Clamp the IR version of a graph someone else wrote (generate_artifacts' outputs)."""
    model = onnx.load_model(str(path))
    if model.ir_version > MAX_IR_VERSION:
        save_model(model, path)


def to_onnx(module: nn.Module, args: tuple, input_names: Sequence[str],
            output_names: Sequence[str], dynamic_axes: dict) -> onnx.ModelProto:
    """Trace ``module(*args)``. Parameters stay initializers named by ``named_parameters``.

    TrainingMode.TRAINING stops the exporter from merging parameters that merely hold equal
    values (LoRA's zero B matrices, IA3's ones), which would break name → tensor matching.
    """
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, buf, input_names=list(input_names), output_names=list(output_names),
            dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=False,
            training=torch.onnx.TrainingMode.TRAINING, dynamo=False)
    model = onnx.load_model_from_string(buf.getvalue())
    add_gradient_outputs(model)
    return clamp_ir(model)


# Optional outputs ORT's gradient builders read: LayerNormalization's mean and inv-std,
# SoftmaxCrossEntropyLoss's log-probabilities, and (RMSNorm, fused by ORT's optimizer)
# SimplifiedLayerNormalization's inv-std.
_EXTRA_OUTPUTS = {"LayerNormalization": ("_mean", "_inv_std"), "SoftmaxCrossEntropyLoss": ("_log_prob",),
                  "SimplifiedLayerNormalization": ("_inv_std",)}


def add_gradient_outputs(model: onnx.ModelProto) -> None:
    """Give nodes the optional outputs ORT's gradient builder needs (torch leaves them off)."""
    for node in model.graph.node:
        extra = _EXTRA_OUTPUTS.get(node.op_type, ())
        if extra and len(node.output) == 1:
            node.output.extend(node.output[0] + e for e in extra)


def strip_prefix(model: onnx.ModelProto, prefix: str) -> None:
    """Rename initializers ``prefix + name`` → ``name`` everywhere in the graph."""
    renames = {t.name: t.name[len(prefix):] for t in model.graph.initializer
               if t.name.startswith(prefix)}
    rename_tensors(model, renames)


def rename_tensors(model: onnx.ModelProto, renames: dict[str, str]) -> None:
    g = model.graph
    for t in g.initializer:
        t.name = renames.get(t.name, t.name)
    for v in list(g.input) + list(g.output) + list(g.value_info):
        v.name = renames.get(v.name, v.name)
    for node in g.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)


def initializers_to_inputs(model: onnx.ModelProto, names: Sequence[str]) -> None:
    """Turn the named initializers into graph inputs (the runtime feeds parameters)."""
    g = model.graph
    wanted = set(names)
    keep = [t for t in g.initializer if t.name not in wanted]
    moved = [t for t in g.initializer if t.name in wanted]
    del g.initializer[:]
    g.initializer.extend(keep)
    for t in moved:
        g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


# Element types of contrib-op outputs ONNX shape inference does not know (by output position;
# None: the type of the node's first input). ORT's fusions (Gelu, FusedMatMul, ...) keep it.
_CONTRIB_OUTPUT_TYPES = {"ConcatTraining": (None, TensorProto.INT64)}


def tensor_elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor in ``model``: ONNX shape inference, with the outputs of
    ORT's contrib ops (which it skips, and stops at) typed by rule and inference rerun."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    while True:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        types = {v.name: v.type.tensor_type.elem_type
                 for v in list(inferred.input) + list(inferred.output) + list(inferred.value_info)}
        types.update({t.name: t.data_type for t in inferred.initializer})
        types = {k: v for k, v in types.items() if v != TensorProto.UNDEFINED}
        added = []
        for node in g.node:
            standard = node.domain in ("", "ai.onnx") and onnx.defs.has(node.op_type)
            if standard or not node.input or node.input[0] not in types:
                continue
            rule = _CONTRIB_OUTPUT_TYPES.get(node.op_type, ())
            for i, out in enumerate(node.output):
                if out and out not in types:
                    t = rule[i] if i < len(rule) and rule[i] is not None else types[node.input[0]]
                    types[out] = t
                    added.append(helper.make_tensor_value_info(out, t, None))
        if not added:
            return types
        g.value_info.extend(added)
