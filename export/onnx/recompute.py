"""Selective recomputation: forward tensors the backward graph recomputes from what crosses to it
anyway, instead of the forward graph saving them (Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models", arXiv 2205.05198: the attention probabilities
cost little compute per byte; the MLP's activation costs one matmul per 4·d bytes a token).

A rule names which saved tensors are candidates; a candidate is recomputed when a chain of at
most ``MAX_CHAIN`` forward nodes computes it from tensors that are available to backward: those
that still cross, graph inputs (the block's feeds and parameters), tensors computed from
parameters alone, and earlier recomputed ones. Nothing new crosses for it, so a recomputation
only lowers what is held from forward to backward, at the price of the chain's compute in
backward (and, inside one block's backward, its rebuilt tensors next to their gradients).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import onnx

from edgetune.registry import Registry

ACTIVATIONS = ("Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Relu", "Tanh", "Sigmoid")
MAX_CHAIN = 8   # forward nodes per recomputed tensor (parameter-only ones not counted)
MATMULS = ("MatMul", "FusedMatMul", "Gemm")
MAX_MATMULS = 1  # per chain: the probabilities' q·kᵀ, or the MLP's first linear layer


@dataclass(frozen=True)
class Rule:
    """Which saved tensors may be rebuilt (``applies(tensor, producer, consumers)``), with at
    most ``matmuls`` matrix products per chain."""

    applies: Callable[[str, onnx.NodeProto, Sequence[onnx.NodeProto]], bool]
    matmuls: int = MAX_MATMULS


RULES: Registry[Rule] = Registry("recompute rule")
RULES.add("softmax", Rule(lambda t, producer, consumers: producer.op_type == "Softmax"))
RULES.add("activation", Rule(lambda t, producer, consumers: producer.op_type in ACTIVATIONS
                             or any(c.op_type in ACTIVATIONS for c in consumers)))
# an activation's output from its input alone: elementwise, no matmul (the input stays saved)
RULES.add("activation_output", Rule(lambda t, producer, consumers: producer.op_type in ACTIVATIONS,
                                    matmuls=0))
DEFAULT_RULES = ("softmax", "activation")
# The saving (``_store``) graphs: what costs no linear layer's matmul is still rebuilt (the
# probabilities' q·kᵀ is N·N·d per head; the MLP's pre-activation would take a D × 4D product).
SAVING_RULES = ("softmax", "activation_output")


def recompute(crossing: set[str], fwd_nodes: Sequence[onnx.NodeProto], static: set[str],
              fwd_outputs: Iterable[str], rules: Sequence[str]) -> list[onnx.NodeProto]:
    """Drop from ``crossing`` (in place) what ``rules`` let backward recompute; returns the
    forward nodes backward must run for it (parameter-only producers included)."""
    if not rules:
        return []
    checks = [RULES.get(r) for r in rules]
    producer = {o: n for n in fwd_nodes for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in fwd_nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = set(fwd_outputs)
    position = {id(n): k for k, n in enumerate(fwd_nodes)}
    done: set[str] = set()          # tensors now recomputed
    chosen: dict[int, onnx.NodeProto] = {}
    for t in sorted(crossing - outputs, key=lambda name: position[id(producer[name])]):
        budgets = [rule.matmuls for rule in checks if rule.applies(t, producer[t], consumers.get(t, ()))]
        if t not in crossing or not budgets:
            continue
        chain = _chain(t, producer, crossing - {t}, done, static, max(budgets))
        if chain is None:
            continue
        for node in chain:
            chosen[id(node)] = node
            for o in node.output:
                if o:
                    crossing.discard(o)
                    done.add(o)
    return sorted(chosen.values(), key=lambda n: position[id(n)])


def _chain(t: str, producer: dict[str, onnx.NodeProto], available: set[str], done: set[str],
           static: set[str], max_matmuls: int) -> list[onnx.NodeProto] | None:
    """The forward nodes computing ``t`` from available tensors, or None past ``MAX_CHAIN``
    nodes or ``max_matmuls`` matrix products."""
    chain: dict[int, onnx.NodeProto] = {}
    counted, matmuls, stack, seen = 0, 0, [t], {t}
    while stack:
        name = stack.pop()
        if name != t and (name in available or name in done or name not in producer):
            continue  # crosses anyway, already recomputed, or a graph input / initializer
        node = producer[name]
        if id(node) in chain:
            continue
        chain[id(node)] = node
        if not all(o in static for o in node.output if o):
            counted += 1
            matmuls += node.op_type in MATMULS
            if counted > MAX_CHAIN or matmuls > max_matmuls:
                return None
        for i in node.input:
            if i and i not in seen:
                seen.add(i)
                stack.append(i)
    return list(chain.values())
