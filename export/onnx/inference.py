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

import torch
from torch import nn

from edgetune.bundle import INFERENCE_MODEL, TOKEN_BUDGETS
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

    Offsets are found by serialising with a random marker in each parameter's place (unique in
    the file, else another draw), then the real values are written there and read back.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

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
        blob[o:o + real[n].nbytes] = real[n].tobytes()
    check = onnx.load_model_from_string(bytes(blob))
    for t in check.graph.initializer:
        if t.name in real and not np.array_equal(numpy_helper.to_array(t), real[t.name]):
            raise EdgetuneError(f"inference model: {t.name} did not round-trip")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INFERENCE_MODEL).write_bytes(bytes(blob))
    extra = {"decoder": decoder_spec(model)} if model.task == "causal_lm" else {}
    return {"file": INFERENCE_MODEL, "inputs": inputs, "outputs": outputs, **extra,
            "trainable": [n for n in trainable if n in real],
            "tensors": {n: {"offset": o, "shape": list(real[n].shape)} for n, o in offsets.items()}}
