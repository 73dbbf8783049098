"""Gradient graphs from ORT's ``GradientGraphBuilder``, pruned and split at the forward boundary.

The builder takes a graph with a scalar objective and returns forward + backward in one graph,
with ``<name>_grad`` outputs for the tensors asked for. ``split`` cuts it in two: the nodes the
original forward had (the *forward* graph) and the rest (the *backward* graph); every tensor the
backward reads from the forward becomes a forward output and a backward input ("saved").
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Sequence

import onnx
from onnx import helper

from edgetune.export.onnx.recompute import DEFAULT_RULES, recompute
from edgetune.export.onnx.trace import add_gradient_outputs, clamp_ir


def quiet_ort() -> None:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (ORT's C++ INFO logs) for the block; errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def build_gradient(model: onnx.ModelProto, wrt: Iterable[str], loss: str) -> onnx.ModelProto:
    """Forward + backward of scalar ``loss``; outputs ``<w>_grad`` for each name in ``wrt``."""
    import onnxruntime
    from onnxruntime.capi._pybind_state import GradientGraphBuilder

    quiet_ort()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    builder = GradientGraphBuilder(model.SerializeToString(), {loss}, set(wrt), loss, options)
    with quiet_stderr():
        builder.build()
    return clamp_ir(onnx.load_model_from_string(builder.get_model()))


def optimize_for_training(model: onnx.ModelProto, weights: Iterable[str]) -> onnx.ModelProto:
    """ORT's pre-training graph transformations (Gelu, LayerNorm, MatMul+Transpose/Scale fusions,
    constant folding except ``weights``), as ``generate_artifacts`` runs them before building
    gradients, with symbolic shapes attached.

    Without the fusions the gradient graph differentiates the unfused ops (more kernels, more
    saved activations; they cannot fuse later, their intermediates being outputs of the split
    forward graph). Without symbolic shapes the gradient builder cannot tell that the two
    sides of an Add have the same (data-dependent: reshape(-1), TopK) shape and emits
    Shape → BroadcastGradientArgs → ReduceSum for every one: a full copy of each gradient
    tensor at run time, and the forward's large tensors saved only for their shapes.
    """
    import onnxruntime
    from onnxruntime.capi._pybind_state import get_optimized_model

    quiet_ort()
    shapes = _symbolic_shapes(model)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    with quiet_stderr():  # the transformers log at INFO whatever the severity
        optimized = get_optimized_model(model.SerializeToString(), set(weights), options)
    optimized = onnx.load_model_from_string(optimized)
    add_gradient_outputs(optimized)  # of the nodes the optimizer fused (RMSNorm)
    g = optimized.graph
    made = {o for node in g.node for o in node.output if o}
    outer = {v.name for v in list(g.input) + list(g.output)}
    g.value_info.extend(v for name, v in shapes.items() if name in made and name not in outer)
    return clamp_ir(optimized)


def _symbolic_shapes(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Intermediate tensors' shapes with symbolic dims (ORT's symbolic shape inference); empty
    where it fails (the gradients stay right, only slower)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        with quiet_stderr(), contextlib.redirect_stdout(None):
            inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - an optimization, never a reason to fail the export
        return {}
    if inferred is None:
        return {}
    return {v.name: v for v in inferred.graph.value_info
            if v.type.tensor_type.HasField("shape")}


def forward_tensors(model: onnx.ModelProto, exclude_from: Sequence[str]) -> set[str]:
    """Tensors produced by nodes of ``model`` that do not depend on any of ``exclude_from``."""
    tainted = set(exclude_from)
    out: set[str] = set()
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if tainted.intersection(node.input):
            tainted.update(node.output)
        else:
            out.update(o for o in node.output if o)
    return out


def _value_info(name: str, types: dict[str, int], known: dict[str, onnx.ValueInfoProto]):
    if name in known:
        return known[name]
    if name not in types:
        raise ValueError(f"no element type known for tensor {name!r}")
    return helper.make_tensor_value_info(name, types[name], None)


def subgraph(model: onnx.ModelProto, nodes: list, outputs: Sequence[str], types: dict[str, int],
             name: str) -> onnx.ModelProto:
    """A model of the ``nodes`` needed for ``outputs``; inputs are whatever those nodes read
    that no kept node produces and no initializer holds."""
    g = model.graph
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    produced = {o for n in kept for o in n.output}
    inits = [t for t in g.initializer if t.name in needed and t.name not in produced]
    init_names = {t.name for t in inits}
    known = {v.name: v for v in list(g.input) + list(g.output) + list(g.value_info)}
    order = [v.name for v in g.input] + sorted(needed)
    inputs, seen = [], set()
    for n in order:
        if n in needed and n not in produced and n not in init_names and n not in seen:
            seen.add(n)
            inputs.append(_value_info(n, types, known))
    for n in outputs:
        if n not in produced and n not in seen:
            raise ValueError(f"{name}: output {n!r} is not computed by the graph")
    outs = [_value_info(n, types, known) for n in outputs]
    graph = helper.make_graph(kept, name, inputs, outs, inits)
    new = helper.make_model(graph, opset_imports=list(model.opset_import),
                            producer_name="edgetune")
    new.ir_version = model.ir_version
    return clamp_ir(new)


# Forward nodes whose outputs backward recomputes from their inputs rather than saving them:
# an Expand's output is a broadcast of a smaller tensor (GatherElements' index, [B, K, 1] int64
# broadcast to [B, K, D], would otherwise cross at 8·D bytes per token).
RECOMPUTED = ("Expand",)


def split(grad: onnx.ModelProto, forward_names: set[str], fwd_outputs: Sequence[str],
          bwd_outputs: Sequence[str], types: dict[str, int], params: Iterable[str] = (),
          seed: str | None = None, rules: Sequence[str] = DEFAULT_RULES):
    """Cut gradient graph ``grad`` at the forward boundary.

    Returns (forward model, backward model, saved names): forward computes ``fwd_outputs`` plus
    the saved tensors, backward computes ``bwd_outputs`` from them (and graph inputs).
    What crosses is kept small, since every saved tensor is copied out and held until backward:

    - tensors computed from ``params`` and constants alone (weight transposes, constants) are
      recomputed in the backward graph rather than saved: cheap, and inside one graph ORT
      fuses them into the matmuls (as a graph output a Transpose blocks that fusion);
    - so are the outputs of ``RECOMPUTED`` nodes (broadcasts), their smaller inputs crossing,
      and what ``rules`` select (recompute.py: the attention probabilities, the MLP's
      activations), from tensors that cross anyway;
    - ``Shape`` nodes the gradient builder added on forward tensors move into the forward
      graph, so a tensor backward reads only for its shape crosses as its shape;
    - ``seed``: the incoming gradient of a part traced with the objective ``sum(y · seed)``.
      ReduceSum's gradient reads the shape of the product, which is the seed's: it reads the
      seed's, so the product (and ``y`` for it) is not computed in backward.
    """
    params = set(params)
    if seed is not None:
        _shape_from_seed(grad, seed, fwd_outputs)
    fwd_nodes, bwd_nodes = [], []
    for node in grad.graph.node:
        outs = [o for o in node.output if o]
        is_fwd = outs and all(o in forward_names for o in outs)
        (fwd_nodes if is_fwd else bwd_nodes).append(node)
    fwd_made = {o for n in fwd_nodes for o in n.output}
    graph_inputs = {i.name for i in grad.graph.input}
    moved = [n for n in bwd_nodes if n.op_type == "Shape" and n.input[0] in fwd_made]
    fwd_nodes += moved
    fwd_made.update(o for n in moved for o in n.output)
    types = {**types, **{o: onnx.TensorProto.INT64 for n in moved for o in n.output}}
    bwd_nodes = [n for n in bwd_nodes if not any(n is m for m in moved)]
    # Forward tensors that depend on no data input: recomputed in backward, never saved.
    static = {t.name for t in grad.graph.initializer} | (graph_inputs & params)
    producer = {}
    for node in fwd_nodes:
        for o in node.output:
            producer[o] = node
        if all(i in static for i in node.input if i):
            static.update(o for o in node.output if o)
    needed, kept = set(bwd_outputs), []
    for node in reversed(bwd_nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    def recomputed(name: str) -> bool:
        return name in static or (producer[name].op_type in RECOMPUTED and name not in fwd_outputs)

    copied, crossing = [], set()
    stack = [n for n in needed if n in fwd_made]
    seen = set(stack)
    while stack:
        name = stack.pop()
        if not recomputed(name):
            crossing.add(name)
            continue
        node = producer[name]
        if not any(node is c for c in copied):
            copied.append(node)
            for i in node.input:
                if i and i in fwd_made and i not in seen:
                    seen.add(i)
                    stack.append(i)
    for node in recompute(crossing, fwd_nodes, static, fwd_outputs, rules):
        if not any(node is c for c in copied):
            copied.append(node)
    position = {id(n): k for k, n in enumerate(fwd_nodes)}
    copied.sort(key=lambda n: position[id(n)])
    saved = sorted(n for n in crossing if n not in fwd_outputs)
    needed = crossing | (needed - fwd_made)
    bwd = subgraph(grad, copied + list(reversed(kept)), bwd_outputs, types, "backward")
    fwd = subgraph(grad, fwd_nodes, list(fwd_outputs) + saved, types, "forward")
    _shield_outputs(fwd, _FRAGILE)
    return fwd, bwd, saved + [n for n in fwd_outputs if n in needed]


def _shape_from_seed(grad: onnx.ModelProto, seed: str, outputs: Sequence[str]) -> None:
    """Shape(y · seed) → Shape(seed) in ``grad``, for y one of the part's ``outputs`` (the
    objective's product: y and its incoming gradient have one shape)."""
    products = {n.output[0] for n in grad.graph.node
                if n.op_type == "Mul" and seed in n.input and set(n.input) - {seed} <= set(outputs)}
    for node in grad.graph.node:
        if node.op_type == "Shape" and node.input[0] in products:
            node.input[0] = seed


# Producers whose outputs ORT's optimizer may drop when they are graph outputs: in 1.19.2
# GatherToSliceFusion turns Gather(Range) into Slice and returns None for the Range output.
_FRAGILE = ("Range",)


def _shield_outputs(model: onnx.ModelProto, op_types: Sequence[str]) -> None:
    """Route graph outputs made by ``op_types`` nodes through an Identity (a second consumer
    keeps fusions from removing the producer)."""
    g = model.graph
    outputs = {o.name for o in g.output}
    for node in list(g.node):
        if node.op_type not in op_types:
            continue
        for i, out in enumerate(node.output):
            if out not in outputs:
                continue
            inner = out + "/inner"
            node.output[i] = inner
            for other in g.node:
                for j, name in enumerate(other.input):
                    if name == out:
                        other.input[j] = inner
            g.node.append(helper.make_node("Identity", [inner], [out], name=out + "/Identity"))

