"""The Flower project folder ``flwr run`` submits: a ``pyproject.toml`` whose components are
edgetune's installed apps and whose run config is a :class:`FleetConfig` and a
:class:`ServerConfig` (``flwr run`` only overrides keys the file declares, so every key is
written). No code goes in the folder: the SuperLink and every SuperNode run the apps of the
edgetune they have installed (``pip install 'edgetune[fleet]'``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgetune.atomic import atomic_write_text
from edgetune.fleet.config import FleetConfig, ServerConfig, to_flower

SERVER_APP, CLIENT_APP = "edgetune.fleet.server:app", "edgetune.fleet.client:app"
PYPROJECT = "pyproject.toml"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def write_project(folder: str | Path, fleet: FleetConfig, bundle: str | Path, out: str | Path,
                  val: str | Path | None = None, threads: int = 0) -> Path:
    """``folder/pyproject.toml`` for ``flwr run folder``: the server reads ``bundle`` and writes
    its fleet folder ``out`` (absolute paths: the ServerApp runs in the SuperLink's process
    tree, from another working directory)."""
    server = ServerConfig(bundle=str(Path(bundle).resolve()), out=str(Path(out).resolve()),
                          val=str(Path(val).resolve()) if val else "", threads=threads)
    config = {**to_flower(fleet), **to_flower(server)}
    lines = [
        "# Written by edgetune (edgetune.fleet.project): submit with `flwr run <this folder> <superlink>`.",
        "[build-system]", 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', "",
        "[project]", 'name = "edgetune-fleet"', 'version = "1.0.0"',
        'description = "Federated fine-tuning of an edgetune bundle"', 'license = "Apache-2.0"',
        "dependencies = []", "",
        "[tool.flwr.app]", 'publisher = "edgetune"', "",
        "[tool.flwr.app.components]",
        f"serverapp = {_toml(SERVER_APP)}", f"clientapp = {_toml(CLIENT_APP)}", "",
        "[tool.flwr.app.config]", *(f"{k} = {_toml(v)}" for k, v in config.items()), "",
    ]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / PYPROJECT, "\n".join(lines))
    return folder
