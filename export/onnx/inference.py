"""What the bundle's ``inference/`` artifacts trace, and the recipe ``edgetune merge`` follows.

For a mergeable method (LoRA, IA3, Propulsion) the inference graph is the *merged* model: every
wrapped layer is a plain ``Linear``/``Embedding`` again, holding the *base* weights, and the
recipe says how the device folds the trained adapter into them (numpy, no torch): each wrapped
layer's ``merge_recipe`` names ops of ``edgetune.merge_ops`` (``W' = W + scale · B A``,
``W' = W ⊙ s^power``); its other tensors are copied (``W' = W``).

Keys are parameter names of the merged graph, ``base`` the unmerged model's name of the base
tensor (its trained value wins where it was trained). BitFit and full fine-tuning need no recipe
(nothing wraps a layer); adapter, prefix and prompt tuning add computation no weight absorbs,
so their inference graph is the unmerged model and the recipe is empty (``merged``: false).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from edgetune.bundle import INFERENCE_MODEL, INT8_INFERENCE_MODEL, TOKEN_BUDGETS
from edgetune.errors import EdgetuneError
from edgetune.export.models.base import TransformerModel
from edgetune.export.peft.base import METHODS, Mergeable, MergeRecipe
from edgetune.merge_ops import MERGE_OPS


def _module_recipe(name: str, module: nn.Module) -> dict[str, dict] | None:
    """The recipe entries of one wrapped layer ``name``; None for a layer without a recipe."""
    if not isinstance(module, MergeRecipe):
        return None
    base = module.base_layer
    tensors = ["weight"] + (["bias"] if getattr(base, "bias", None) is not None else [])
    out = {f"{name}.{t}": {"op": "copy", "base": f"{name}.base_layer.{t}"} for t in tensors}
    out.update(module.merge_recipe(name))
    unknown = {e["op"] for e in out.values()} - set(MERGE_OPS)
    if unknown:  # the device could not merge this bundle
        raise EdgetuneError(f"{name}: merge recipe op {sorted(unknown)} is not in edgetune.merge_ops")
    return out


def inference_model(model: TransformerModel, trainable: list[str]
                    ) -> tuple[TransformerModel, list[str], dict]:
    """(model to trace for inference, its parameters to mark trainable, merge entry).

    The merge entry, written into ``inference/graphs.json``: ``{"merged": bool, "method",
    "tensors": {merged name: recipe}}``. The given model is left untouched.
    """
    method = getattr(model, "peft_method", None)
    unmerged = (model, trainable, {"merged": False, "method": method, "tensors": {}})
    if method is None or not METHODS.get(method).mergeable:
        return unmerged
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, Mergeable)]
    recipe: dict[str, dict] = {}
    for name, module in wrapped:
        entries = _module_recipe(name, module)
        if entries is None:  # a layer kind without a recipe: stay exact, trace it unmerged
            return unmerged
        recipe.update(entries)
    if not recipe:  # bitfit, full: nothing wraps a layer; the model is its own merge
        return (model, trainable, {"merged": True, "method": method, "tensors": {}})
    merged = copy.deepcopy(model)
    for name, module in [(n, m) for n, m in merged.named_modules() if isinstance(m, Mergeable)]:
        plain = module.merge()
        with torch.no_grad():  # the base weights, not the merge of the adapter as initialised
            for t, p in plain.named_parameters():
                p.copy_(getattr(module.base_layer, t))
        _replace(merged, name, plain)
    merged.peft_method = None
    params = dict(merged.named_parameters())
    for p in params.values():
        p.requires_grad_(False)
    keep = [n for n in trainable if n in params and n not in recipe]
    for n in keep:
        params[n].requires_grad_(True)
    return merged.eval(), keep, {"merged": True, "method": method, "tensors": recipe}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def write_inference_model(model: TransformerModel, trainable: list[str], folder: Path,
                          batch: int, tokens: int | None) -> dict:
    """Trace ``model`` (inputs → logits; a language model's generation step over a KV cache,
    onnx/decoder.py) into ``folder/inference.onnx``, one self-contained file, and return its
    index entry: inputs, outputs, the trainable names and, for every parameter,
    the byte offset of its float32 data in the file. ``edgetune merge`` writes trained values
    at those offsets, so the device needs neither the ``onnx`` package nor ORT's training API.

    Offsets: :func:`_place`.
    """
    from edgetune.export.onnx.decoder import decoder_spec, trace_decoder
    from edgetune.export.onnx.static import trace_inference
    from edgetune.export.onnx.trace import clamp_ir

    if model.task == "causal_lm":  # a language model's: one generation step over a KV cache
        graph, inputs, outputs = trace_decoder(model, batch, tokens)
        graph = clamp_ir(graph)
    else:
        graph = clamp_ir(trace_inference(model, batch, tokens))
        inputs, outputs = list(model.input_names), ["logits"]
    params = {n for n, _ in model.named_parameters()} | {TOKEN_BUDGETS}
    real = {t.name: numpy_helper.to_array(t).astype(np.float32)
            for t in graph.graph.initializer if t.name in params}
    blob, offsets = _place(graph, real)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INFERENCE_MODEL).write_bytes(blob)
    extra = {"decoder": decoder_spec(model)} if model.task == "causal_lm" else {}
    return {"file": INFERENCE_MODEL, "inputs": inputs, "outputs": outputs, **extra,
            "trainable": [n for n in trainable if n in real],
            "tensors": {n: {"offset": o, "shape": list(real[n].shape)} for n, o in offsets.items()}}


def _place(graph: onnx.ModelProto, real: dict[str, np.ndarray]) -> tuple[bytes, dict[str, int]]:
    """(the serialised model with ``real``'s initializers holding those values, each one's byte
    offset in it). Offsets are found by serialising with a random marker in each tensor's place
    (unique in the file, else another draw); the values are checked to read back."""
    for attempt in range(4):
        rng = np.random.default_rng(attempt)
        markers = {n: rng.bytes(a.nbytes) for n, a in real.items()}
        for t in graph.graph.initializer:
            if t.name in markers:
                t.CopyFrom(numpy_helper.from_array(real[t.name], t.name))
                t.raw_data = markers[t.name]
        blob = bytearray(graph.SerializeToString())
        offsets = {n: blob.find(m) for n, m in markers.items()}
        if all(o >= 0 and blob.find(markers[n], o + 1) < 0 for n, o in offsets.items()):
            break
    else:  # pragma: no cover - 4 draws of random bytes colliding
        raise EdgetuneError("could not place the inference model's parameters")
    for n, o in offsets.items():
        blob[o:o + real[n].nbytes] = np.ascontiguousarray(real[n]).tobytes()
    check = onnx.load_model_from_string(bytes(blob))
    for t in check.graph.initializer:
        if t.name in real and not np.array_equal(numpy_helper.to_array(t), real[t.name]):
            raise EdgetuneError(f"inference model: {t.name} did not round-trip")
    return bytes(blob), offsets


def write_int8_inference(folder: Path, entry: dict) -> dict:
    """``folder/inference.int8.onnx``: the inference model (``entry``, its index entry) with every
    product of a 2-D parameter on ``DynamicQuantizeMatMul`` (7-bit per-channel weights,
    edgetune/quantize.py; onnx/quantize.py says why). Returns its index entry: the float32
    parameters left (byte offsets, as ``inference.onnx``'s) and, under ``quantized``, each
    quantized orientation of a parameter: ``{param, transposed, alpha, q: {offset, shape},
    scale: {offset, shape}}``, so ``edgetune merge --int8`` quantizes the merged weights
    (numpy) and writes them in place."""
    from edgetune.export.onnx.quantize import MS, quantize_frozen

    graph = onnx.load_model(str(folder / entry["file"]))
    g = graph.graph
    params = set(entry["tensors"]) - {TOKEN_BUDGETS}
    frozen = {t.name: numpy_helper.to_array(t) for t in g.initializer
              if t.name in params and len(t.dims) == 2}
    kept = [t for t in g.initializer if t.name not in frozen]
    del g.initializer[:]
    g.initializer.extend(kept)  # the products' weights as inputs: what quantize_frozen rewrites
    g.input.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, a.shape)
                   for n, a in frozen.items())
    made: list[dict] = []
    gone = quantize_frozen(graph, frozen, made)
    back = [i for i in g.input if i.name in frozen]  # still read as float32 (e.g. a lookup)
    inputs = [i for i in g.input if i.name not in frozen]
    del g.input[:]
    g.input.extend(inputs)
    g.initializer.extend(numpy_helper.from_array(frozen[i.name], i.name) for i in back)
    assert gone | {i.name for i in back} == set(frozen)
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    real = {n: inits[n].astype(np.float32) for n in entry["tensors"] if n in inits}
    for m in made:
        real[m["q"]], real[m["scale"]] = inits[m["q"]], inits[m["scale"]]
    if not any(o.domain == MS for o in graph.opset_import):  # pragma: no cover - quantize_frozen adds it
        graph.opset_import.append(helper.make_opsetid(MS, 1))
    blob, offsets = _place(graph, real)
    (folder / INT8_INFERENCE_MODEL).write_bytes(blob)

    def where(name: str) -> dict:
        return {"offset": offsets[name], "shape": list(real[name].shape)}

    return {"file": INT8_INFERENCE_MODEL,
            "tensors": {n: where(n) for n in entry["tensors"] if n in inits},
            "quantized": [{"param": m["param"], "transposed": m["transposed"], "alpha": m["alpha"],
                           "q": where(m["q"]), "scale": where(m["scale"])} for m in made]}
