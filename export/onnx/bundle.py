"""``export_mode``: a registered model + PEFT method → one execution mode's folder of a bundle.

Both modes write ``graphs.json`` (what the graphs are and how they connect). Adaptive mode adds
the per-part graphs and ``params.safetensors`` (every parameter, fp32; no pickle anywhere);
static mode adds ORT's artifacts (the checkpoint holds the parameters).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file

from edgetune.atomic import atomic_dir
from edgetune.bundle import INDEX_FILE, INDEX_FORMAT, MODES, PARAMS_FILE, WEIGHTS_FILE
from edgetune.config import to_dict
from edgetune.errors import UsageError
from edgetune.export.models.base import TransformerModel
from edgetune.export.models.registry import create_model, model_task
from edgetune.export.onnx.adaptive import PartGraphs, export_adaptive
from edgetune.export.onnx.external import SharedData
from edgetune.export.onnx.optim import write_optimizer
from edgetune.export.onnx.quantize import check_base
from edgetune.export.onnx.static import export_static
from edgetune.export.onnx.trace import save_model
from edgetune.export.peft import apply_method, trainable_names


def prepare_model(model: str | TransformerModel, method: str | None, method_config: Any = None,
                  num_classes: int | None = None, seed: int = 0, pooling: str | None = None,
                  image_size: int | None = None) -> TransformerModel:
    """A model with its method applied (a registered name is built with ``seed``; a classifier
    with ``num_classes``, default 2)."""
    if isinstance(model, (str, Path)):
        torch.manual_seed(seed)
        if model_task(model) == "causal_lm":
            if num_classes is not None:
                raise UsageError(f"num_classes={num_classes}: {model} is a language model (it "
                                 "predicts tokens, it has no classes); leave num_classes out")
            model = create_model(model, None, pooling, image_size)
        else:
            model = create_model(model, 2 if num_classes is None else num_classes, pooling, image_size)
    elif pooling is not None or image_size is not None:
        raise UsageError("pooling= and image_size= apply to a model built by name or folder; "
                         "set them on the model object")
    current = getattr(model, "peft_method", None)
    if method is None and current is None:
        raise UsageError("no PEFT method: pass method= (e.g. 'lora', or 'full')")
    if method is not None and current is None:
        apply_method(model, method, method_config)
    elif method is not None and method != current:
        raise UsageError(f"model already has method {current!r}, asked for {method!r}")
    return model.eval()


def export_mode(model: str | TransformerModel, method: str | None, out_dir: str | Path, *,
                  mode: str = "adaptive", method_config: Any = None, num_classes: int | None = None,
                  batch: int = 2, tokens: int | None = None, seed: int = 0,
                  overwrite: bool = False, base: str = "fp32") -> Path:
    """Export ``model`` + ``method`` to ``out_dir`` in ``mode`` ('static' or 'adaptive').

    ``batch``/``tokens`` only size the trace: batch, keep counts (and sequence length for text
    models) stay runtime inputs. ``base`` "int8" (adaptive mode, a method that freezes the base):
    the frozen weights' products on int8 kernels (:mod:`.quantize`). Written into a temporary
    folder, then renamed into place (``edgetune.atomic.atomic_dir``).
    """
    if mode not in MODES:
        raise UsageError(f"mode={mode!r}: must be one of {', '.join(MODES)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise UsageError(f"{out_dir}: exists and is not empty (pass overwrite=True)")
    name = model if isinstance(model, (str, Path)) else type(model).__name__
    model = prepare_model(model, method, method_config, num_classes, seed)
    if mode == "static" and model.task == "causal_lm":
        raise UsageError("mode='static': ORT's training artifacts score classes; a language model "
                         "exports in mode 'adaptive' (which trains on stock onnxruntime)")
    trainable = trainable_names(model)
    if check_base(base) != "fp32":
        if mode != "adaptive":
            raise UsageError(f"base={base!r}: only adaptive mode runs an int8 base (ORT's static "
                             "artifacts train float32); export mode 'adaptive'")
        if model.peft_method == "full":
            raise UsageError(f"base={base!r}: method 'full' trains every weight, so no base is "
                             "frozen to quantize; use base 'fp32'")
    index = _describe(model, str(name), trainable, mode)
    with atomic_dir(out_dir, overwrite=True) as tmp:  # a non-empty one was refused above
        if mode == "static":
            index["static"] = export_static(model, trainable, tmp, batch, tokens)
        else:
            parts = export_adaptive(model, set(trainable), batch, tokens, base)
            index["parts"] = write_parts(parts, tmp)
            read = set().union(*(p.reads() for p in parts.values()))
            # the float32 originals stay in params (merge and generation read them); a run
            # does not load what no graph reads
            index["base"] = {"dtype": base,
                             "quantized": sorted(n for p in parts.values() for n in p.params
                                                 if n not in read)}
            index["blocks"] = [k for k in parts if k.startswith("block_")]
            index["params"] = PARAMS_FILE
            index["optimizer"] = write_optimizer(tmp)  # for runs that keep state on a device
            save_file(_param_arrays(model), str(tmp / PARAMS_FILE))
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return out_dir


def _describe(model: TransformerModel, name: str, trainable: list[str], mode: str) -> dict:
    cfg = getattr(model, "peft_config", None)
    return {
        "format": INDEX_FORMAT, "mode": mode,
        "model": {"name": name, "family": model.family, "num_layers": model.num_layers,
                  "hidden_size": model.hidden_size, "inputs": list(model.input_names),
                  "task": model.task, "summary": "first" if model.drops_tokens else "mean_skip_first"},
        "method": {"name": model.peft_method, "config": to_dict(cfg) if cfg is not None else {}},
        "trainable": trainable,
    }


def write_parts(parts: dict[str, PartGraphs], folder: Path) -> dict:
    """Save every part's graphs as ``<part>/<variant>.onnx`` (a dense twin's as
    ``<part>/dense_<variant>.onnx``), their large constants (an int8 base's weights) once in
    ``<part>/weights.bin`` (:mod:`.external`); returns the index entries."""
    return {key: _write_part(part, folder, key, "", SharedData(folder / key / WEIGHTS_FILE))
            for key, part in parts.items()}


def _write_part(part: PartGraphs, folder: Path, key: str, prefix: str, shared: SharedData) -> dict:
    files, external = {}, {}
    for variant, graph in part.graphs.items():
        files[variant] = f"{key}/{prefix}{variant}.onnx"
        if n := shared.externalize(graph):
            external[files[variant]] = n
        save_model(graph, folder / files[variant])
    for variant, target in part.aliases.items():
        files[variant] = files[target]
    saved = dict(part.saved)
    if part.aliases:
        for name in [n for n in saved if n.startswith("frozen")]:
            saved.setdefault("train" + name[len("frozen"):], saved[name])
    entry = {"graphs": files, "params": part.params, "trainable": part.trainable,
             "inputs": part.inputs, "outputs": part.outputs, "saved": saved}
    if external:  # graph file → bytes of weights.bin it reads (its session holds them)
        entry["external"] = external
    if part.dense is not None:
        entry["dense"] = _write_part(part.dense, folder, key, "dense_", shared)
    return entry


def _param_arrays(model: TransformerModel) -> dict[str, np.ndarray]:
    return {n: np.ascontiguousarray(p.detach().cpu().numpy().astype(np.float32))
            for n, p in model.named_parameters()}
