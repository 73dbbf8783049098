"""An int8 frozen base (``export --base int8``, export/onnx/quantize.py): the quantizers' error
bounds, the rewritten graphs, a device step against the float32 bundle's, refusals."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundles import _sources_digest, cache_dir, micro_bundle, micro_tokenizer

from edgetune.errors import UsageError
from edgetune.runtime.ort_build import onnxruntime, runs_int8_base

from numerics import assert_close_normwise

HAS_EXPORT = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("onnx") is not None
RUNS_INT8 = runs_int8_base()
needs_export = pytest.mark.skipif(not HAS_EXPORT, reason="quantizes graphs (the workstation: torch, onnx)")
needs_int8 = pytest.mark.skipif(not RUNS_INT8, reason=f"onnxruntime {onnxruntime().__version__} has "
                                "no 8-bit MatMulNBits (>= 1.22: the device environment)")


def _bundle(model: str, method: str, base: str):
    text = {"max_tokens": 12, "tokenizer": str(micro_tokenizer())} if model.startswith("bert") else {}
    return micro_bundle(model, method, num_classes=2, mode="adaptive", base=base, **text)


@needs_export
def test_per_channel_and_block_quantizers_are_within_half_a_step():
    from edgetune.quantize import BLOCK, quantize_blocks, quantize_columns

    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 7)).astype(np.float32) * rng.uniform(0.01, 3, 7).astype(np.float32)
    w[:, 3] = 0.0                                        # a zero column: scale 1, all zeros
    q8, s = quantize_columns(w)
    assert q8.dtype == np.int8 and s.shape == (7,) and np.abs(q8).max() == 63  # 7 bits
    q = q8.astype(np.float32)
    # |Q·s − W| ≤ s/2 per column (round to nearest), up to the rounding of W/s in fp32
    assert np.all(np.abs(q * s - w) <= s / 2 * (1 + 1e-5))
    assert np.all(q[:, 3] == 0)
    qb, sb = quantize_blocks(w)
    nb = -(-40 // BLOCK)
    assert qb.shape == (7, nb, BLOCK) and qb.dtype == np.uint8 and sb.shape == (7 * nb,)
    deq = ((qb.astype(np.float32) - 128) * sb.reshape(7, nb, 1)).reshape(7, -1)[:, :40].T
    step = np.repeat(sb.reshape(7, nb), BLOCK, axis=1)[:, :40].T
    assert np.all(np.abs(deq - w) <= step / 2 * (1 + 1e-5))


def _products_graph():
    """x·Wᵀ (Transpose + MatMul) and a gradient's dy·W (FusedMatMul transB, alpha 2) on a
    5 × 8 weight, quantized; cached beside the micro bundles (the device suite runs it)."""
    import onnx
    from onnx import TensorProto, helper

    from edgetune.export.onnx.quantize import quantize_frozen

    w = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)  # (out, in)
    g = helper.make_graph(
        [helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
         helper.make_node("MatMul", ["x", "Wt"], ["y"]),
         helper.make_node("Identity", ["g"], ["y_grad"]),
         helper.make_node("FusedMatMul", ["y_grad", "Wt"], ["x_grad"], domain="com.microsoft",
                          transB=1, alpha=2.0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8]),
              helper.make_tensor_value_info("g", TensorProto.FLOAT, [None, 5]),
              helper.make_tensor_value_info("W", TensorProto.FLOAT, [5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5]),
         helper.make_tensor_value_info("x_grad", TensorProto.FLOAT, [None, 8])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("com.microsoft", 1)])
    gone = quantize_frozen(model, {"W": w})
    onnx.checker.check_model(model)
    model.ir_version = 10
    return model, gone, w


def _cached_products() -> tuple[bytes, np.ndarray]:
    """(the quantized graph's bytes, W): exported where torch and onnx are, else the cache's."""
    path = cache_dir() / f"int8-products-{_sources_digest()}.onnx"
    if HAS_EXPORT and not path.exists():
        model, _, w = _products_graph()
        cache_dir().mkdir(parents=True, exist_ok=True)
        path.write_bytes(model.SerializeToString())
        np.save(path.with_suffix(".npy"), w)
    if not path.exists():
        pytest.skip(f"{path.name} not cached and no onnx here: run the workstation suite first")
    return path.read_bytes(), np.load(path.with_suffix(".npy"), allow_pickle=False)


@needs_export
def test_products_become_int8_kernels_and_the_weight_leaves_the_inputs():
    """Transpose + MatMul → DynamicQuantizeMatMul, FusedMatMul on a gradient → MatMulNBits
    with alpha in its scales; W is no longer an input."""
    model, gone, _ = _products_graph()
    assert gone == {"W"}
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["DynamicQuantizeMatMul", "Identity", "MatMulNBits"], ops
    assert [i.name for i in model.graph.input] == ["x", "g"]


def test_the_int8_products_match_their_formulas():
    """What onnxruntime computes is the formula the docstring states: x per tensor to uint8
    times the 7-bit weights; dy per row in blocks of 32 to int8 times W's 8-bit blocks, × alpha.
    (An onnxruntime without 8-bit MatMulNBits runs the forward product alone.)"""
    data, w = _cached_products()
    sess = onnxruntime().InferenceSession(data, providers=["CPUExecutionProvider"]) if RUNS_INT8 \
        else None
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    gr = rng.standard_normal((6, 5)).astype(np.float32)
    if sess is None:
        pytest.skip("this onnxruntime has no 8-bit MatMulNBits; the device suite checks both")
    y, x_grad = sess.run(None, {"x": x, "g": gr})
    # DynamicQuantizeLinear: scale = (max(0, max x) − min(0, min x)) / 255, zero point round(−min/scale)
    xs = (max(0.0, x.max()) - min(0.0, x.min())) / 255
    zp = np.clip(np.rint(-min(0.0, x.min()) / xs), 0, 255)
    xq = np.clip(np.rint(x / xs) + zp, 0, 255)
    s = np.abs(w.T).max(axis=0) / 63                      # Wᵀ per output column, 7 bits
    expect = ((xq - zp) @ np.rint(w.T / s)) * xs * s
    # both sides do the same integer product; what may differ is one uint8 step of X where
    # x/scale lands on a rounding tie in another fp32 order: far under 1e-3 of the output's norm
    assert_close_normwise(y, expect.astype(np.float32), "DynamicQuantizeMatMul", rtol=1e-3)
    sw = np.abs(w).max(axis=0) / 127                      # W (K = 5): one block per column
    deq = np.rint(w / sw) * sw
    gs = np.abs(gr).max(axis=1, keepdims=True) / 127      # and one per row of dy
    gq = np.rint(gr / gs) * gs
    # measured 1e-7 from this model and 3.2e-3 from dy in float32 (accuracy_level 0): the bound
    # tells the two apart and lets one int8 step of one of the 30 values (~1e-3) round elsewhere
    assert_close_normwise(x_grad, 2.0 * gq @ deq, "MatMulNBits", rtol=2e-3)


CASES = [("vit-micro", "lora"), ("bert-micro", "lora"), ("vit-micro", "ia3")]


@needs_export
@pytest.mark.parametrize("model,method", CASES)
def test_int8_bundles_hold_every_frozen_block_weight_as_8_bit_kernels(model, method):
    """Every frozen 2-D weight of the blocks is read by no graph (its products are 8-bit
    kernels), LoRA runs its factored product, and the index lists them. (Exports the bundles
    the device suite steps below.)"""
    import onnx

    folder = _bundle(model, method, "int8") / "adaptive"
    index = json.loads((folder / "graphs.json").read_text())
    quantized = set(index["base"]["quantized"])
    blocks = [index["parts"][b] for b in index["blocks"]]
    frozen = {p for b in blocks for p in b["params"] if p not in index["trainable"]
              and p.endswith("weight") and "norm" not in p.lower()}
    assert index["base"]["dtype"] == "int8" and frozen and frozen <= quantized
    for part in blocks + [b["dense"] for b in blocks if "dense" in b]:
        for variant, file in part["graphs"].items():
            graph = onnx.load(folder / file).graph
            taken = quantized & {i.name for i in graph.input}
            assert not taken, (file, taken)
            ops = {n.op_type for n in graph.node}
            if variant.startswith("forward"):
                assert "DynamicQuantizeMatMul" in ops, file
            elif not variant.startswith("backward_first"):
                assert "MatMulNBits" in ops, file
    shared = {f for f in folder.rglob("*") if f.suffix != ".onnx" and f.parent != folder}
    assert shared and all(f.name == "weights.bin" for f in shared), shared   # one per part
    manifest = json.loads((folder.parent / "manifest.json").read_text())
    assert manifest["base"] == "int8" and manifest["modes"] == ["adaptive"]
    plain = json.loads((_bundle(model, method, "fp32") / "adaptive" / "graphs.json").read_text())
    assert plain["base"] == {"dtype": "fp32", "quantized": []}


@needs_int8
@pytest.mark.parametrize("model,method", CASES)
def test_a_step_on_the_int8_base_is_close_to_the_fp32_one(model, method):
    """Same weights, inputs and LoRA B ≠ 0: the loss within 2 % and every gradient within 10 %
    (relative norm) of the float32 bundle's. Measured on these micro models: gradients within
    1–3 % (7-bit weights and each product's per-tensor uint8 activations forward, 8-bit blocks
    backward). The bound is tensor-wide, over 3× the worst seen: a rounding tie that lands
    elsewhere in another CPU's fp32 order moves one step of one value, far below it."""
    from edgetune.runtime.adaptive import AdaptiveRunner

    fp32 = AdaptiveRunner(_bundle(model, method, "fp32") / "adaptive")
    int8 = AdaptiveRunner(_bundle(model, method, "int8") / "adaptive")
    quantized = int8.index["base"]["quantized"]
    assert quantized and not set(quantized) & set(int8.params)        # never loaded
    assert len(int8.params) == len(fp32.params) - len(quantized)
    for block in int8.blocks:                                         # no graph takes them
        for file in set(int8.parts[block]["graphs"].values()):
            assert not set(quantized) & set(int8.sessions.input_names(file))
    rng = np.random.default_rng(0)
    for name in int8.params:
        if name.endswith("lora_B.weight") or ".ia3_" in name:
            v = rng.standard_normal(int8.params[name].shape).astype(np.float32) * 0.1 + (
                1.0 if ".ia3_" in name else 0.0)
            int8.params[name][...] = v
            fp32.params[name][...] = v
    b, spec = 3, json.loads((int8.folder.parent / "manifest.json").read_text())["inputs"]
    if spec["kind"] == "image":
        size = spec["image_size"]
        inputs = {int8.parts["stem"]["inputs"][0]:
                  rng.standard_normal((b, spec["channels"], size, size)).astype(np.float32)}
    else:
        ids = rng.integers(4, 20, (b, 10)).astype(np.int64)
        inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    labels = np.array([0, 1, 1])
    tokens = _tokens(fp32, inputs)
    a = fp32.step(inputs, labels, [tokens] * fp32.num_layers)
    c = int8.step(inputs, labels, [tokens] * int8.num_layers)
    assert_close_normwise(c.loss, a.loss, "loss", rtol=0.02)
    assert a.grads.keys() == c.grads.keys()
    for k in a.grads:
        assert_close_normwise(c.grads[k], a.grads[k], k, rtol=0.1)


def _tokens(runner, inputs) -> int:
    """Every token: the stem's token count for these inputs."""
    x, _, _ = runner._stem(runner.values.refresh(), runner._inputs(inputs), "forward")
    return int(x.shape()[1])


@pytest.mark.skipif(RUNS_INT8, reason="this onnxruntime runs int8 bases")
def test_an_older_onnxruntime_refuses_an_int8_bundle_naming_the_version():
    from edgetune.runtime.adaptive import AdaptiveRunner

    folder = _bundle("vit-micro", "lora", "int8")
    with pytest.raises(UsageError, match=r"onnxruntime >= 1\.22"):
        AdaptiveRunner(folder / "adaptive")


@needs_export
def test_int8_is_refused_where_nothing_is_frozen_or_the_mode_is_static(tmp_path):
    from edgetune.export import export_bundle

    with pytest.raises(UsageError, match="method 'full' trains every weight"):
        export_bundle("vit-micro", "full", tmp_path / "a", num_classes=2, base="int8")
    with pytest.raises(UsageError, match="--mode static"):
        export_bundle("vit-micro", "lora", tmp_path / "b", num_classes=2, base="int8", mode="static")
    with pytest.raises(UsageError, match="base='int4'"):
        export_bundle("vit-micro", "lora", tmp_path / "c", num_classes=2, base="int4")
    assert not any(tmp_path.iterdir())  # nothing half-written


@needs_export
def test_an_int8_bundle_holds_an_int8_inference_model_with_every_weight_product_quantized():
    """``inference/inference.int8.onnx``: every product of a 2-D parameter runs
    DynamicQuantizeMatMul on a constant int8 weight, and the index places each quantized
    weight and scale (merge writes there) and every float32 parameter left."""
    import onnx
    from onnx import numpy_helper

    folder = _bundle("vit-micro", "lora", "int8") / "inference"
    index = json.loads((folder / "graphs.json").read_text())
    entry = index["int8"]
    graph = onnx.load(folder / entry["file"]).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    assert "DynamicQuantizeMatMul" in {n.op_type for n in graph.node}
    assert not {i for n in graph.node if n.op_type == "MatMul" for i in n.input} & set(inits)
    linear = {n for n, t in index["model"]["tensors"].items()  # the blocks' linear weights
              if n.startswith("blocks.") and len(t["shape"]) == 2}
    assert linear and linear <= {q["param"] for q in entry["quantized"]}
    blob = (folder / entry["file"]).read_bytes()
    for q in entry["quantized"]:
        data = inits[[k for k in inits if k.endswith(".int8") and k.startswith(q["param"])][0]]
        assert data.dtype == np.int8 and np.abs(data).max() <= 63
        at = q["q"]["offset"]
        assert blob[at:at + data.nbytes] == data.tobytes()
    fp32 = {n for n, t in index["model"]["tensors"].items() if len(t["shape"]) == 2}
    quantized = {q["param"] for q in entry["quantized"]}
    assert fp32 - quantized <= set(entry["tensors"])  # a lookup table stays float32
    plain = json.loads((_bundle("vit-micro", "lora", "fp32") / "inference" / "graphs.json").read_text())
    assert "int8" not in plain


@needs_int8
def test_merge_int8_writes_the_trained_weights_quantized(tmp_path):
    """``merge --int8``: the int8 model's logits within 5 % (relative norm) of the float32
    merged model's, and not the untrained template's. Measured here: 0.2 % (7-bit weights,
    per-tensor uint8 activations); the bound holds on any CPU's summation order. ``eval`` takes
    either file of the merged folder."""
    import onnxruntime as ort
    from test_train import synthetic_images

    from edgetune.bundle import Bundle
    from edgetune.merge import merge_run
    from edgetune.train import TrainConfig, Trainer, load_data
    from edgetune.train.evaluate import evaluate_path

    b = Bundle.open(_bundle("vit-micro", "lora", "int8"))
    data = synthetic_images(tmp_path / "train.npz")
    Trainer(b, load_data(b, data), config=TrainConfig(steps=4, batch_size=16, lr=2e-2),
            out=tmp_path / "run").fit()
    out = merge_run(tmp_path / "run", checkpoint="last", int8=True)
    merged = json.loads((out / "merged.json").read_text())
    assert merged["int8"] == {"file": "inference.int8.onnx"}
    x = load_data(b, data).batch(np.arange(32))["pixel_values"]

    def logits(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            ["logits"], {"pixel_values": x})[0]

    fp32, int8 = logits(out / "inference.onnx"), logits(out / "inference.int8.onnx")
    assert_close_normwise(int8, fp32, "int8 merged vs fp32 merged", rtol=0.05)
    template = logits(b.path / "inference" / "inference.int8.onnx")
    assert np.linalg.norm(template - fp32) > 4 * np.linalg.norm(int8 - fp32)
    a = evaluate_path(out, data)
    c = evaluate_path(out / "inference.int8.onnx", data)
    assert a["count"] == c["count"] == 96 and abs(a["accuracy"] - c["accuracy"]) < 0.1
    assert c["source"].endswith("inference.int8.onnx (merged)")
    bench = Path(__file__).parents[1] / "bench" / "merged_models.py"  # both files side by side
    shown = subprocess.run([sys.executable, str(bench), str(out), "--data", str(data), "--batches", "2",
                            "--rounds", "1"], capture_output=True, text=True, check=True).stdout
    row = next(line.split() for line in shown.splitlines() if line.startswith("inference.int8.onnx"))
    assert row[2] == f"{100 * c['accuracy']:.2f}%"


@needs_int8
def test_merge_int8_of_an_fp32_bundle_is_refused_before_writing(tmp_path):
    from test_train import synthetic_images

    from edgetune.bundle import Bundle
    from edgetune.merge import merge_run
    from edgetune.train import TrainConfig, Trainer, load_data

    b = Bundle.open(_bundle("vit-micro", "lora", "fp32"))
    data = synthetic_images(tmp_path / "train.npz", n=32)
    Trainer(b, load_data(b, data), config=TrainConfig(steps=1, batch_size=16),
            out=tmp_path / "run").fit()
    with pytest.raises(UsageError, match="re-export with --base int8"):
        merge_run(tmp_path / "run", checkpoint="last", int8=True)
    assert not (tmp_path / "run" / "merged").exists()
