"""The one guard that the device package (``edgetune/``; ``edgetune.export`` lives in
``export/``) stays free of the workstation side. Used by ``test_torch_free.py``; other tests
that need a process where torch cannot be imported take :func:`blocking_env`.

Two halves, because neither sees what the other does:

- :func:`import_every_device_module` imports every module in a fresh process and reports what
  ended up in ``sys.modules``: it catches an eager import, direct or through a library, and a
  module or package that fails to import;
- :func:`workstation_imports` reads every module's source: it catches an import inside a
  function, which only runs on some path of some command.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import edgetune

# Never on a device: the workstation extra.
BLOCKED = ("torch", "onnx")
# Not imported by importing the device package: the workstation extra, and Pillow (only image
# folders need it; edgetune.data.folder imports it when it opens one).
NOT_EAGER = (*BLOCKED, "PIL")
# The workstation commands (models, methods, export) import edgetune.export inside the command.
MAY_IMPORT_EXPORT = {"edgetune.cli"}

ROOT = Path(edgetune.__file__).parent

# Every module found by pkgutil under edgetune/ except edgetune.export, each imported. A package
# that fails to import raises (pkgutil.walk_packages would skip it and its modules, silently).
_IMPORT_ALL = r"""
import importlib, json, pkgutil, sys

import edgetune

OPTIONAL = ("flwr",)  # an extra's package (fleet: Python >= 3.11); absent, its modules can't load
optional = []

def walk(path, prefix):
    for m in pkgutil.iter_modules(path, prefix):
        if m.name == "edgetune.export":
            continue
        try:
            module = importlib.import_module(m.name)
        except ModuleNotFoundError as e:
            if e.name not in OPTIONAL:
                raise
            optional.append(m.name)
            continue
        yield m.name
        if m.ispkg:
            yield from walk(module.__path__, m.name + ".")

names = list(walk(edgetune.__path__, "edgetune."))
loaded = sorted({name.split(".")[0] for name, mod in sys.modules.items() if mod is not None})
print(json.dumps({"names": names, "loaded": loaded, "optional": optional}))
"""


def modules_on_disk(optional: list[str] = ()) -> list[str]:
    """The device package's modules from its files (``edgetune`` itself left out, as pkgutil
    leaves it out): what :func:`import_every_device_module` must find, less the ``optional``
    ones it could not import for want of an extra's package (and the modules inside them)."""
    names = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(("edgetune", *parts))
        if parts and "__pycache__" not in parts \
                and not any(name == o or name.startswith(o + ".") for o in optional):
            names.append(name)
    return sorted(names)


def blocking_env(folder: Path) -> dict[str, str]:
    """The environment of a process where ``import torch`` and ``import onnx`` fail, as on a
    device: packages of those names on PYTHONPATH that raise ModuleNotFoundError."""
    for name in BLOCKED:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n')
    return {**os.environ, "PYTHONPATH": str(folder)}


def import_every_device_module(env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Import every device module in a fresh process: ``{"names": modules imported, in pkgutil's
    order, "loaded": top-level names in its sys.modules afterwards}``. Fails on any import error."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_ALL], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def workstation_imports() -> list[str]:
    """``module:line name`` for every import statement in the device package's source, at any
    depth, of torch, onnx (not onnxruntime) or edgetune.export (outside the commands that need it)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(("edgetune", *(parts[:-1] if parts[-1] == "__init__" else parts)))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                export = name == "edgetune.export" or name.startswith("edgetune.export.")
                if top in BLOCKED or (export and module not in MAY_IMPORT_EXPORT):
                    found.append(f"{module}:{node.lineno} {name}")
    return found
