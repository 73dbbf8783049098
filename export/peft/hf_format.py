"""Save and load a method's trainable parameters: ``adapter_config.json`` +
``adapter_model.safetensors``, in Hugging Face PEFT's layout where PEFT has the method.

Keys are ``base_model.model.<parameter path>`` (LoRA ``…query.lora_A.weight``, IA3
``…key.ia3_l``, the head ``…classifier.weight``); prefix and prompt tuning store one
``prompt_embeddings`` tensor and the head under ``base_model.<path>``, as PEFT does. Methods PEFT
lacks (adapter, propulsion, bitfit, full) use the same files with ``peft_type``
``EDGETUNE_<NAME>``. What differs per method is its registry entry's hooks (``hf_config``,
``adapter_keys``, ``prompt_learning``); the files are ``edgetune.adapter_format``'s.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from edgetune.adapter_format import WEIGHTS_FILE, read_header, save_adapter_arrays
from edgetune.atomic import atomic_dir
from edgetune.config import to_dict
from edgetune.errors import EdgetuneError, UsageError
from edgetune.export.models.base import TransformerModel
from edgetune.export.peft.apply import apply_method, trainable_names
from edgetune.export.peft.base import METHODS, Method

PREFIX = "base_model.model."
TASK_TYPES = {"classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM"}  # PEFT's TaskType, by our task
# Prompt-learning methods in PEFT hold the transformers model directly as ``base_model``.
PROMPT_LEARNING_PREFIX = "base_model."


def _hf_config(model: TransformerModel, method: str, cfg) -> dict:
    spec = METHODS.get(method)
    base = {
        "peft_type": spec.hf_peft_type or f"EDGETUNE_{method.upper()}",
        "task_type": TASK_TYPES.get(model.task) if model.family != "vit" else None,
        "base_model_name_or_path": None,
        "inference_mode": True,
        "modules_to_save": list(model.head_names),
    }
    if spec.hf_config is not None:
        base.update(spec.hf_config(model, cfg))
    return base


def adapter_layout(model: TransformerModel) -> dict[str, list[str]]:
    """On-disk key → the parameter names concatenated (along dim 1) to make it: the method's own
    keys, then every other trained parameter under its path. Written into bundles so the device
    can save adapters in this format without torch."""
    spec = METHODS.get(model.peft_method)
    out: dict[str, list[str]] = dict(spec.adapter_keys(model)) if spec.adapter_keys else {}
    taken = {n for parts in out.values() for n in parts}
    prefix = _key_prefix(spec)
    for n in trainable_names(model):
        if n not in taken:
            out[prefix + n.replace(".base_layer.", ".")] = [n]
    return out


def adapter_state(model: TransformerModel) -> dict[str, torch.Tensor]:
    """The trainable tensors under their on-disk keys."""
    params = dict(model.named_parameters())
    return {key: torch.cat([params[n].detach() for n in parts], dim=1).contiguous().clone()
            if len(parts) > 1 else params[parts[0]].detach().contiguous().clone()
            for key, parts in adapter_layout(model).items()}


def hf_adapter_config(model: TransformerModel) -> dict:
    """``adapter_config.json``'s content for the model's method."""
    return _hf_config(model, model.peft_method, model.peft_config)


def save_adapter(model: TransformerModel, folder: str | Path, overwrite: bool = False) -> Path:
    """Write the two files into ``folder`` atomically (a temporary folder, then a rename)."""
    method = getattr(model, "peft_method", None)
    if method is None:
        raise UsageError("model has no PEFT method to save (apply_method first)")
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        tensors = {k: v.cpu().numpy() for k, v in adapter_state(model).items()}
        save_adapter_arrays(tensors, hf_adapter_config(model),
                            {"name": method, "config": to_dict(model.peft_config)}, model.family, tmp)
    return Path(folder)


def read_adapter(folder: str | Path) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(method, config dict, tensors) of a saved adapter folder."""
    method, cfg = read_header(folder)
    return method, cfg, load_file(str(Path(folder) / WEIGHTS_FILE))


def load_adapter(model: TransformerModel, folder: str | Path) -> TransformerModel:
    """Apply the saved method to a fresh ``model`` (if not applied yet) and load its tensors."""
    method, cfg, tensors = read_adapter(folder)
    if getattr(model, "peft_method", None) is None:
        apply_method(model, method, cfg)
    elif model.peft_method != method:
        raise UsageError(f"{folder} holds a {method!r} adapter; the model has {model.peft_method!r}")
    expected = adapter_state(model)
    if set(expected) != set(tensors):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise EdgetuneError(f"{folder}: adapter does not fit this model (missing {missing[:3]}, "
                            f"unexpected {extra[:3]})")
    params, layout = dict(model.named_parameters()), adapter_layout(model)
    with torch.no_grad():
        for key, value in tensors.items():
            if expected[key].shape != value.shape:
                raise EdgetuneError(f"{folder}: {key} has shape {tuple(value.shape)}, "
                                    f"the model needs {tuple(expected[key].shape)}")
            parts = layout[key]  # undo adapter_state's concatenation along dim 1
            pieces = value.split([params[n].shape[1] for n in parts], dim=1) if len(parts) > 1 else [value]
            for name, piece in zip(parts, pieces):
                params[name].copy_(piece)
    return model


def _key_prefix(spec: Method) -> str:
    return PROMPT_LEARNING_PREFIX if spec.prompt_learning else PREFIX
