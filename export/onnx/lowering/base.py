"""The lowering registry, the node builder lowerings share, and the graph pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgetune.errors import EdgetuneError

MS = "com.microsoft"
# Contrib ops in every stock build, CPU and CUDA execution providers alike (QuickGelu: x·σ(αx),
# what ORT fuses SiLU into). SimplifiedLayerNormalization (RMSNorm) is ORT's too, in the
# default domain: it passes as is.
STOCK_CONTRIB = frozenset({"FusedMatMul", "Gelu", "BiasGelu", "FastGelu", "QuickGelu"})
INT64_MAX = np.iinfo(np.int64).max


class LoweringError(EdgetuneError):
    """A training-only op with no lowering, or with attributes its lowering cannot express."""


class Builder:
    """Emits the standard nodes that replace one training op; names are unique per node."""

    def __init__(self, node: onnx.NodeProto, ranks: dict[str, int], graph: Constants):
        self.node = node
        self._graph = graph
        self.prefix = (node.name or node.output[0]) + "/lowered"
        self.ranks = ranks
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    @property
    def attrs(self) -> dict:
        return {a.name: helper.get_attribute_value(a) for a in self.node.attribute}

    def input(self, i: int) -> str:
        """The node's ``i``-th input, '' when absent."""
        return self.node.input[i] if i < len(self.node.input) else ""

    def wants(self, i: int) -> bool:
        """Whether the node's ``i``-th output is used (named)."""
        return i < len(self.node.output) and bool(self.node.output[i])

    def rank(self, name: str) -> int:
        if name not in self.ranks:
            raise LoweringError(f"{self.node.op_type} {self.node.name!r}: rank of {name!r} unknown")
        return self.ranks[name]

    def constant(self, name: str) -> np.ndarray:
        """The value of ``name`` if constants alone compute it (else a :class:`LoweringError`)."""
        value = self._graph.value(name)
        if value is None:
            raise LoweringError(f"{self.node.op_type} {self.node.name!r}: {name!r} is not a "
                                "constant; this lowering needs its value")
        return value

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        """Add ``op_type(inputs)``; returns its (single) output, ``out`` if given."""
        return self.op_n(op_type, list(inputs), [out] if out else 1, **attrs)[0]

    def op_n(self, op_type: str, inputs: list[str], outs, **attrs) -> list[str]:
        """Add a node with several outputs: ``outs`` a count or a list of names."""
        if isinstance(outs, int):
            outs = [self._fresh(op_type) for _ in range(outs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self._fresh(op_type),
                                           **attrs))
        return outs

    def const(self, value, dtype=np.int64) -> str:
        array = np.asarray(value, dtype=dtype)
        name = self._fresh("const")
        self.nodes.append(helper.make_node("Constant", [], [name], name=name + "/node",
                                           value=numpy_helper.from_array(array, name)))
        return name

    def _fresh(self, kind: str) -> str:
        self._count += 1
        return f"{self.prefix}/{kind}_{self._count}"


Lowering = Callable[[Builder], None]
LOWERINGS: dict[str, Lowering] = {}


def lowering(op_type: str) -> Callable[[Lowering], Lowering]:
    """Register ``fn`` as the lowering of ``com.microsoft`` op ``op_type``."""
    def register(fn: Lowering) -> Lowering:
        if op_type in LOWERINGS:
            raise ValueError(f"lowering for {op_type} registered twice")
        LOWERINGS[op_type] = fn
        return fn
    return register


def nonstandard_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Count of nodes per op type that stock ORT lacks (non-default domain, not stock contrib)."""
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") and node.op_type not in STOCK_CONTRIB:
            out[node.op_type] = out.get(node.op_type, 0) + 1
    return out


class Constants:
    """Values of the tensors a graph computes from initializers and ``Constant`` nodes alone,
    evaluated on demand with ONNX's reference evaluator."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self._values = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self._producer = {o: n for n in g.node for o in n.output if o}
        self._opsets = list(model.opset_import)
        self._inputs = {i.name for i in g.input}

    def value(self, name: str) -> np.ndarray | None:
        if name in self._values or name in self._inputs:
            return self._values.get(name)
        node = self._producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx"):
            return None
        args = [self.value(i) if i else None for i in node.input]
        if any(a is None for a, i in zip(args, node.input) if i):
            return None
        from onnx.reference import ReferenceEvaluator

        feeds = {i: a for i, a in zip(node.input, args) if i}
        inputs = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                  for i, a in feeds.items()]
        outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                   for o in node.output if o]
        graph = helper.make_graph([node], "fold", inputs, outputs)
        results = ReferenceEvaluator(helper.make_model(graph, opset_imports=self._opsets)).run(None, feeds)
        for o, r in zip([o for o in node.output if o], results):
            self._values[o] = np.asarray(r)
        return self._values.get(name)


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    ranks = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        t = v.type.tensor_type
        if t.HasField("shape"):
            ranks[v.name] = len(t.shape.dim)
    ranks.update({t.name: len(t.dims) for t in g.initializer})
    return ranks


def lower(model: onnx.ModelProto, what: str = "graph") -> onnx.ModelProto:
    """``model`` with every training-only node replaced by standard ops (in place; returned)."""
    g = model.graph
    ranks, constants = _ranks(model), Constants(model)
    new_nodes: list[onnx.NodeProto] = []
    for node in g.node:
        if node.domain in ("", "ai.onnx") or node.op_type in STOCK_CONTRIB:
            new_nodes.append(node)
            continue
        fn = LOWERINGS.get(node.op_type)
        if fn is None:
            raise LoweringError(f"{what}: op {node.domain}.{node.op_type} ({node.name!r}) is not "
                                f"in stock onnxruntime and has no lowering; known: "
                                f"{', '.join(sorted(LOWERINGS))}")
        b = Builder(node, ranks, constants)
        fn(b)
        new_nodes.extend(b.nodes)
    del g.node[:]
    g.node.extend(new_nodes)
    read = {i for n in new_nodes for i in n.input} | {o.name for o in g.output}
    unused = [t for t in g.initializer if t.name not in read]
    for t in unused:  # e.g. ConvGrad's weight, which its lowering never reads
        g.initializer.remove(t)
    _drop_unused_domains(model, {n.domain for n in new_nodes})
    return model


def _drop_unused_domains(model: onnx.ModelProto, used: Iterable[str]) -> None:
    used = set(used) | {""}
    keep = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)
