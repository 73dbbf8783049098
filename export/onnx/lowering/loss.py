"""The gradient of SoftmaxCrossEntropyLoss: softmax minus the one-hot labels."""

from __future__ import annotations

import numpy as np

from edgetune.export.onnx.lowering.base import Builder, LoweringError, lowering


@lowering("SoftmaxCrossEntropyLossGrad")
def softmax_cross_entropy_grad(b: Builder) -> None:
    """ℓ = −Σ_i m_i log p_{i,y_i} / Σ_i m_i (mean; m_i = [y_i ≠ ignore_index]):
    dlogits = (p − onehot(y)) ⊙ m · dℓ / Σ m; 'sum' drops the division, 'none' takes dℓ_i."""
    dloss, log_prob, labels = b.input(0), b.input(1), b.input(2)
    if b.input(3):
        raise LoweringError(f"{b.node.name!r}: class weights have no lowering")
    reduction = b.attrs.get("reduction", b"mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    ignored = b.op("Equal", labels, b.const(int(b.attrs.get("ignore_index", -100))))
    labels = b.op("Where", ignored, b.const(0), labels)
    mask = b.op("Cast", b.op("Not", ignored), to=1)  # (N,) float
    depth = b.op("Shape", log_prob, start=1, end=2)  # C: classes are axis 1, any rank
    onehot = b.op("OneHot", labels, depth, b.const([0.0, 1.0], np.float32), axis=1)  # (N, C, …)
    diff = b.op("Sub", b.op("Exp", log_prob), onehot)
    if reduction == "mean":
        weight = b.op("Div", b.op("Mul", mask, dloss), b.op("ReduceSum", mask, keepdims=0))
    elif reduction == "sum":
        weight = b.op("Mul", mask, dloss)
    elif reduction == "none":
        weight = b.op("Mul", mask, dloss)
    else:
        raise LoweringError(f"{b.node.name!r}: reduction {reduction!r} unknown")
    b.op("Mul", diff, b.op("Unsqueeze", weight, b.const([1])), out=b.node.output[0])
