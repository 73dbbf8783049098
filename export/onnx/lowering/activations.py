"""Gradients of elementwise activations and softmax, from their closed forms."""

from __future__ import annotations

import math

import numpy as np

from edgetune.export.onnx.lowering.base import Builder, lowering


@lowering("GeluGrad")
def gelu_grad(b: Builder) -> None:
    """d/dx [x·Φ(x)] = Φ(x) + x·φ(x), Φ(x) = ½(1 + erf(x/√2)), φ(x) = e^{−x²/2}/√(2π)."""
    dy, x = b.input(0), b.input(1)
    f32 = np.float32
    cdf = b.op("Mul", b.op("Add", b.op("Erf", b.op("Mul", x, b.const(1 / math.sqrt(2), f32))),
                           b.const(1.0, f32)), b.const(0.5, f32))
    sq = b.op("Mul", x, x)
    pdf = b.op("Mul", b.op("Exp", b.op("Mul", sq, b.const(-0.5, f32))),
               b.const(1 / math.sqrt(2 * math.pi), f32))
    b.op("Mul", dy, b.op("Add", cdf, b.op("Mul", x, pdf)), out=b.node.output[0])


@lowering("QuickGeluGrad")
def quick_gelu_grad(b: Builder) -> None:
    """y = x·σ(αx) (SiLU at α = 1): dx = dy·s·(1 + αx·(1 − s)), s = σ(αx)."""
    dy, x = b.input(0), b.input(1)
    f32 = np.float32
    ax = b.op("Mul", x, b.const(float(b.attrs.get("alpha", 1.702)), f32))
    s = b.op("Sigmoid", ax)
    slope = b.op("Add", b.const(1.0, f32), b.op("Mul", ax, b.op("Sub", b.const(1.0, f32), s)))
    b.op("Mul", dy, b.op("Mul", s, slope), out=b.node.output[0])


@lowering("TanhGrad")
def tanh_grad(b: Builder) -> None:
    """y = tanh(x): dx = dy·(1 − y²)."""
    dy, y = b.input(0), b.input(1)
    one = b.const(1.0, np.float32)
    b.op("Mul", dy, b.op("Sub", one, b.op("Mul", y, y)), out=b.node.output[0])


@lowering("SoftmaxGrad_13")
def softmax_grad(b: Builder) -> None:
    """y = softmax(x) along ``axis``: dx = y ⊙ (dy − Σ_axis dy ⊙ y)."""
    dy, y = b.input(0), b.input(1)
    axis = b.const([b.attrs.get("axis", -1)])
    dot = b.op("ReduceSum", b.op("Mul", dy, y), axis, keepdims=1)
    b.op("Mul", y, b.op("Sub", dy, dot), out=b.node.output[0])
