"""LoRA's factor gradients without the merged weight's gradient.

LoRA's layer runs one product with the merged weight W' = W + s·B·A (export/peft/lora.py), so
the gradient builder differentiates through W': it forms dW' = dYᵀ·X (out × in, an inner
dimension of batch × tokens: as costly as full fine-tuning's weight gradient) and then
dA = s·Bᵀ·dW', dB = s·dW'·Aᵀ. The same products taken in the other order,

    dA = s·(dY·B)ᵀ·X,   dB = s·dYᵀ·(X·Aᵀ),

need four products of rank r instead (dY·B and X·Aᵀ are batch·tokens × r): the frozen weight's
gradient is never formed. :func:`reassociate_lora_grads` rewrites that pattern in a gradient
graph (fp32 reordering only) and leaves anything else as it is.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

_A, _B = "lora_A.weight", "lora_B.weight"


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _gemm_flags(node) -> tuple[int, int, float] | None:
    """(transA, transB, alpha) of a plain product Gemm (no C, beta irrelevant), else None."""
    if node.op_type != "Gemm" or len([i for i in node.input if i]) != 2:
        return None
    a = _attrs(node)
    return int(a.get("transA", 0)), int(a.get("transB", 0)), float(a.get("alpha", 1.0))


def reassociate_lora_grads(model: onnx.ModelProto) -> int:
    """Rewrite each LoRA pair's gradients in ``model`` in place; returns how many pairs."""
    g = model.graph
    graph_nodes = list(g.node)  # one set of node objects for every lookup and the rebuild
    position = {id(n): k for k, n in enumerate(graph_nodes)}
    producer = {o: n for n in graph_nodes for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph_nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    params = {t.name for t in g.initializer} | {i.name for i in g.input}
    scalars = {t.name: numpy_helper.to_array(t) for t in g.initializer if t.dims in ([], [1])}
    remove: list = []
    new: list[tuple[int, list]] = []  # (position of the node they replace, nodes)
    count = 0
    for a_name in sorted(p for p in params if p.endswith(_A)):
        b_name = a_name[: -len(_A)] + _B
        ga, gb = producer.get(a_name + "_grad"), producer.get(b_name + "_grad")
        if ga is None or gb is None:
            continue
        fa, fb = _gemm_flags(ga), _gemm_flags(gb)
        # dA = α₁·Bᵀ·G (Gemm(B, G, transA=1)), dB = α₂·G·Aᵀ (Gemm(G, A, transB=1))
        if fa is None or fb is None or fa[:2] != (1, 0) or fb[:2] != (0, 1) \
                or ga.input[0] != b_name or gb.input[1] != a_name \
                or ga.input[1] != gb.input[0]:
            continue
        # walk G back to the product that made it, through Identity / Transpose / Mul by a scalar
        chain, name, scale, transposed = [], ga.input[1], 1.0, False
        while True:
            ours = {id(n) for n in chain + [ga, gb]}
            if name in outputs or any(id(c) not in ours for c in consumers.get(name, [])):
                break  # read elsewhere: keep the graph as it is
            node = producer.get(name)
            if node is None:
                break
            if node.op_type == "Identity":
                chain.append(node)
                name = node.input[0]
            elif node.op_type == "Transpose" and list(_attrs(node).get("perm", [1, 0])) == [1, 0]:
                chain.append(node)
                transposed = not transposed
                name = node.input[0]
            elif node.op_type == "Mul" and (node.input[0] in scalars or node.input[1] in scalars):
                k, other = (0, 1) if node.input[0] in scalars else (1, 0)
                scale *= float(scalars[node.input[k]].reshape(()))
                chain.append(node)
                name = node.input[other]
            else:
                break
        prod = producer.get(name)
        flags = _gemm_flags(prod) if prod is not None else None
        if flags is None or name in outputs or len(consumers.get(name, [])) != 1 \
                or prod.input[0] in params or prod.input[1] in params:
            continue
        ta, tb, alpha = flags
        p1, p2 = prod.input[0], prod.input[1]
        c = scale * alpha
        tag = a_name[: -len(_A)]
        t, s = tag + "lora_dY_B", tag + "lora_X_At"
        # G = c·(U·V) or c·(U·V)ᵀ with U = op_ta(P1) (the layer input side), V = op_tb(P2)
        if transposed:  # G = c·Vᵀ·Uᵀ (out × in): U is in × n, V is n × out
            nodes = [helper.make_node("Gemm", [p2, b_name], [t], transA=tb, name=t),
                     helper.make_node("Gemm", [t, p1], [ga.output[0]], transA=1, transB=1 - ta,
                                      alpha=fa[2] * c, name=ga.name),
                     helper.make_node("Gemm", [p1, a_name], [s], transA=1 - ta, transB=1, name=s),
                     helper.make_node("Gemm", [p2, s], [gb.output[0]], transA=1 - tb,
                                      alpha=fb[2] * c, name=gb.name)]
        else:  # G = c·U·V (out × in): U is out × n, V is n × in
            nodes = [helper.make_node("Gemm", [p1, b_name], [t], transA=1 - ta, name=t),
                     helper.make_node("Gemm", [t, p2], [ga.output[0]], transA=1, transB=tb,
                                      alpha=fa[2] * c, name=ga.name),
                     helper.make_node("Gemm", [p2, a_name], [s], transA=tb, transB=1, name=s),
                     helper.make_node("Gemm", [p1, s], [gb.output[0]], transA=ta,
                                      alpha=fb[2] * c, name=gb.name)]
        remove += [prod, *chain, ga, gb]
        new.append((min(position[id(ga)], position[id(gb)]), nodes))
        count += 1
    if not count:
        return 0
    gone = {id(n) for n in remove}
    at = {pos: nodes for pos, nodes in new}
    kept = []
    for k, node in enumerate(graph_nodes):
        kept.extend(at.get(k, []))
        if id(node) not in gone:
            kept.append(node)
    del g.node[:]
    g.node.extend(kept)
    return count

