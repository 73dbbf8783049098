"""Each lowering of a training-only op against ORT's own kernel for it (training build).

One node per case, with inputs as the forward would make them (y = softmax(x), LayerNorm's
mean and 1/σ, lengths from a Concat), run as the training op and as its lowered standard
ops; the two fp32 evaluations of one formula must agree norm-wise (tests/numerics.py).
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from edgetune.export.onnx.lowering import LOWERINGS, LoweringError, lower, nonstandard_ops  # noqa: E402

from numerics import assert_close_normwise  # noqa: E402

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _model(node, feeds, outputs, domain=True):
    types = {np.dtype(np.float32): F, np.dtype(np.int64): I64}
    inputs = [helper.make_tensor_value_info(k, types[v.dtype], v.shape) for k, v in feeds.items()]
    outs = [helper.make_tensor_value_info(o, I64 if o == "lengths" else F, None) for o in outputs]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if domain else [])
    m = helper.make_model(helper.make_graph([node], "case", inputs, outs), opset_imports=opsets)
    m.ir_version = 8
    return m


def _run(model, feeds, outputs):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(outputs, sess.run(outputs, feeds)))


def _both(op, inputs, outputs, feeds, reference=None, **attrs):
    """``op`` lowered against ORT's kernel computing ``reference`` (default: the same outputs)."""
    ref = helper.make_node(op, inputs, reference or outputs, domain="com.microsoft", name=op,
                           **attrs)
    node = helper.make_node(op, inputs, outputs, domain="com.microsoft", name=op, **attrs)
    model = _model(node, feeds, [o for o in outputs if o])
    try:
        want = _run(_model(ref, feeds, [o for o in ref.output if o]), feeds,
                    [o for o in outputs if o])
    except Exception as e:  # noqa: BLE001 - stock onnxruntime lacks the training kernels
        pytest.skip(f"this onnxruntime has no {op} kernel: {str(e)[:80]}")
    lowered = lower(model)
    assert nonstandard_ops(lowered) == {}
    got = _run(lowered, feeds, [o for o in outputs if o])
    for name in want:
        assert_close_normwise(got[name], want[name], f"{op} {name}")
    return got


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_every_lowering_has_a_case():
    cases = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    missing = {op for op in LOWERINGS if op.lower().replace("_13", "") not in cases}
    assert not missing


def test_softmaxgrad():
    x = f32(2, 3, 5, 7)
    y = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    _both("SoftmaxGrad_13", ["dy", "y"], ["dx"], {"dy": f32(2, 3, 5, 7), "y": y.astype(np.float32)},
          axis=-1)


def test_gelugrad():
    _both("GeluGrad", ["dy", "x"], ["dx"], {"dy": f32(4, 9, 16), "x": 3 * f32(4, 9, 16)})


@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_quickgelugrad(alpha):
    _both("QuickGeluGrad", ["dy", "x"], ["dx"], {"dy": f32(4, 9, 16), "x": 3 * f32(4, 9, 16)}, alpha=alpha)


@pytest.mark.parametrize("wanted", [("dx", "dg"), ("dx", ""), ("", "dg")])
def test_simplifiedlayernormalizationgrad(wanted):
    x = 2 + 3 * f32(3, 6, 16)
    inv = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)
    feeds = {"dy": f32(3, 6, 16), "x": x, "g": 1 + f32(16), "r": inv.astype(np.float32)}
    _both("SimplifiedLayerNormalizationGrad", ["dy", "x", "g", "r"], list(wanted), feeds,
          reference=["dx", "dg"], axis=-1, epsilon=1e-6)


def test_tanhgrad():
    _both("TanhGrad", ["dy", "y"], ["dx"], {"dy": f32(5, 8), "y": np.tanh(f32(5, 8))})


@pytest.mark.parametrize("wanted", [("dx", "dg", "db"), ("dx", "", ""), ("", "dg", "db")])
def test_layernormalizationgrad(wanted):
    x = 2 + 3 * f32(3, 6, 16)
    mean = x.mean(-1, keepdims=True)
    inv = 1 / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    feeds = {"dy": f32(3, 6, 16), "x": x, "g": 1 + f32(16), "m": mean, "r": inv.astype(np.float32)}
    _both("LayerNormalizationGrad", ["dy", "x", "g", "m", "r"], list(wanted), feeds,
          reference=["dx", "dg", "db"], axis=-1, epsilon=1e-6)


def test_softmaxcrossentropylossgrad():
    logits = f32(6, 4)
    log_prob = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)
    labels = np.array([0, 3, -100, 1, 2, 3], np.int64)
    got = _both("SoftmaxCrossEntropyLossGrad", ["dl", "lp", "y"], ["dz"],
                {"dl": np.array(0.7, np.float32), "lp": log_prob, "y": labels},
                reduction="mean", ignore_index=-100)
    assert np.all(got["dz"][2] == 0)  # the ignored sample contributes nothing


def test_concattraining():
    feeds = {"a": f32(2, 3, 4), "b": f32(2, 5, 4)}
    got = _both("ConcatTraining", ["a", "b"], ["c", "lengths"], feeds, axis=1)
    assert got["lengths"].tolist() == [3, 5]


def test_splittraining():
    feeds = {"x": f32(2, 8, 4), "lengths": np.array([3, 5], np.int64)}
    _both("SplitTraining", ["x", "lengths"], ["p", "q"], feeds, axis=1)


@pytest.mark.parametrize("start,end,axis", [(0, 3, 1), (2, 100, 1), (-4, -1, 1), (1, 2, -1)])
def test_slicegrad(start, end, axis):
    shape = np.array([2, 7, 5], np.int64)
    x = np.zeros(shape, np.float32)
    dy = f32(*np.asarray(x[(slice(None),) * (axis % 3) + (slice(start, end),)].shape))
    feeds = {"dy": dy, "shape": shape, "s": np.array([start], np.int64),
             "e": np.array([end], np.int64), "a": np.array([axis], np.int64)}
    node = helper.make_node("Constant", [], ["one"], value=helper.make_tensor("v", I64, [1], [1]))
    # steps a constant 1, as traced slices give them
    model_inputs = ["dy", "shape", "s", "e", "a", "one"]
    grad = helper.make_node("SliceGrad", model_inputs, ["dx"], domain="com.microsoft", name="sg")
    model = _model(grad, feeds, ["dx"])
    model.graph.node.insert(0, node)
    want = _run(model, feeds, ["dx"])["dx"]
    got = _run(lower(model), feeds, ["dx"])["dx"]
    np.testing.assert_array_equal(got, want)  # a copy into zeros: exact


def test_slicegrad_refuses_other_steps():
    feeds = {"dy": f32(2, 2), "shape": np.array([2, 4], np.int64)}
    step = helper.make_node("Constant", [], ["two"], value=helper.make_tensor("v", I64, [1], [2]))
    s = helper.make_node("Constant", [], ["s"], value=helper.make_tensor("v", I64, [1], [0]))
    grad = helper.make_node("SliceGrad", ["dy", "shape", "s", "s", "s", "two"], ["dx"],
                            domain="com.microsoft", name="sg")
    model = _model(grad, feeds, ["dx"])
    nodes = [step, s] + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    with pytest.raises(LoweringError, match="steps"):
        lower(model)


def test_gatherelementsgrad():
    idx = np.stack([rng.permutation(9)[:5] for _ in range(2)])[:, :, None].repeat(4, -1)
    feeds = {"dy": f32(2, 5, 4), "shape": np.array([2, 9, 4], np.int64), "i": idx.astype(np.int64)}
    _both("GatherElementsGrad", ["dy", "shape", "i"], ["dx"], feeds, axis=1)


@pytest.mark.parametrize("axis,indices", [(0, np.array([[1, 4, 1], [0, 4, 4]])), (1, np.array(0)),
                                          (-1, np.array([2, 2, 0]))])
def test_gathergrad(axis, indices):
    shape = [5, 3, 4]
    out = list(np.take(np.zeros(shape), indices, axis=axis).shape)
    feeds = {"shape": np.array(shape, np.int64), "i": indices.astype(np.int64), "dy": f32(*out)}
    _both("GatherGrad", ["shape", "i", "dy"], ["dx"], feeds, axis=axis)


@pytest.mark.parametrize("size,stride,pads", [(16, 4, [0, 0, 0, 0]), (18, 4, [0, 0, 0, 0]),
                                              (9, 2, [1, 1, 0, 0])])
def test_convgrad(size, stride, pads):
    x, w = f32(2, 3, size, size), f32(6, 3, 4, 4)
    h = [(size + pads[i] + pads[i + 2] - 4) // stride + 1 for i in (0, 1)]
    feeds = {"dy": f32(2, 6, *h), "x": x, "w": w}
    _both("ConvGrad", ["dy", "x", "w"], ["", "dw", "db"], feeds, kernel_shape=[4, 4],
          strides=[stride, stride], pads=pads, dilations=[1, 1], group=1)


def test_unknown_training_op_is_an_error():
    node = helper.make_node("InPlaceAccumulatorV2", ["a", "b"], ["c"], domain="com.microsoft")
    model = _model(node, {"a": f32(2), "b": f32(2)}, ["c"])
    with pytest.raises(LoweringError, match="InPlaceAccumulatorV2"):
        lower(model)


@pytest.mark.parametrize("symbolic", [True, False], ids=["symbolic-dims", "static-dims"])
def test_gathergrad_zeros_are_not_folded_into_an_initializer(tmp_path, symbolic):
    """An embedding table's gradient starts from zeros of the table's (constant) shape; ORT's
    constant folding must not turn them into an initializer as large as the table, which the
    session would hold for good (minilm-l6's word embeddings: 47 MB), whether the batch's
    dimensions are symbolic (an exported graph) or static."""
    table = [5000, 64]
    node = helper.make_node("GatherGrad", ["shape", "i", "dy"], ["dx"], domain="com.microsoft", axis=0)
    feeds = {"i": rng.integers(0, table[0], (2, 7)).astype(np.int64), "dy": f32(2, 7, table[1])}
    model = _model(node, feeds, ["dx"])
    for value in model.graph.input if symbolic else []:  # batch and tokens vary
        for dim, name in zip(value.type.tensor_type.shape.dim, ("batch", "tokens")):
            dim.dim_param = name
    model.graph.initializer.append(helper.make_tensor("shape", I64, [2], table))
    lowered = lower(model)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    sess = ort.InferenceSession(lowered.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    (dx,) = sess.run(["dx"], feeds)
    want = np.zeros(table, np.float32)
    np.add.at(want, feeds["i"].ravel(), feeds["dy"].reshape(-1, table[1]))
    assert_close_normwise(dx, want, "dx")
    optimized = onnx.load_model(str(tmp_path / "optimized.onnx"))
    biggest = max((int(np.prod(t.dims)) for t in optimized.graph.initializer), default=0)
    assert biggest < table[0] * table[1], biggest
