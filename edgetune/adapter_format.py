"""An adapter folder: Hugging Face PEFT's two files, and edgetune's safetensors header (torch-free).

    adapter/
      adapter_config.json          PEFT's config (the bundle manifest's ``adapter.config``)
      adapter_model.safetensors    on-disk key → tensor; the header names the edgetune method,
                                   its config and the model family

Written by ``edgetune merge`` (numpy) and ``edgetune.export.peft.save_adapter`` (torch); the
header lets ``load_adapter`` rebuild the model from the folder alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.errors import EdgetuneError

CONFIG_FILE = "adapter_config.json"       # the names Hugging Face PEFT reads
WEIGHTS_FILE = "adapter_model.safetensors"
METHOD_KEY, CONFIG_KEY, FAMILY_KEY = "edgetune_method", "edgetune_config", "edgetune_family"


def save_adapter_arrays(tensors: dict[str, np.ndarray], hf_config: dict, method: dict, family: str,
                        folder: Path) -> None:
    """The two files; ``method``: ``{"name", "config"}`` as the bundle manifest holds it."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", METHOD_KEY: method["name"],
            CONFIG_KEY: json.dumps(method.get("config", {})), FAMILY_KEY: family}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata=meta)
    (folder / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2))


def read_header(folder: str | Path) -> tuple[str, dict[str, Any]]:
    """(edgetune method, its config) from a saved adapter folder's safetensors header."""
    from safetensors import safe_open

    file = Path(folder) / WEIGHTS_FILE
    if not file.is_file():
        raise EdgetuneError(f"{folder}: no {WEIGHTS_FILE}")
    with safe_open(str(file), "np") as f:
        meta = f.metadata() or {}
    if METHOD_KEY not in meta:
        raise EdgetuneError(f"{file}: not written by edgetune (no {METHOD_KEY} in its header)")
    return meta[METHOD_KEY], json.loads(meta[CONFIG_KEY])
