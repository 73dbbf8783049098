"""``merge_run``: a training run → an inference ONNX model + the adapter in Hugging Face PEFT format.

    merged/
      inference.onnx              inputs → logits; a plain ``onnxruntime.InferenceSession`` runs it
      inference.int8.onnx         with --int8 (a --base int8 bundle): the same, int8 weights
                                  (a language model's: a generation step over a KV cache)
      decoder_lora.onnx           a LoRA language model: the base decoder, LoRA pairs as inputs,
      adapter.onnx_adapter        and the trained pairs onnxruntime applies to it (onnx_adapter.py)
      initial_past.safetensors    prefix tuning of a language model: its cache (generate.py)
      adapter/                    adapter_config.json + adapter_model.safetensors (PEFT layout)
      tokenizer.json              text models
      merged.json                 what was written, from which run, checkpoint and bundle

Tokens: an ALaST run's checkpoint says whether inference keeps every token or the budgets it
trained with (train/inference_tokens.py, decided on its validation split); ``tokens`` follows
that (``run``) or overrides it. The budgets are written into the graph's ``token_budgets``
tensor, so the merged model drops tokens as training did, with no extra input.

The trained values come from the run's checkpoint (static mode: ORT's checkpoint; adaptive
mode: ``params.safetensors``). The inference model starts from the bundle's ``inference/``
artifacts: for LoRA, IA3 and Propulsion their graph is the merged model (no adapter branch) and
the bundle's recipe folds the trained adapter into its weights here, in numpy; for BitFit and
full fine-tuning the trained tensors are set as they are; adapter, prefix and prompt tuning keep
their extra computation. ORT's training API then writes the graph with the values as initializers.
No torch, no onnx: numpy, onnxruntime(-training) and safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.adapter_format import CONFIG_FILE, WEIGHTS_FILE, save_adapter_arrays
from edgetune.atomic import atomic_dir
from edgetune.bundle import (
    INDEX_FILE,
    INFERENCE_DIR,
    INFERENCE_MODEL,
    INT8_INFERENCE_MODEL,
    TOKEN_BUDGETS,
    Bundle,
)
from edgetune.errors import EdgetuneError, UsageError
from edgetune.merge_ops import apply_recipe, recipe_inputs
from edgetune.merged_folder import MERGED_JSON
from edgetune.quantize import quantize_columns
from edgetune.train.inference_tokens import ALL, RUN, TRAINED, TokenChoice, budgets_for, describe
from edgetune.train.modes import engine_class
from edgetune.train.run_folder import RunFolder

INFERENCE_FILE = INFERENCE_MODEL
ADAPTER_DIR = "adapter"
FORMAT = "edgetune-merged/1"
OUTPUTS = ["logits"]


def merge_run(run: str | Path, checkpoint: str = "best", out: str | Path | None = None,
              overwrite: bool = False, bundle: str | Path | None = None,
              log: Callable[[str], None] | None = None, tokens: str = RUN, int8: bool = False) -> Path:
    """Write ``out`` (default ``RUN/merged``) atomically and return its path.

    ``checkpoint``: ``best`` (falls back to ``last`` where the run never validated), ``last``
    or a checkpoint folder name (``step-00000030``). ``bundle``: where the run's bundle is now,
    if it moved since training (run.json records the path it had). ``tokens``: ``run`` (the
    checkpoint's choice), ``all`` or ``trained``. ``int8``: also write ``inference.int8.onnx``
    (bundles exported with ``--base int8``).
    """
    say = log or (lambda msg: None)
    run = Path(run)
    run_folder = RunFolder(run)
    info = run_folder.read_info()
    if "bundle" not in info:
        raise EdgetuneError(f"{run_folder.info_file}: names no bundle")
    folder = run_folder.checkpoint(checkpoint)
    if folder is None:
        raise EdgetuneError(f"{run}: no checkpoint to merge (train first)")
    out = Path(out) if out is not None else run / "merged"
    if out.exists() and not overwrite:  # before any work
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    b = Bundle.open(bundle) if bundle is not None else _open_bundle(run, info)
    state = run_folder.state(folder)
    choice = TokenChoice.from_state(state)
    budgets = budgets_for(choice, tokens)
    say(f"reading {folder.name} ({state.get('mode')} mode)")
    trained = trained_arrays(folder, state["mode"])  # run_folder.state() checked it is a mode
    return write_merged(b, trained, out, overwrite, budgets, tokens, {
        "run": str(run.resolve()), "checkpoint": folder.name, "step": state.get("step"),
        "mode": state.get("mode"), "labels": info.get("labels"),
        "tokens_reason": describe(choice) if tokens == RUN else f"--tokens {tokens}"},
        say, where=folder, int8=int8)


def write_merged(b: Bundle, trained: dict[str, np.ndarray], out: Path, overwrite: bool,
                 budgets: tuple[float, ...] | None, tokens: str, source: dict[str, Any],
                 say: Callable[[str], None], where: Path | str = "checkpoint", int8: bool = False) -> Path:
    """``out`` (atomically) from the bundle and its ``trained`` parameters by name: the
    inference model and the PEFT adapter; ``source`` (where they came from) goes into
    ``merged.json``."""
    adapter = b.manifest.get("adapter")
    if not adapter:
        raise EdgetuneError(f"{b.path}: the manifest has no adapter layout; re-export the bundle")
    tensors = adapter_tensors(adapter["tensors"], trained, where)
    inference = _inference_index(b)
    if int8 and "int8" not in inference:  # before any work
        why = ("exported before merge --int8 existed" if b.manifest.get("base") == "int8"
               else f"exported with --base {b.manifest.get('base', 'fp32')}")
        raise UsageError(f"{b.path}: {why}, it has no int8 inference model; re-export with "
                         f"--base int8 to merge one")
    budgets = _graph_budgets(inference, budgets, tokens, b, say)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        say("writing the inference model, " + ("keeping every token" if budgets is None else
                                               f"at the token budgets {[round(b, 3) for b in budgets]}")
            + (f" ({source['tokens_reason']})" if source.get("tokens_reason") else "")
            + (", and its int8 twin" if int8 else ""))
        merged = write_inference(b.path / INFERENCE_DIR, inference, trained, tmp / INFERENCE_FILE,
                                 budgets, tmp / INT8_INFERENCE_MODEL if int8 else None)
        decoder = inference.get("model", {}).get("decoder")
        if decoder is not None and decoder.get("prefix"):  # a language model's prefix: its cache
            from edgetune.generate import initial_past, save_initial_past

            save_initial_past(initial_past(decoder, trained), tmp)
        served = _write_served_lora(b, inference, trained, tmp, say)
        say("writing the adapter")
        save_adapter_arrays(tensors, adapter["config"], b.manifest["method"],
                            b.manifest["model"]["family"], tmp / ADAPTER_DIR)
        if b.tokenizer_path is not None:
            shutil.copyfile(b.tokenizer_path, tmp / b.tokenizer_path.name)
        (tmp / MERGED_JSON).write_text(json.dumps({
            "format": FORMAT, **source, "bundle": str(b.path.resolve()),
            "model": b.manifest["model"]["name"], "method": b.manifest["method"]["name"],
            "merged": merged,
            "tokens": ALL if budgets is None else TRAINED,
            "token_budgets": None if budgets is None else list(budgets),
            "inference": {"file": INFERENCE_FILE, "inputs": _model_inputs(inference),
                          "outputs": inference.get("model", {}).get("outputs", OUTPUTS),
                          "preprocessing": b.inputs,
                          **({"decoder": inference["model"]["decoder"]}
                             if "decoder" in inference.get("model", {}) else {})},
            "adapter": {"folder": ADAPTER_DIR, "peft_type": adapter["config"].get("peft_type"),
                        "files": [CONFIG_FILE, WEIGHTS_FILE]},
            "tokenizer": b.tokenizer_path.name if b.tokenizer_path is not None else None,
            "int8": {"file": INT8_INFERENCE_MODEL} if int8 else None,
            **({"onnx_adapter": served} if served is not None else {}),
        }, indent=1))
    say(f"wrote {out}")
    return out


def _write_served_lora(b: Bundle, inference: dict, trained: dict[str, np.ndarray], tmp: Path,
                       say: Callable[[str], None]) -> dict | None:
    """A LoRA language model's ``adapter.onnx_adapter`` and the base decoder it applies to
    (edgetune/onnx_adapter.py), where this onnxruntime writes adapters; None otherwise."""
    from edgetune.onnx_adapter import ONNX_ADAPTER, available, lora_pairs, write_onnx_adapter

    entry = inference.get("lora_decoder")
    if entry is None:
        return None
    if not available():
        say("note: this onnxruntime cannot write .onnx_adapter files (stock onnxruntime >= 1.20 "
            "can); merge there for one")
        return {"file": None, "reason": "this onnxruntime has no AdapterFormat"}
    say("writing the LoRA as an .onnx_adapter over the base decoder")
    shutil.copyfile(b.path / INFERENCE_DIR / entry["file"], tmp / entry["file"])
    write_onnx_adapter(lora_pairs(inference["merge"]["tensors"], trained), tmp / ONNX_ADAPTER)
    return {"file": ONNX_ADAPTER, "base": entry["file"], "inputs": entry["inputs"],
            "outputs": entry["outputs"]}


# ---- the run ---------------------------------------------------------------------------------

def _open_bundle(run: Path, info: dict) -> Bundle:
    path = Path(info["bundle"])
    if not path.is_dir():
        raise EdgetuneError(f"{run}: its bundle {path} is gone; pass the bundle's new path")
    return Bundle.open(path)


def trained_arrays(folder: Path, mode: str) -> dict[str, np.ndarray]:
    """The trained parameters of a checkpoint folder by name (float32 arrays)."""
    return engine_class(mode).read_trained(folder)


# ---- the adapter -------------------------------------------------------------------------------

def adapter_tensors(layout: dict[str, list[str]], trained: dict[str, np.ndarray],
                    where: Path | str = "checkpoint") -> dict[str, np.ndarray]:
    """On-disk key → tensor: the named parameters concatenated along dim 1 (the bundle's layout)."""
    missing = sorted({n for parts in layout.values() for n in parts} - set(trained))
    if missing:
        raise EdgetuneError(f"{where}: holds no value for {', '.join(missing[:3])}"
                            f"{' …' if len(missing) > 3 else ''} (checkpoint and bundle disagree)")
    return {key: np.ascontiguousarray(np.concatenate([trained[n] for n in parts], axis=1)
                                      if len(parts) > 1 else trained[parts[0]])
            for key, parts in layout.items()}


# ---- the inference model ---------------------------------------------------------------------

def _inference_index(b: Bundle) -> dict[str, Any]:
    file = b.path / INFERENCE_DIR / INDEX_FILE
    if not file.is_file():
        raise EdgetuneError(f"{b.path}: no inference artifacts (exported by an older edgetune?); "
                            f"re-export the bundle")
    index = json.loads(file.read_text())
    index.setdefault("merge", {"merged": False, "tensors": {}})
    return index


def _graph_budgets(index: dict, budgets: tuple[float, ...] | None, tokens: str, b: Bundle,
                   say: Callable[[str], None]) -> tuple[float, ...] | None:
    """``budgets`` where the inference graph can drop tokens; bundles exported before it could
    keep every token (an error where the user asked for the budgets, a note where the run chose)."""
    if budgets is None or TOKEN_BUDGETS in index.get("model", {}).get("tensors", {}):
        return budgets
    why = f"{b.path}: its inference graph keeps every token (exported before token budgets)"
    if tokens == TRAINED:
        raise EdgetuneError(f"{why}; re-export the bundle to merge with --tokens trained")
    say(f"note: {why}, though the run chose its trained budgets; re-export to keep them")
    return None


def _model_inputs(index: dict) -> list[str]:
    described = index["model"] if "model" in index else index["static"]
    return [n for n in described["inputs"] if n != "labels"]


def _trainable(index: dict) -> list[str]:
    return list((index["model"] if "model" in index else index["static"])["trainable"])


def merged_values(index: dict[str, Any], trained: dict[str, np.ndarray],
                  current: Callable[[str], np.ndarray]) -> dict[str, np.ndarray]:
    """Every value the inference graph needs set: its trainable parameters as trained, and the
    recipe's merged tensors (``edgetune.merge_ops``). ``current(name)``: the graph's value now
    (the base weights)."""
    recipe = index["merge"].get("tensors", {})
    needed = _trainable(index)
    needed += sorted(recipe_inputs(recipe.values()))
    missing = [n for n in needed if n not in trained]
    if missing:
        raise EdgetuneError(f"the checkpoint holds no value for {', '.join(missing[:3])} "
                            f"(checkpoint and bundle disagree)")
    values = {n: trained[n] for n in _trainable(index)}
    for name, entry in recipe.items():
        base = trained[entry["base"]] if entry.get("base") in trained else current(name)
        values[name] = apply_recipe(entry, base, trained)
    return values


def write_inference(folder: Path, index: dict[str, Any], trained: dict[str, np.ndarray],
                    target: Path, budgets: tuple[float, ...] | None = None,
                    int8_target: Path | None = None) -> bool:
    """Write the inference model with the trained (and merged) values to ``target``. True where
    the adapter was folded into the weights. The bundle's ``inference.onnx`` holds every
    parameter at a known byte offset: the values are written there, a tensor at a time (numpy
    only: any ONNX Runtime build, no ``onnx`` package). Bundles from before hold ORT's training
    artifacts instead, which need the training build. ``budgets``: the token budgets to write
    (None: the graph's own, every token). ``int8_target``: also write the int8 model there
    (:func:`write_int8`)."""
    if "model" not in index:
        if budgets is not None:
            raise EdgetuneError(f"{folder}: this inference graph keeps every token; re-export the bundle")
        return _write_inference_ort(folder, index, trained, target)
    model = index["model"]
    tensors = model["tensors"]
    shutil.copyfile(folder / model["file"], target)
    with open(target, "r+b") as f:
        def current(name: str) -> np.ndarray:
            if name not in tensors:
                raise EdgetuneError(f"{folder}: the inference graph has no parameter {name!r}")
            entry = tensors[name]
            f.seek(entry["offset"])
            count = int(np.prod(entry["shape"], dtype=np.int64))
            return np.frombuffer(f.read(4 * count), np.float32).reshape(entry["shape"])

        values = merged_values(index, trained, current)
        if budgets is not None:
            values[TOKEN_BUDGETS] = np.asarray(budgets, np.float32)
        _write_at(f, tensors, values, folder)
    if int8_target is not None:
        write_int8(folder, index, values, int8_target)
    return bool(index["merge"].get("merged"))


def _write_at(f, tensors: dict[str, dict], values: dict[str, np.ndarray], folder: Path) -> None:
    """Each of ``values`` as float32 at its entry's offset in the open file ``f``, shape checked."""
    for name, value in values.items():
        if name not in tensors:
            raise EdgetuneError(f"{folder}: the inference graph has no parameter {name!r}")
        have = tuple(tensors[name]["shape"])
        if tuple(value.shape) != have:
            raise EdgetuneError(f"{name}: the checkpoint's value has shape {tuple(value.shape)}, "
                                f"the inference graph needs {have}")
        f.seek(tensors[name]["offset"])
        f.write(np.ascontiguousarray(value, dtype=np.float32).tobytes())
    f.flush()
    os.fsync(f.fileno())


def write_int8(folder: Path, index: dict[str, Any], values: dict[str, np.ndarray], target: Path) -> None:
    """The int8 inference model (``--base int8`` bundles: ``inference.int8.onnx``, every product
    of a weight on 7-bit per-channel weights, export/onnx/inference.py) with ``values`` (the
    merged float32 values by name) written in: a weight a product reads is quantized here,
    ``Q, s = quantize_columns(W or Wᵀ)`` and ``s·alpha`` (edgetune/quantize.py), the rest is
    written as float32."""
    entry = index.get("int8")
    if entry is None:
        raise UsageError(f"{folder.parent}: no int8 inference model in this bundle; export it "
                         f"with --base int8 to merge one")
    products: dict[str, list[dict]] = {}
    for q in entry["quantized"]:
        products.setdefault(q["param"], []).append(q)
    unknown = sorted(set(values) - set(entry["tensors"]) - set(products))
    if unknown:
        raise EdgetuneError(f"{folder}: the int8 inference graph has no parameter {unknown[0]!r}")
    shutil.copyfile(folder / entry["file"], target)
    with open(target, "r+b") as f:
        for name, value in values.items():
            for q in products.get(name, ()):
                w = np.asarray(value, np.float32)
                qw, s = quantize_columns(w.T if q["transposed"] else w)
                if list(qw.shape) != q["q"]["shape"]:
                    raise EdgetuneError(f"{name}: the checkpoint's value has shape {tuple(w.shape)}, "
                                        f"the int8 inference graph needs another")
                f.seek(q["q"]["offset"])
                f.write(qw.tobytes())
                f.seek(q["scale"]["offset"])
                f.write((s * np.float32(q["alpha"])).astype(np.float32).tobytes())
        _write_at(f, entry["tensors"], {n: v for n, v in values.items() if n in entry["tensors"]}, folder)


def _write_inference_ort(folder: Path, index: dict[str, Any], trained: dict[str, np.ndarray],
                         target: Path) -> bool:
    """Bundles exported before ``inference.onnx``: ORT's training artifacts (training build)."""
    from edgetune.runtime.ort_training import training_api

    api = training_api()
    files = index["static"]["files"]
    state = api.CheckpointState.load_checkpoint(str(folder / files["checkpoint"]))
    # Build the module first: ORT 1.19 crashes setting a parameter of a state no module holds.
    module = api.Module(str(folder / files["training"]), state, str(folder / files["eval"]))
    values = merged_values(index, trained, lambda n: np.array(state.parameters[n].data))
    for name, value in values.items():
        if name not in state.parameters:
            raise EdgetuneError(f"{folder}: the inference graph has no parameter {name!r}")
        have = tuple(state.parameters[name].data.shape)
        if tuple(value.shape) != have:
            raise EdgetuneError(f"{name}: the checkpoint's value has shape {tuple(value.shape)}, "
                                f"the inference graph needs {have}")
        state.parameters[name].data = np.ascontiguousarray(value, dtype=np.float32)
    module.export_model_for_inferencing(str(target), OUTPUTS)
    return bool(index["merge"].get("merged"))
