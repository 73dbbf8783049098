"""Concat/Split with lengths, and the gradients of Slice, Gather and GatherElements."""

from __future__ import annotations

import numpy as np

from edgetune.export.onnx.lowering.base import Builder, LoweringError, lowering


@lowering("ConcatTraining")
def concat_training(b: Builder) -> None:
    """Concat, plus (when used) each input's length along ``axis`` as a 1-D int64 tensor."""
    axis = int(b.attrs["axis"])
    inputs = [i for i in b.node.input]
    b.op("Concat", *inputs, axis=axis, out=b.node.output[0])
    if b.wants(1):
        span = {"start": axis} if axis == -1 else {"start": axis, "end": axis + 1}
        lengths = [b.op("Shape", i, **span) for i in inputs]
        b.op("Concat", *lengths, axis=0, out=b.node.output[1])


@lowering("SplitTraining")
def split_training(b: Builder) -> None:
    """Split-13 with the lengths as its ``split`` input."""
    outs = [o for o in b.node.output]
    b.op_n("Split", [b.input(0), b.input(1)], outs, axis=int(b.attrs.get("axis", 0)))


@lowering("SliceGrad")
def slice_grad(b: Builder) -> None:
    """dy placed into zeros of the input's shape: Pad with s before and dim − s − len(dy) after
    on each sliced axis, s the start clamped to [0, dim] (Slice semantics, steps of 1)."""
    dy, shape, starts, _ends, axes = (b.input(i) for i in range(5))
    steps = b.input(5)
    if steps and not np.all(b.constant(steps) == 1):
        raise LoweringError(f"SliceGrad {b.node.name!r}: steps {b.constant(steps)}; only 1 lowers")
    rank = b.op("Shape", shape)
    if not axes:
        axes = b.op("Range", b.const(0), b.op("Squeeze", b.op("Shape", starts)), b.const(1))
    axes = b.op("Where", b.op("Less", axes, b.const(0)), b.op("Add", axes, rank), axes)
    dims = b.op("Gather", shape, axes, axis=0)
    s = b.op("Where", b.op("Less", starts, b.const(0)), b.op("Add", starts, dims), starts)
    s = b.op("Max", b.op("Min", s, dims), b.const(0))
    length = b.op("Gather", b.op("Shape", dy), axes, axis=0)
    after = b.op("Sub", b.op("Sub", dims, s), length)
    zeros = b.op("ConstantOfShape", b.op("Mul", rank, b.const([2])),
                 value=_tensor(np.zeros(1, np.int64)))
    where = b.op("Concat", axes, b.op("Add", axes, rank), axis=0)
    pads = b.op("ScatterElements", zeros, where, b.op("Concat", s, after, axis=0), axis=0)
    b.op("Pad", dy, pads, mode="constant", out=b.node.output[0])


@lowering("GatherElementsGrad")
def gather_elements_grad(b: Builder) -> None:
    """dx = zeros(shape) with dy added at ``indices`` along ``axis`` (ScatterElements, add)."""
    dy, shape, indices = b.input(0), b.input(1), b.input(2)
    zeros = b.op("ConstantOfShape", shape, value=_tensor(np.zeros(1, np.float32)))
    b.op("ScatterElements", zeros, indices, dy, axis=int(b.attrs.get("axis", 0)),
         reduction="add", out=b.node.output[0])


@lowering("GatherGrad")
def gather_grad(b: Builder) -> None:
    """Gather(x, idx, axis) has shape x[:axis] + idx.shape + x[axis+1:]. Flatten idx to M entries,
    view dy as x[:axis] + [M] + x[axis+1:], and add it back with ScatterElements along ``axis``."""
    shape, indices, dy = b.input(0), b.input(1), b.input(2)
    axis = int(b.attrs.get("axis", 0))
    before = b.op("Slice", shape, b.const([0]), b.const([axis]), b.const([0]))
    end = np.iinfo(np.int64).max
    after = b.op("Slice", shape, b.const([end if axis == -1 else axis + 1]), b.const([end]),
                 b.const([0]))
    minus = b.const([-1])
    updates = b.op("Reshape", dy, b.op("Concat", before, minus, after, axis=0))
    ones = [b.op("ConstantOfShape", b.op("Shape", part), value=_tensor(np.ones(1, np.int64)))
            for part in (before, after)]
    index = b.op("Reshape", indices, b.op("Concat", ones[0], minus, ones[1], axis=0))
    index = b.op("Expand", index, b.op("Shape", updates))
    # the zeros' shape passes through a value known only at run time (an empty slice of dy's
    # values; dy's shape would fold where it is static): from a constant shape (an embedding
    # table's) ORT's constant folding would make them an initializer as large as the table,
    # held by the session for good (47 MB for minilm-l6's word embeddings)
    flat = b.op("Reshape", dy, b.const([-1]))
    runtime = b.op("Cast", b.op("Slice", flat, b.const([0]), b.const([0]), b.const([0])),
                   to=7)  # INT64
    zeros = b.op("ConstantOfShape", b.op("Concat", shape, runtime, axis=0),
                 value=_tensor(np.zeros(1, np.float32)))
    b.op("ScatterElements", zeros, index, updates, axis=axis, reduction="add",
         out=b.node.output[0])


def _tensor(array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(array)
