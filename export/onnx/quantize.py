"""An int8 frozen base: the frozen weights' products in a lowered graph run on int8 kernels.

A product ``X·B`` whose ``B`` is a frozen parameter (or its transpose: a linear layer's forward
``x·Wᵀ`` and its input gradient ``dy·W``) becomes onnxruntime's contrib op
``DynamicQuantizeMatMul(X, Q, s)``: ``B`` stored as a constant int8 initializer, quantized per
output channel, symmetric (Jacob et al. 2018, arXiv 1712.05877), on 7 bits:

    s_j = max_k |B_kj| / 63,   Q_kj = round(B_kj / s_j) ∈ [−63, 63],   |Q_kj·s_j − B_kj| ≤ s_j / 2,

and ``X`` quantized per tensor to uint8 at run time; the 8-bit GEMM is MLAS's, which pre-packs
``Q`` because it is a constant. Seven bits, not eight ("reduce range", onnxruntime's own
quantizer's answer): MLAS's uint8 × int8 kernel on x86 without VNNI (AVX2) sums pairs of
products in int16, and 255·127·2 saturates it (a micro product was off by 16 % of its norm)
where 255·63·2 < 2¹⁵ never does; with VNNI (AVX-512 or AVX-VNNI) and on ARM that kernel is the
fastest one (bench/int8_kernels.py: up to 7× a float32 MatMul), and a bundle is exported
before anyone knows its device's CPU.

A product whose ``X`` is a gradient (``dy·W``: it descends from a ``*_grad`` tensor or the
``dy`` / ``dtokens`` input) runs ``MatMulNBits`` (bits 8, ``accuracy_level`` 4): ``W`` in
blocks of :data:`BLOCK` along K, each with its own scale, and ``X`` quantized at run time per
row in the same blocks (s = max|x| / 127 per block), the products int8 with float32 sums.
Gradients are heavy-tailed: one per-tensor uint8 scale for them (DynamicQuantizeMatMul) cost
LoRA's factor gradients 2–10 % (relative norm) on a micro BERT; per-block scales cost 1–2 %,
as float32 arithmetic on the dequantized weight (``accuracy_level`` 0) does, at 0.8–1.0× a
float32 MatMul's speed where level 4 runs 1.1–1.5× (bench/int8_kernels.py). Each orientation
is quantized on its own (forward ``Q(Wᵀ)`` per output feature, backward ``Q(W)`` per input
feature); a product's ``alpha`` folds into the scales. Trainable parameters, activations and
gradients stay float32; parameters that anything else still reads (a norm's weight, a bias, a
tied embedding's lookup) stay graph inputs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgetune.bundle import BASE_DTYPES
from edgetune.errors import UsageError
from edgetune.quantize import BLOCK, quantize_blocks, quantize_columns

MS = "com.microsoft"
GRADIENT_ACCURACY = 4  # MatMulNBits' accuracy_level for gradient products: int8 compute
GRADIENT_INPUTS = ("dy", "dtokens")  # what the backward graphs take as incoming gradients


def check_base(base: str) -> str:
    if base not in BASE_DTYPES:
        raise UsageError(f"base={base!r}: must be one of {', '.join(BASE_DTYPES)}")
    return base


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _product(node: onnx.NodeProto) -> tuple[str, bool, float] | None:
    """(B input, whether the op transposes B, alpha) of a plain 2-input product with an
    untransposed A, else None."""
    a = _attrs(node)
    if node.op_type == "MatMul":
        return node.input[1], False, 1.0
    if node.op_type == "FusedMatMul" and not (a.get("transA", 0) or a.get("transBatchA", 0)
                                              or a.get("transBatchB", 0)):
        return node.input[1], bool(a.get("transB", 0)), float(a.get("alpha", 1.0))
    if node.op_type == "Gemm" and len([i for i in node.input if i]) == 2 and not a.get("transA", 0):
        return node.input[1], bool(a.get("transB", 0)), float(a.get("alpha", 1.0))
    return None


def quantize_frozen(model: onnx.ModelProto, frozen: Mapping[str, np.ndarray],
                    made: list[dict] | None = None) -> set[str]:
    """Rewrite ``model`` in place: every product with a frozen 2-D parameter of ``frozen``
    (fed as a graph input, or through ``Transpose(perm=[1, 0])``) runs ``DynamicQuantizeMatMul``.
    Returns the parameters no longer graph inputs (nothing else read them). ``made`` (if given)
    receives one entry per quantized weight a product reads: ``{"param", "transposed", "alpha",
    "kernel": "columns" | "blocks", "q", "scale"}`` (the last two: initializer names)."""
    g = model.graph
    inputs = {i.name for i in g.input}
    producer = {o: n for n in g.node for o in n.output}
    gradients = _gradient_tensors(g)
    inits: dict[str, onnx.TensorProto] = {}
    nodes: list[onnx.NodeProto] = []
    changed = 0
    for node in g.node:
        found = _product(node)
        source = _frozen_source(found[0], producer, inputs, frozen) if found else None
        if found is None or source is None:
            nodes.append(node)
            continue
        name, transposed_in_graph = source
        _, trans_b, alpha = found
        # B as the product uses it: P, or Pᵀ (a Transpose node xor transB)
        transposed = transposed_in_graph != trans_b
        w = frozen[name].T if transposed else frozen[name]
        tag = f"{name}{'.T' if transposed else ''}"
        label = (node.name or node.output[0])
        kernel = "blocks" if node.input[0] in gradients else "columns"
        if kernel == "blocks":
            q_name, s_name = _weights(inits, f"{tag}.q8b{BLOCK}", w, quantize_blocks, alpha)
            nodes.append(helper.make_node(
                "MatMulNBits", [node.input[0], q_name, s_name], list(node.output),
                name=label + "/q8", domain=MS, K=w.shape[0], N=w.shape[1], bits=8,
                block_size=BLOCK, accuracy_level=GRADIENT_ACCURACY))
        else:
            q_name, s_name = _weights(inits, f"{tag}.int8", w, quantize_columns, alpha)
            nodes.append(helper.make_node(
                "DynamicQuantizeMatMul", [node.input[0], q_name, s_name], list(node.output),
                name=label + "/int8", domain=MS))
        entry = {"param": name, "transposed": transposed, "alpha": alpha, "kernel": kernel,
                 "q": q_name, "scale": s_name}
        if made is not None and entry not in made:
            made.append(entry)
        changed += 1
    if not changed:
        return set()
    del g.node[:]
    g.node.extend(_without_dead_transposes(nodes, {o.name for o in g.output}))
    used = {i for n in g.node for i in n.input}  # a scale alpha replaced is read by nothing
    g.initializer.extend(t for name, t in inits.items() if name in used)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    read = used | {o.name for o in g.output}
    gone = {i.name for i in g.input if i.name in frozen and i.name not in read}
    kept = [i for i in g.input if i.name not in gone]
    del g.input[:]
    g.input.extend(kept)
    live = read | {o for n in g.node for o in n.output}
    vi = [v for v in g.value_info if v.name in live]
    del g.value_info[:]
    g.value_info.extend(vi)
    return gone


def _weights(inits: dict[str, onnx.TensorProto], name: str, w: np.ndarray,
             quantize: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
             alpha: float) -> tuple[str, str]:
    """(quantized weights, scales × ``alpha``) of ``w`` as initializers named after ``name``,
    made once per name."""
    scale = f"{name}.scale"
    if name not in inits:
        q, s = quantize(w)
        inits[name] = numpy_helper.from_array(q, name)
        inits[scale] = numpy_helper.from_array(s, scale)
    return name, _scaled(inits, scale, alpha)


def _scaled(inits: dict[str, onnx.TensorProto], scale: str, alpha: float) -> str:
    """The scales times ``alpha`` (y = α·X·B = X·Q·(α·s)), made once."""
    if alpha == 1.0:
        return scale
    name = f"{scale}.x{alpha!r}"
    if name not in inits:
        inits[name] = numpy_helper.from_array(
            (numpy_helper.to_array(inits[scale]) * np.float32(alpha)).astype(np.float32), name)
    return name


def _gradient_tensors(g: onnx.GraphProto) -> set[str]:
    """Tensors that carry a gradient: the incoming-gradient inputs, every ``*_grad`` tensor
    (ORT's gradient builder's names) and whatever is computed from them."""
    out = {i.name for i in g.input if i.name in GRADIENT_INPUTS}
    for node in g.node:  # topologically sorted
        if any(i in out or i.endswith("_grad") for i in node.input if i):
            out.update(o for o in node.output if o)
        out.update(o for o in node.output if o.endswith("_grad"))
    return out


def _frozen_source(b: str, producer: dict, inputs: set[str],
                   frozen: Mapping[str, np.ndarray]) -> tuple[str, bool] | None:
    """(parameter, whether ``b`` is its transpose) when ``b`` is a frozen 2-D parameter."""
    if b in inputs and b in frozen and np.ndim(frozen[b]) == 2:
        return b, False
    node = producer.get(b)
    if node is not None and node.op_type == "Transpose" and list(_attrs(node).get("perm", [])) == [1, 0]:
        src = node.input[0]
        if src in inputs and src in frozen and np.ndim(frozen[src]) == 2:
            return src, True
    return None


def _without_dead_transposes(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop Transpose nodes nothing reads any more (repeated: none feed each other here)."""
    uses: dict[str, int] = defaultdict(int)
    for n in nodes:
        for i in n.input:
            uses[i] += 1
    return [n for n in nodes
            if not (n.op_type == "Transpose" and uses[n.output[0]] == 0 and n.output[0] not in outputs)]
