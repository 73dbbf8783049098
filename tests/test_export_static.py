"""Static mode: ORT's own artifacts, driven with the plain onnxruntime.training API.

For every method on both micro models, ORT's loss, logits, ALaST signal and every gradient
equal torch autograd's at three keep vectors and two batch sizes unlike the trace's.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnxruntime.training.api import CheckpointState, Module

from edgetune.export.onnx import MAX_IR_VERSION, export_mode, trace_whole
from edgetune.export.peft import trainable_names
from edgetune.schedule.alast.importance import class_token_delta

from export_cases import (
    CLASSES,
    COMBOS,
    assert_close,
    build,
    cases,
    gradient_atol,
    numpy_inputs,
    reference,
    rtol_for,
)


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{m}-{k}" for m, k in COMBOS])
def bundle(request, tmp_path_factory):
    name, method = request.param
    model = build(name, method)
    folder = export_mode(model, None, tmp_path_factory.mktemp("static") / "bundle", mode="static")
    return model, folder


def _session(folder: Path):
    state = CheckpointState.load_checkpoint(str(folder / "checkpoint"))
    module = Module(str(folder / "training_model.onnx"), state, str(folder / "eval_model.onnx"))
    return state, module


def test_gradients_match_torch(bundle):
    model, folder = bundle
    state, module = _session(folder)
    module.train()
    assert sorted(n for n, p in state.parameters if p.requires_grad) == sorted(trainable_names(model))
    rtol = rtol_for(model)
    for inputs, labels, keep in cases(model):
        where = f"batch={labels.shape[0]} tokens={model.num_tokens(*inputs)} keep={keep}"
        loss, logits, delta, grads = reference(model, inputs, labels, keep)
        module.lazy_reset_grad()
        out_loss, out_logits, out_delta = module(*numpy_inputs(inputs), np.array(keep, np.int64),
                                                 labels.numpy())
        assert_close(out_loss, loss, f"loss {where}", rtol)
        assert_close(out_logits, logits, f"logits {where}", rtol)
        assert_close(out_delta, delta, f"cls_delta {where}", rtol)
        atol = gradient_atol(grads)
        for name, expected in grads.items():
            assert_close(state.parameters[name].grad, expected, f"{name} {where}", rtol, atol)


def test_eval_model_matches_torch(bundle):
    model, folder = bundle
    _, module = _session(folder)
    module.eval()
    inputs, labels, keep = cases(model)[4]
    loss, logits, _, _ = reference(model, inputs, labels, keep)
    out_loss, out_logits, _ = module(*numpy_inputs(inputs), np.array(keep, np.int64), labels.numpy())
    assert_close(out_loss, loss, "eval loss", rtol_for(model))
    assert_close(out_logits, logits, "eval logits", rtol_for(model))


def test_cls_delta_has_one_definition():
    """Δ_l = mean over the batch of Σ_features (CLS_l − CLS_{l−1})² (ALaST, arXiv 2408.08670) is
    ``class_token_delta``: checked here by hand, then the static graph's ``cls_delta`` output
    against it on the model's own class tokens (the adaptive runtime calls it directly)."""
    prev = np.array([[0, 0], [1, 1]], np.float32)   # batch of 2, 2 features
    cur = np.array([[1, 2], [4, 5]], np.float32)    # sample 0 moves by (1, 2): 5; sample 1 by (3, 4): 25
    assert class_token_delta(prev, cur) == (5 + 25) / 2
    assert class_token_delta(prev, cur).dtype == np.float32
    # layers stacked on a leading axis, (L, B, D) → (L,): the second layer moves nothing
    np.testing.assert_array_equal(class_token_delta(np.stack([prev, cur]), np.stack([cur, cur])),
                                  [15.0, 0.0])

    model = build("vit-micro", "lora").eval()
    inputs, _, keep = cases(model)[4]
    graph = trace_whole(model)
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = dict(zip(model.input_names, numpy_inputs(inputs)), keep=np.array(keep, np.int64))
    (out_delta,) = session.run(["cls_delta"], feeds)
    with torch.no_grad():
        features = model.forward_features(*inputs, keep=torch.tensor(keep))
        cls = np.stack([c.numpy() for c in features.cls_tokens])
    assert out_delta.shape == (model.num_layers,)
    assert_close(out_delta, class_token_delta(cls[:-1], cls[1:]), "cls_delta", rtol_for(model))


def test_every_graph_has_a_supported_ir_version(bundle):
    _, folder = bundle
    files = sorted(folder.glob("*.onnx"))
    assert {f.name for f in files} == {"training_model.onnx", "eval_model.onnx", "optimizer_model.onnx"}
    for f in files:
        assert onnx.load_model(str(f), load_external_data=False).ir_version <= MAX_IR_VERSION, f.name


# A device: no torch, no edgetune. onnxruntime-training 1.19.2's ``onnxruntime/training/__init__``
# imports torch (through ``optim``), so the script loads the ``api`` subpackage under a bare
# parent package, as a device without torch has to.
def _ancestors(graph, name: str) -> set[str]:
    producer = {o: n for n in graph.node for o in n.output}
    seen, todo = set(), [name]
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in producer:
            todo.extend(i for i in producer[t].input if i)
    return seen


def test_keep_counts_reach_topk_as_a_runtime_input(bundle):
    model, folder = bundle
    graph = onnx.load_model(str(folder / "eval_model.onnx"), load_external_data=False).graph
    topk = [n for n in graph.node if n.op_type == "TopK"]
    assert len(topk) == model.num_layers
    for node in topk:
        assert "keep" in _ancestors(graph, node.input[1])  # k comes from the input, not a constant


STANDALONE = textwrap.dedent("""
    import os, sys, types
    sys.modules["torch"] = sys.modules["edgetune"] = None  # importing either now fails
    import numpy as np
    import onnxruntime
    parent = types.ModuleType("onnxruntime.training")
    parent.__path__ = [os.path.join(os.path.dirname(onnxruntime.__file__), "training")]
    sys.modules["onnxruntime.training"] = parent
    from onnxruntime.training.api import CheckpointState, Module, Optimizer
    folder, data = sys.argv[1], np.load(sys.argv[2], allow_pickle=False)
    state = CheckpointState.load_checkpoint(folder + "/checkpoint")
    module = Module(folder + "/training_model.onnx", state, folder + "/eval_model.onnx")
    optimizer = Optimizer(folder + "/optimizer_model.onnx", module)
    optimizer.set_learning_rate(3e-2)
    feeds = [data[k] for k in data["order"]]
    module.train()
    losses = []
    for _ in range(8):
        losses.append(float(module(*feeds)[0]))
        optimizer.step()
        module.lazy_reset_grad()
    module.eval()
    final = float(module(*feeds)[0])
    assert not [m for m in sys.modules if m.split(".")[0] in ("edgetune", "torch") and sys.modules[m]]
    print(" ".join(str(v) for v in losses + [final]))
""")


@pytest.mark.parametrize("name,method", [("bert-micro", "lora"), ("vit-micro", "full")])
def test_artifacts_train_with_plain_onnxruntime(name, method, tmp_path):
    """No edgetune code and no torch in the training process: only ORT's training API."""
    model = build(name, method)
    folder = export_mode(model, None, tmp_path / "bundle", mode="static")
    inputs, labels, keep = cases(model)[5]
    data = {f"in{i}": a for i, a in enumerate(numpy_inputs(inputs))}
    data.update(keep=np.array(keep, np.int64), labels=labels.numpy())
    data["order"] = np.array([*[f"in{i}" for i in range(len(inputs))], "keep", "labels"])
    np.savez(tmp_path / "batch.npz", **data)
    script = tmp_path / "train.py"
    script.write_text(STANDALONE)
    run = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "batch.npz")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    losses = [float(v) for v in run.stdout.split()]
    assert_close(losses[0], reference(model, inputs, labels, keep)[0], "first loss", rtol_for(model))
    assert losses[-1] < 0.5 * losses[0], losses  # it learns the batch
    assert np.log(CLASSES) * 3 > losses[0]


def test_runtime_loads_the_training_api_without_torch(tmp_path):
    model = build("vit-micro", "bitfit")
    folder = export_mode(model, None, tmp_path / "bundle", mode="static")
    inputs, labels, keep = cases(model)[0]
    np.savez(tmp_path / "batch.npz", pixels=inputs[0].numpy(), labels=labels.numpy(),
             keep=np.array(keep, np.int64))
    script = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None
        import numpy as np
        from edgetune.runtime.ort_training import training_api
        api = training_api()
        folder, data = sys.argv[1], np.load(sys.argv[2], allow_pickle=False)
        state = api.CheckpointState.load_checkpoint(folder + "/checkpoint")
        module = api.Module(folder + "/training_model.onnx", state, folder + "/eval_model.onnx")
        module.train()
        print(float(module(data["pixels"], data["keep"], data["labels"])[0]))
    """)
    run = subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "batch.npz")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert_close(float(run.stdout), reference(model, inputs, labels, keep)[0], "loss", rtol_for(model))
