"""``export_bundle``: model + PEFT method → a bundle folder a device trains without torch.

Writes ``manifest.json`` (model, method, inputs, per-layer parameters, FLOPs and activation
bytes, sha256 of every file), one folder per mode (``static``, ``adaptive``), ``inference/``
(artifacts ``edgetune merge`` turns into an inference model: for a mergeable method the merged
model, with a recipe to fold the trained adapter into its weights) and, for text, ``tokenizer.json``.
Everything is built in a temporary folder and renamed into place at the end.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edgetune import __version__
from edgetune.atomic import atomic_dir
from edgetune.bundle import FORMAT, INDEX_FILE, INFERENCE_DIR, MANIFEST, MODES, TOKENIZER_FILE, hash_tree
from edgetune.config import to_dict
from edgetune.errors import EdgetuneError, UsageError
from edgetune.export.costs import layer_costs
from edgetune.export.models.base import TransformerModel
from edgetune.export.onnx.bundle import export_mode, prepare_model
from edgetune.export.onnx.inference import inference_model, write_inference_model, write_int8_inference
from edgetune.export.onnx.lora_decoder import write_lora_decoder
from edgetune.export.onnx.quantize import check_base
from edgetune.export.peft import trainable_names
from edgetune.export.peft.hf_format import adapter_layout, hf_adapter_config

MODE_CHOICES = (*MODES, "both")
TRACE_BATCH, TRACE_TOKENS = 2, 16  # only size the trace: batch and tokens stay dynamic


def export_bundle(model: str | Path | TransformerModel, method: str | None = "lora",
                  out: str | Path = "bundle", *, method_config: Any = None, num_classes: int | None = None,
                  mode: str = "both", max_tokens: int | None = None,
                  tokenizer: str | Path | None = None, image_mean: float | None = None,
                  image_std: float | None = None, pooling: str | None = None,
                  image_size: int | None = None, seed: int = 0, base: str = "fp32",
                  overwrite: bool = False,
                  log: Callable[[str], None] | None = None) -> Path:
    """Export and return the bundle's path. ``model``: a registered name, a checkpoint folder
    or a model object; ``max_tokens``: the longest text the device will feed (text models);
    ``pooling``: a BERT's "cls" or "mean" (default: what the checkpoint declares);
    ``image_size``: a ViT at another resolution (its position embedding resampled);
    ``base``: "int8" runs the frozen weights' products on int8 kernels (adaptive mode only:
    ORT's static artifacts train float32; the float32 weights stay in the bundle for merge)."""
    if mode not in MODE_CHOICES:
        raise UsageError(f"mode={mode!r}: must be one of {', '.join(MODE_CHOICES)}")
    say = log or (lambda msg: None)
    out = Path(out)
    if out.exists() and not overwrite:  # fail before minutes of work, not after
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    t0 = time.perf_counter()
    say(f"building {name} with {method}")
    model = prepare_model(model, method, method_config, num_classes, seed, pooling, image_size)
    inputs, tokens, text_tokens = _input_spec(model, max_tokens, tokenizer, image_mean, image_std)
    trainable = trainable_names(model)
    modes = MODES if mode == "both" else (mode,)
    if model.task == "causal_lm":  # static mode's ORT loss scores classes (onnx/bundle.py)
        if mode == "static":
            raise UsageError("--mode static: a language model exports in mode adaptive (which "
                             "trains on stock onnxruntime); leave --mode out")
        modes = ("adaptive",)
    if check_base(base) != "fp32":
        if mode == "static":
            raise UsageError(f"--base {base} --mode static: only the adaptive engine runs an int8 "
                             "base (ORT's static artifacts train float32); leave --mode out")
        modes = ("adaptive",)
    trace_tokens = min(TRACE_TOKENS, text_tokens) if text_tokens else None
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for m in modes:
            say(f"exporting {m} graphs")
            export_mode(model, None, tmp / m, mode=m, batch=TRACE_BATCH, tokens=trace_tokens,
                        base=base)
        say("exporting the inference artifacts")
        plain, plain_trainable, merge = inference_model(model, trainable)
        inference = write_inference_model(plain, plain_trainable, tmp / INFERENCE_DIR,
                                          TRACE_BATCH, trace_tokens)
        served = write_lora_decoder(model, tmp / INFERENCE_DIR, TRACE_BATCH, trace_tokens)
        int8 = write_int8_inference(tmp / INFERENCE_DIR, inference) if base == "int8" else None
        (tmp / INFERENCE_DIR / INDEX_FILE).write_text(json.dumps(
            {"model": inference, "merge": merge, **({"lora_decoder": served} if served else {}),
             **({"int8": int8} if int8 else {})}, indent=1))
        if inputs.get("tokenizer"):
            shutil.copyfile(inputs.pop("tokenizer_source"), tmp / inputs["tokenizer"])
        say("measuring per-layer costs")
        manifest = _manifest(model, name, modes, inputs, tokens, trainable)
        manifest["base"] = base
        manifest["export_seconds"] = round(time.perf_counter() - t0, 2)
        manifest["files"] = hash_tree(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    say(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return out


def _pixel_statistics(model: TransformerModel) -> tuple[float, float]:
    """(mean, std) of pixels / 255 that a checkpoint folder's config.json declares
    (``image_mean``, ``image_std``: what it was pretrained with), else (0.5, 0.5)."""
    folder = getattr(model, "source_dir", None)
    cfg = json.loads((Path(folder) / "config.json").read_text()) if folder is not None else {}
    return float(cfg.get("image_mean", 0.5)), float(cfg.get("image_std", 0.5))


def _input_spec(model: TransformerModel, max_tokens, tokenizer, mean, std) -> tuple[dict, int, int]:
    """(inputs entry, tokens entering layer 1 at most, text tokens or 0)."""
    prompt = model.prompt.embeddings.shape[0] if getattr(model, "prompt", None) is not None else 0
    if model.family == "vit":
        c = model.config
        if max_tokens is not None:
            raise UsageError(f"max_tokens={max_tokens}: only text models take it (a ViT sees "
                             f"{c.num_patches + 1} tokens at {c.image_size} px)")
        own = _pixel_statistics(model)  # what a checkpoint was pretrained with, else 0.5
        mean = own[0] if mean is None else mean
        std = own[1] if std is None else std
        spec = {"kind": "image", "image_size": c.image_size, "channels": c.in_chans,
                "mean": [mean] * c.in_chans, "std": [std] * c.in_chans, "extra_tokens": prompt}
        return spec, c.num_patches + 1 + prompt, 0
    limit = model.config.max_position_embeddings
    default = 256 if model.task == "causal_lm" else 128
    max_tokens = max_tokens if max_tokens is not None else min(default, limit)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 2 <= max_tokens <= limit:
        raise UsageError(f"max_tokens={max_tokens!r}: must be an integer in [2, {limit}] for this model")
    source = Path(tokenizer) if tokenizer else _model_tokenizer(model)
    if source is None:
        raise UsageError("a text model needs a tokenizer: pass --tokenizer PATH/tokenizer.json")
    if not source.is_file():
        raise EdgetuneError(f"{source}: no such tokenizer file")
    spec = {"kind": "text", "max_tokens": max_tokens, "tokenizer": TOKENIZER_FILE,
            "tokenizer_source": str(source), "extra_tokens": prompt}
    if model.task == "causal_lm":  # what the data appends, and what stops generation
        eos = list(model.config.eos_token_id)
        spec.update(task="causal_lm", eos_id=eos[0] if eos else None, eos_ids=eos,
                    bos_id=model.config.bos_token_id)
    return spec, max_tokens + prompt, max_tokens


def _model_tokenizer(model) -> Path | None:
    folder = getattr(model, "source_dir", None)
    return Path(folder) / TOKENIZER_FILE if folder and (Path(folder) / TOKENIZER_FILE).is_file() else None


def _stem_trainable(model: TransformerModel) -> bool:
    """Whether any trainable parameter takes part in the embeddings (the adaptive stem)."""
    wrt = [p for p in model.parameters() if p.requires_grad]
    if not wrt:
        return False
    with torch.enable_grad():
        tokens, _ = model.embed(*model.example_inputs(1, None))
        if not tokens.requires_grad:
            return False
        grads = torch.autograd.grad(tokens.sum(), wrt, allow_unused=True)
    return any(g is not None for g in grads)


def _manifest(model: TransformerModel, name: str, modes, inputs: dict, tokens: int,
              trainable: list[str]) -> dict:
    params = dict(model.named_parameters())
    blocks = []
    costs = layer_costs(model, tokens)
    for i, (block, cost) in enumerate(zip(model.blocks, costs)):
        path = next(n for n, m in model.named_modules() if m is block)
        own = {f"{path}.{n}": p.numel() for n, p in block.named_parameters()}
        blocks.append({
            "index": i, "name": path,
            "trainable_params": {n: c for n, c in own.items() if n in trainable},
            "frozen_params": {n: c for n, c in own.items() if n not in trainable},
            **cost,
        })
    in_blocks = {n for b in blocks for n in (*b["trainable_params"], *b["frozen_params"])}
    outside = {n: p.numel() for n, p in params.items() if n not in in_blocks}
    cfg = getattr(model, "peft_config", None)
    return {
        "format": FORMAT,
        "edgetune_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"name": name, "family": model.family, "num_layers": model.num_layers,
                  "hidden_size": model.hidden_size, "task": model.task,
                  "num_classes": getattr(model.config, "num_classes", None),
                  "input_names": list(model.input_names),
                  "config": to_dict(model.config)},
        "method": {"name": model.peft_method, "config": to_dict(cfg) if cfg is not None else {}},
        "modes": list(modes),
        "inputs": inputs,
        "tokens": tokens,
        "extra_tokens": inputs["extra_tokens"],
        "params": {"total": sum(p.numel() for p in params.values()),
                   "trainable": sum(params[n].numel() for n in trainable),
                   "outside_layers": {"trainable": {n: c for n, c in outside.items() if n in trainable},
                                      "frozen": {n: c for n, c in outside.items() if n not in trainable}}},
        "layers": blocks,
        # the stem trains with layer 0; else the lowest trained block runs its ``first``
        # graphs (no input gradient) and costs ``*_first``
        "stem_trainable": _stem_trainable(model),
        "adapter": {"config": hf_adapter_config(model), "tensors": adapter_layout(model)},
    }

