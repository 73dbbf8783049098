"""Graphs for runs that keep their state on an accelerator (standard ONNX ops): the optimizer,
and the class token the scheduler reads.

Elementwise over tensors of any shape, so one graph serves every parameter:

- ``adamw``: (p, g, m, v, β1, 1−β1, β2, 1−β2, ε, step, decay) →
  m' = β1 m + (1−β1) g, v' = β2 v + (1−β2) g², p'' = p − (step·m')/(√v' + ε), p' = p'' − decay·p''
  (``step`` = lr·√(1−β2^t)/(1−β1^t), ``decay`` = lr·λ: ORT's and edgetune's numpy AdamW).
- ``accumulate``: (acc, g, w) → acc + w·g (gradients summed over micro-batches; acc may be 0).
- ``class_token``: x (B, N, D) → x[:, 0] (B, D): what ALaST's Δ needs of a block's output, so
  only B·D floats per block cross to the host, not B·N·D.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from edgetune.export.onnx.trace import OPSET, save_model

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, name) -> onnx.ModelProto:
    vi = [helper.make_tensor_value_info(n, F, None) for n in inputs]
    vo = [helper.make_tensor_value_info(n, F, None) for n in outputs]
    graph = helper.make_graph(nodes, name, vi, vo)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="edgetune")


def adamw_graph() -> onnx.ModelProto:
    n = helper.make_node
    nodes = [
        n("Mul", ["beta1", "m"], ["m_b"]), n("Mul", ["one_minus_beta1", "g"], ["g_b"]),
        n("Add", ["m_b", "g_b"], ["m_out"]),
        n("Mul", ["g", "g"], ["g2"]), n("Mul", ["beta2", "v"], ["v_b"]),
        n("Mul", ["one_minus_beta2", "g2"], ["g2_b"]), n("Add", ["v_b", "g2_b"], ["v_out"]),
        n("Sqrt", ["v_out"], ["root"]), n("Add", ["root", "eps"], ["denom"]),
        n("Mul", ["step", "m_out"], ["scaled"]), n("Div", ["scaled", "denom"], ["delta"]),
        n("Sub", ["p", "delta"], ["p_adam"]), n("Mul", ["decay", "p_adam"], ["shrink"]),
        n("Sub", ["p_adam", "shrink"], ["p_out"]),
    ]
    inputs = ["p", "g", "m", "v", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "eps",
              "step", "decay"]
    return _model(nodes, inputs, ["p_out", "m_out", "v_out"], "adamw")


def accumulate_graph() -> onnx.ModelProto:
    nodes = [helper.make_node("Mul", ["w", "g"], ["wg"]),
             helper.make_node("Add", ["acc", "wg"], ["acc_out"])]
    return _model(nodes, ["acc", "g", "w"], ["acc_out"], "accumulate")


def class_token_graph() -> onnx.ModelProto:
    zero = helper.make_node("Constant", [], ["zero"],
                            value=helper.make_tensor("zero", TensorProto.INT64, [], [0]))
    take = helper.make_node("Gather", ["x", "zero"], ["cls"], axis=1)
    return _model([zero, take], ["x"], ["cls"], "class_token")


def write_optimizer(folder: Path) -> dict[str, str]:
    """Write the graphs under ``folder/optim/``; returns name → relative path for the index."""
    graphs = {"adamw": adamw_graph(), "accumulate": accumulate_graph(),
              "class_token": class_token_graph()}
    files = {name: f"optim/{name}.onnx" for name in graphs}
    for name, graph in graphs.items():
        save_model(graph, folder / files[name])
    return files
