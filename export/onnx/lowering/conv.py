"""Conv's weight and bias gradients (groups of 1), as a Conv of the input with dy."""

from __future__ import annotations

from edgetune.export.onnx.lowering.base import Builder, LoweringError, lowering


@lowering("ConvGrad")
def conv_grad(b: Builder) -> None:
    """dW[o,c,k] = Σ_{n,p} dy[n,o,p]·x[n,c,s·p + d·k − pad]: a Conv of x (channels as batch)
    with dy (batch as channels) whose stride is the forward's dilation and whose dilation is
    the forward's stride, cut to the kernel size; dB = Σ_{n,p} dy."""
    dy, x, _w = b.input(0), b.input(1), b.input(2)
    a = b.attrs
    if "kernel_shape" not in a:
        raise LoweringError(f"ConvGrad {b.node.name!r}: no kernel_shape attribute")
    kernel = list(a["kernel_shape"])
    r = len(kernel)
    if int(a.get("group", 1)) != 1:
        raise LoweringError(f"ConvGrad {b.node.name!r}: groups other than 1 have no lowering")
    pad_mode = a.get("auto_pad", b"NOTSET")
    if (pad_mode.decode() if isinstance(pad_mode, bytes) else pad_mode) != "NOTSET":
        raise LoweringError(f"ConvGrad {b.node.name!r}: auto_pad has no lowering")
    if b.wants(0):
        raise LoweringError(f"ConvGrad {b.node.name!r}: the input gradient has no lowering "
                            "(only a first layer's weight gradient)")
    strides = list(a.get("strides", [1] * r))
    dilations = list(a.get("dilations", [1] * r))
    pads = list(a.get("pads", [0] * 2 * r))
    swap = [1, 0] + list(range(2, 2 + r))
    if b.wants(1):
        full = b.op("Conv", b.op("Transpose", x, perm=swap), b.op("Transpose", dy, perm=swap),
                    strides=dilations, dilations=strides, pads=pads)
        cut = b.op("Slice", full, b.const([0] * r), b.const(kernel), b.const(list(range(2, 2 + r))))
        b.op("Transpose", cut, perm=swap, out=b.node.output[1])
    if b.wants(2):
        b.op("ReduceSum", dy, b.const([0] + list(range(2, 2 + r))), keepdims=0,
             out=b.node.output[2])
