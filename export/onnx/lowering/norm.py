"""LayerNormalization's and RMSNorm's (SimplifiedLayerNormalization) gradients from the
statistics the forward saved."""

from __future__ import annotations

from edgetune.export.onnx.lowering.base import Builder, LoweringError, lowering


def _normalised_axes(b: Builder, x: str) -> list[int]:
    axis = int(b.attrs.get("axis", -1))
    if axis >= 0:
        axis -= b.rank(x)
    if axis >= 0:
        raise LoweringError(f"{b.node.op_type} {b.node.name!r}: axis {axis} out of range")
    return list(range(axis, 0))  # ReduceMean-17 takes axes as an attribute


@lowering("LayerNormalizationGrad")
def layer_norm_grad(b: Builder) -> None:
    """x̂ = (x − μ)·σ⁻¹, g = dy ⊙ γ, ⟨·⟩ the mean over the normalised axes:
    dx = σ⁻¹ ⊙ (g − ⟨g⟩ − x̂ ⊙ ⟨g ⊙ x̂⟩); dγ = Σ_rows dy ⊙ x̂; dβ = Σ_rows dy."""
    dy, x, scale, mean, inv_std = (b.input(i) for i in range(5))
    normalised = _normalised_axes(b, x)
    xhat = b.op("Mul", b.op("Sub", x, mean), inv_std)
    if b.wants(0):
        g = b.op("Mul", dy, scale)
        centred = b.op("Sub", g, b.op("ReduceMean", g, axes=normalised, keepdims=1))
        proj = b.op("Mul", xhat, b.op("ReduceMean", b.op("Mul", g, xhat), axes=normalised,
                                      keepdims=1))
        b.op("Mul", inv_std, b.op("Sub", centred, proj), out=b.node.output[0])
    rows = b.op("Concat", b.const([-1]), b.op("Shape", scale), axis=0)  # (rows, *γ.shape)
    if b.wants(1):
        flat = b.op("Reshape", b.op("Mul", dy, xhat), rows)
        b.op("ReduceSum", flat, b.const([0]), keepdims=0, out=b.node.output[1])
    if b.wants(2):
        b.op("ReduceSum", b.op("Reshape", dy, rows), b.const([0]), keepdims=0,
             out=b.node.output[2])


@lowering("SimplifiedLayerNormalizationGrad")
def rms_norm_grad(b: Builder) -> None:
    """RMSNorm (Zhang & Sennrich 2019): y = γ ⊙ x·r, r = (⟨x²⟩ + ε)^{−1/2} (the saved inv-std).
    With x̂ = x·r and g = dy ⊙ γ: dx = r ⊙ (g − x̂ ⊙ ⟨g ⊙ x̂⟩); dγ = Σ_rows dy ⊙ x̂."""
    dy, x, scale, inv_std = (b.input(i) for i in range(4))
    normalised = _normalised_axes(b, x)
    xhat = b.op("Mul", x, inv_std)
    if b.wants(0):
        g = b.op("Mul", dy, scale)
        proj = b.op("Mul", xhat, b.op("ReduceMean", b.op("Mul", g, xhat), axes=normalised,
                                      keepdims=1))
        b.op("Mul", inv_std, b.op("Sub", g, proj), out=b.node.output[0])
    if b.wants(1):
        rows = b.op("Concat", b.const([-1]), b.op("Shape", scale), axis=0)
        flat = b.op("Reshape", b.op("Mul", dy, xhat), rows)
        b.op("ReduceSum", flat, b.const([0]), keepdims=0, out=b.node.output[1])
