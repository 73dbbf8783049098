"""Adaptive mode: per-block graphs, run by the torch-free runner, against torch autograd.

For every method on both micro models: loss, logits, ALaST signal and every gradient equal
torch's at three keep vectors and two batch sizes unlike the trace's; frozen backward gives the
same dx as trainable backward; every graph holds only ops stock onnxruntime has.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from safetensors.numpy import load_file

from edgetune.errors import UsageError
from edgetune.export.onnx import MAX_IR_VERSION, export_mode
from edgetune.export.onnx.lowering import nonstandard_ops
from edgetune.export.peft import trainable_names
from edgetune.runtime import AdaptiveRunner

from export_cases import COMBOS, assert_close, build, cases, gradient_atol, numpy_inputs, reference, rtol_for


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{m}-{k}" for m, k in COMBOS])
def bundle(request, tmp_path_factory):
    name, method = request.param
    model = build(name, method)
    folder = export_mode(model, None, tmp_path_factory.mktemp("adaptive") / "bundle")
    return model, folder, AdaptiveRunner(folder)


def test_step_matches_torch(bundle):
    model, _, runner = bundle
    rtol = rtol_for(model)
    for inputs, labels, keep in cases(model):
        where = f"batch={labels.shape[0]} tokens={model.num_tokens(*inputs)} keep={keep}"
        loss, logits, delta, grads = reference(model, inputs, labels, keep)
        res = runner.step(numpy_inputs(inputs), labels.numpy(), keep)
        assert_close(res.loss, loss, f"loss {where}", rtol)
        assert_close(res.logits, logits, f"logits {where}", rtol)
        assert_close(res.cls_delta, delta, f"cls_delta {where}", rtol)
        assert sorted(res.grads) == sorted(grads)
        atol = gradient_atol(grads)
        for name, expected in grads.items():
            assert_close(res.grads[name], expected, f"{name} {where}", rtol, atol)


def test_inference_forward_matches_torch(bundle):
    model, _, runner = bundle
    inputs, labels, keep = cases(model)[1]
    _, logits, delta, _ = reference(model, inputs, labels, keep)
    out_logits, out_delta = runner.forward(numpy_inputs(inputs), keep)
    assert_close(out_logits, logits, "logits", rtol_for(model))
    assert_close(out_delta, delta, "cls_delta", rtol_for(model))


def _block_feeds(runner, i, batch, tokens, keep, seed):
    rng = np.random.default_rng(seed)
    d = runner.index["model"]["hidden_size"]
    feeds = {"x": rng.standard_normal((batch, tokens, d)).astype(np.float32),
             "keep": np.array([keep], np.int64)}
    if runner.key_bias:
        bias = np.zeros((batch, tokens), np.float32)
        bias[:, -2:] = np.finfo(np.float32).min  # two padded tokens
        feeds["key_bias"] = bias
    dy = rng.standard_normal((batch, keep, d)).astype(np.float32)
    return feeds, dy


def _run(runner, block, graph, outputs, values):
    got = runner.sessions.run_ort(runner.parts[block]["graphs"][graph], outputs, {**runner.params, **values})
    return {name: value.numpy() for name, value in zip(outputs, got)}


def test_frozen_dx_equals_trainable_dx(bundle):
    _, _, runner = bundle
    rtol = rtol_for(runner.index)
    for i, block in enumerate(runner.blocks):
        part = runner.parts[block]
        assert len(part["saved"]["frozen"]) <= len(part["saved"]["train"])
        grads = ["x_grad"] + [p + "_grad" for p in part["trainable"]]
        for batch, tokens, keep in ((1, 9, 4), (3, 6, 6)):
            feeds, dy = _block_feeds(runner, i, batch, tokens, keep, seed=i)
            plain = _run(runner, block, "forward", part["outputs"], feeds)
            dx = {}
            for variant, wanted in (("train", grads), ("frozen", ["x_grad"])):
                names = part["outputs"] + [s for s in part["saved"][variant] if s not in part["outputs"]]
                fwd = _run(runner, block, f"forward_{variant}", names, feeds)
                for out in part["outputs"]:
                    assert_close(fwd[out], plain[out], f"{block} forward_{variant} {out}", rtol)
                stored = _run(runner, block, f"backward_{variant}", wanted, {**feeds, **fwd, "dy": dy})
                dx[variant] = stored["x_grad"]
            assert dx["train"].shape == feeds["x"].shape
            assert_close(dx["frozen"], dx["train"], f"{block} frozen dx", rtol)


def test_graphs_and_parameters_on_disk(bundle):
    model, folder, runner = bundle
    files = sorted(folder.rglob("*.onnx"))
    listed = {g for part in runner.parts.values() for p in (part, part.get("dense") or {})
              for g in p.get("graphs", {}).values()}
    listed |= set(runner.index["optimizer"].values())  # AdamW for device-resident runs
    assert {str(f.relative_to(folder)) for f in files} == listed
    for block in runner.blocks:
        # forward + {forward, backward} × {train, frozen, first (when it trains)} × {plain,
        # _store}; a frozen block: its frozen pairs, and train's names for them
        # (no _store pair where saving changes nothing: the method's gradients need those
        # tensors anyway; LoRA's never do)
        part = runner.parts[block]
        pairs = 2 if any(k.endswith("_store") for k in part["graphs"]) else 1
        assert pairs == 2 or model.peft_method != "lora", block
        assert len(part["graphs"]) == (1 + 6 * pairs if part["trainable"] else 1 + 4 * pairs)
        assert set(part["dense"]["graphs"]) == set(part["graphs"])   # the micro models drop tokens
        assert "keep" in part["inputs"] and "keep" not in part["dense"]["inputs"]
    for f in files:
        graph = onnx.load_model(str(f))
        assert graph.ir_version <= MAX_IR_VERSION, f
        assert nonstandard_ops(graph) == {}, f  # stock onnxruntime runs every graph
    stored = load_file(str(folder / "params.safetensors"))
    expected = {n: p.detach().numpy() for n, p in model.named_parameters()}
    assert sorted(stored) == sorted(expected)
    for n, value in expected.items():
        np.testing.assert_array_equal(stored[n], value, err_msg=n)
    assert runner.index["trainable"] == trainable_names(model)


def test_saving_and_dense_graphs_match_torch_as_the_plain_ones_do(bundle):
    """At a full keep count the runner takes the dense twins and the ``_store`` pairs; each
    choice alone (recompute in backward, or the token-ranking graphs) gives torch's step too,
    and the store pair saves what the plain one recomputes."""
    model, _, runner = bundle
    rtol = rtol_for(model)
    inputs, labels, _ = cases(model)[1]
    full = [model.num_tokens(*inputs)] * model.num_layers
    loss, logits, _, grads = reference(model, inputs, labels, full)
    atol = gradient_atol(grads)
    dense = {b: runner.parts[b].pop("dense") for b in runner.blocks}
    try:
        for store, with_dense in ((True, True), (False, True), (True, False), (False, False)):
            runner.store = set(range(runner.num_layers)) if store else set()
            if with_dense:
                for b, d in dense.items():
                    runner.parts[b]["dense"] = d
            else:
                for b in runner.blocks:
                    runner.parts[b].pop("dense", None)
            res = runner.step(numpy_inputs(inputs), labels.numpy(), full)
            where = f"store={store} dense={with_dense}"
            assert_close(res.loss, loss, f"loss {where}", rtol)
            assert_close(res.logits, logits, f"logits {where}", rtol)
            for name, expected in grads.items():
                assert_close(res.grads[name], expected, f"{name} {where}", rtol, atol)
            files = set(res.backward.values())
            assert any("/dense_" in f for f in files) == with_dense, files
            has_pairs = any(k.endswith("_store") for k in runner.parts[runner.blocks[0]]["graphs"])
            assert any(f.endswith("_store.onnx") for f in files) == (store and has_pairs), files
    finally:
        for b, d in dense.items():
            runner.parts[b]["dense"] = d
        runner.store = set(range(runner.num_layers))
    for block in runner.blocks:
        saved = runner.parts[block]["saved"]
        assert "train_store" not in saved or set(saved["train"]) < set(saved["train_store"]), block


def test_backward_recomputes_attention_probabilities_and_activations(bundle):
    """No forward graph hands backward an Expand (a broadcast index); with every weight trained
    (full), not a Softmax output nor an activation's input or output either: backward
    recomputes them from what crosses anyway (recompute.py; test_step_matches_torch checks
    the gradients). Other methods may need one that only a second matmul could rebuild."""
    model, folder, runner = bundle
    for block in runner.blocks:
        part = runner.parts[block]
        for variant, saved in part["saved"].items():
            if variant.endswith("_store"):
                continue  # saves what these recompute, by design
            file = folder / part["graphs"][f"forward_{variant}"]
            graph = onnx.load_model(str(file), load_external_data=False)
            producer = {o: n.op_type for n in graph.graph.node for o in n.output}
            fed_to = {i: n.op_type for n in graph.graph.node for i in n.input}
            for name in saved:
                assert producer.get(name) != "Expand", (block, variant, name)
                if model.peft_method == "full" and name not in part["outputs"]:
                    assert producer.get(name) not in ("Softmax", "Gelu"), (block, variant, name)
                    assert fed_to.get(name) != "Gelu", (block, variant, name)


def test_recompute_rules_drop_what_one_matmul_can_rebuild():
    """x0 → MatMul → x → MatMul → h → Gelu → a → MatMul: with x crossing, the activation's
    input and output are rebuilt from it (one matmul, one Gelu); without rules nothing is;
    with x not crossing, h would take two matmuls and crosses, a is rebuilt from it; the
    matmul-free rule rebuilds a alone."""
    from onnx import helper

    from edgetune.export.onnx.recompute import recompute

    nodes = [helper.make_node("MatMul", ["x0", "w0"], ["x"]),
             helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Gelu", ["h"], ["a"], domain="com.microsoft"),
             helper.make_node("MatMul", ["a", "w2"], ["y"])]
    crossing = {"x", "h", "a"}
    chain = recompute(crossing, nodes, set(), ["y"], ("activation",))
    assert crossing == {"x"} and [n.output[0] for n in chain] == ["h", "a"]
    crossing = {"x", "h", "a"}
    assert recompute(crossing, nodes, set(), ["y"], ()) == [] and crossing == {"x", "h", "a"}
    crossing = {"h", "a"}
    chain = recompute(crossing, nodes, set(), ["y"], ("activation",))
    assert crossing == {"h"} and [n.output[0] for n in chain] == ["a"]
    # the saving graphs' rule: an activation's output from its saved input, never a matmul
    crossing = {"x", "h", "a"}
    chain = recompute(crossing, nodes, set(), ["y"], ("activation_output",))
    assert crossing == {"x", "h"} and [n.output[0] for n in chain] == ["a"]


PARTIAL = [("bert-micro", "full"), ("vit-micro", "lora")]


@pytest.mark.parametrize("name,method", PARTIAL)
def test_freezing_skips_work_below_the_lowest_trained_block(name, method, tmp_path):
    model = build(name, method)
    runner = AdaptiveRunner(export_mode(model, None, tmp_path / "b"))
    inputs, labels, keep = cases(model)[4]
    _, _, _, grads = reference(model, inputs, labels, keep)
    rtol, atol = rtol_for(model), gradient_atol(grads)
    head = set(runner.parts["head"]["trainable"])  # the task head (and BERT's pooler, in full)

    def block_params(i):
        return {n for n in runner.parts[runner.blocks[i]]["trainable"]}

    # the lowest trained block computes no input gradient where nothing below it trains (here
    # the stem is not trained): its ``first`` graphs
    first = "backward_first"
    for train, ran in (({1}, {"block_01": first}),
                       ({0}, {"block_01": "backward_frozen", "block_00": first}),
                       (set(), {})):
        res = runner.step(numpy_inputs(inputs), labels.numpy(), keep, train=train, train_stem=False)
        # the graph's name less any dense_ prefix and _store suffix (other tests cover those)
        names = {k: v.split("/")[1][:-5].removeprefix("dense_").removesuffix("_store")
                 for k, v in res.backward.items()}
        assert names == ran
        expect = head.union(*[block_params(i) for i in train])
        assert set(res.grads) == expect
        for n in expect:
            assert_close(res.grads[n], grads[n], f"{n} train={train}", rtol, atol)


TORCH_FREE = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # a device: importing torch fails
    import numpy as np
    from edgetune.runtime import AdaptiveRunner
    data = np.load(sys.argv[2], allow_pickle=False)
    runner = AdaptiveRunner(sys.argv[1])
    res = runner.step([data["input_ids"], data["attention_mask"]], data["labels"], list(data["keep"]))
    assert not [m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m]]
    print(res.loss)
""")


def test_runtime_runs_without_torch(tmp_path):
    model = build("bert-micro", "lora")
    folder = export_mode(model, None, tmp_path / "b")
    inputs, labels, keep = cases(model)[2]
    np.savez(tmp_path / "batch.npz", input_ids=inputs[0].numpy(), attention_mask=inputs[1].numpy(),
             labels=labels.numpy(), keep=np.array(keep, np.int64))
    script = tmp_path / "step.py"
    script.write_text(TORCH_FREE)
    run = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "batch.npz")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert_close(float(run.stdout), reference(model, inputs, labels, keep)[0], "loss", rtol_for(model))


def test_export_bundle_refuses_bad_requests(tmp_path):
    with pytest.raises(UsageError, match="mode"):
        export_mode("vit-micro", "lora", tmp_path / "a", mode="dynamic")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(UsageError, match="not empty"):
        export_mode("vit-micro", "lora", tmp_path / "full")
    with pytest.raises(UsageError, match="no PEFT method"):
        export_mode("vit-micro", None, tmp_path / "b")
