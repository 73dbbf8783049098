"""Load pretrained weights from files on disk (safetensors only; nothing is downloaded).

``load_weights`` copies matching tensors into a model and names what it skipped: the task head
when its class count differs (fine-tuning to a new task), keys the model has no use for. A
checkpoint is one ``model.safetensors`` or Hugging Face's shards (``model.safetensors.index.json``
mapping each tensor to its file); ``checkpoint_file`` finds which a folder holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from edgetune.errors import EdgetuneError
from edgetune.jsonfile import read_json

SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"

# Keys in real checkpoints that carry no weights for us.
_IGNORED_SUFFIXES = ("position_ids",)
# Task heads are replaced when the class count differs.
_HEAD_PREFIXES = ("head.", "classifier.")


def checkpoint_file(folder: Path) -> Path:
    """The folder's ``model.safetensors``, else its shard index."""
    if (folder / SINGLE).is_file() or not (folder / INDEX).is_file():
        return folder / SINGLE
    return folder / INDEX


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, or of the shards a ``*.index.json`` names."""
    if not file.is_file():
        raise EdgetuneError(f"{file}: no such checkpoint file")
    files = [file]
    if file.name.endswith(".index.json"):
        weight_map = read_json(file).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise EdgetuneError(f"{file}: no weight_map (not a safetensors shard index)")
        files = [file.parent / name for name in sorted(set(weight_map.values()))]
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise EdgetuneError(f"{file}: names the shard {f.name}, which is missing")
        try:
            tensors.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error types
            raise EdgetuneError(f"{f}: not a readable safetensors file ({e})") from None
    return tensors


def load_weights(model: nn.Module, file: str | Path, key_prefix: str = "",
                 resize: Callable[[str, torch.Tensor, torch.Size], torch.Tensor | None] | None = None,
                 tied: dict[str, str] | None = None,
                 convert: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> list[str]:
    """Copy the tensors of safetensors ``file`` into ``model``; returns the keys left as
    initialised (a new head). ``key_prefix`` is put in front of checkpoint keys that lack it
    (a bare ``BertModel`` checkpoint loaded into ``bert.*``). Raises on missing or mis-shaped
    backbone weights. ``resize(name, value, shape)``: a tensor of ``shape`` for a checkpoint
    tensor of another shape (a position embedding at another resolution), or None. ``tied``:
    a parameter the model shares with another (``lm_head.weight`` → ``model.embed_tokens.weight``)
    counts as loaded with it (a tied checkpoint stores one of the two). ``convert(name, value)``:
    every tensor as the model stores it (GPT-2's Conv1D weights transposed), before any check."""
    file = Path(file)
    tensors = read_tensors(file)
    own = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        name = key if key in own or not key_prefix else key_prefix + key
        if name not in own:
            continue  # e.g. a masked-LM head in a pretraining checkpoint
        if convert is not None:
            value = convert(name, value)
        if own[name].shape != value.shape and resize is not None:
            resized = resize(name, value, own[name].shape)
            value = resized if resized is not None else value
        if own[name].shape != value.shape:
            if name.startswith(_HEAD_PREFIXES):
                continue
            raise EdgetuneError(
                f"{file}: tensor {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(own[name].shape)}: the checkpoint is for a different configuration")
        loaded[name] = value.to(own[name].dtype)
    for name, source in (tied or {}).items():
        if name not in loaded and source in loaded:
            loaded[name] = loaded[source]
    left = [k for k in own if k not in loaded]
    backbone_missing = [k for k in left if not k.startswith(_HEAD_PREFIXES + ("bert.pooler.",))]
    if backbone_missing:
        shown = ", ".join(backbone_missing[:5])
        raise EdgetuneError(f"{file}: missing {len(backbone_missing)} weights the model needs ({shown}…)")
    model.load_state_dict(loaded, strict=False)
    return left
