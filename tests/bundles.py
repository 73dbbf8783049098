"""Micro bundles for the device-side tests, exported once and cached on disk.

The suite runs twice (``make test``): with the workstation venv (torch, onnx, the training
build), which exports, and with a device venv (stock onnxruntime, no torch), which cannot. A
bundle exported by the first run is kept under ``build/test-bundles/`` (or
``$EDGETUNE_TEST_BUNDLES``), keyed by its export arguments and a hash of the exporter's
sources, so the second run trains the very same files on the other ONNX Runtime build, and a
changed exporter never serves a stale bundle. Without torch and without a cached bundle, the
test that needs it is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("export", "edgetune/bundle.py", "edgetune/adapter_format.py", "edgetune/merge_ops.py")


def cache_dir() -> Path:
    return Path(os.environ.get("EDGETUNE_TEST_BUNDLES", ROOT / "build" / "test-bundles"))


def _sources_digest() -> str:
    h = hashlib.sha256()
    for entry in SOURCES:
        path = ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(f.relative_to(ROOT).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def micro_bundle(model: str, method: str, **kwargs) -> Path:
    """``export_bundle(model, method, ...)``, from the cache when it holds one."""
    # a file argument (the tokenizer) counts by its content: the cache moves between machines
    named = {k: hashlib.sha256(Path(v).read_bytes()).hexdigest() if k == "tokenizer" else v
             for k, v in kwargs.items()}
    key = json.dumps({"model": model, "method": method, **named}, sort_keys=True)
    name = f"{model}-{method}-{hashlib.sha256(key.encode()).hexdigest()[:10]}-{_sources_digest()}"
    folder = cache_dir() / name
    if (folder / "manifest.json").is_file():
        return folder
    if importlib.util.find_spec("torch") is None:
        pytest.skip(f"bundle {model}/{method} not cached in {cache_dir()} and no torch to export "
                    "it: run the workstation suite first (make test does)")
    from edgetune.export import export_bundle

    folder.parent.mkdir(parents=True, exist_ok=True)
    _clear_if_other_toolchain()
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        export_bundle(model, method, tmp / "b", **kwargs)
        try:
            (tmp / "b").rename(folder)
        except OSError:  # another process cached it first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


WORDS = "the a good bad film plot actor scene great dull fine poor story end"


def micro_tokenizer() -> Path:
    """A word-level tokenizer for the micro text bundles, built once into the cache folder
    (named by its words: another word list is another file)."""
    from edgetune.data.tokenizer import build_word_level_tokenizer

    path = cache_dir() / f"micro-tokenizer-{hashlib.sha256(WORDS.encode()).hexdigest()[:10]}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        words = WORDS.split()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        build_word_level_tokenizer([" ".join(words)], tmp)
        tmp.replace(path)
    return path


def _clear_if_other_toolchain() -> None:
    """The exporter's output depends on torch, onnx and the training build too: where the
    workstation's versions differ from those that filled the cache, empty it first."""
    from importlib import metadata

    versions = {}
    for dist in ("torch", "onnx", "onnxruntime-training-cpu"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    stamp = cache_dir() / "toolchain.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == versions:
        return
    for entry in cache_dir().iterdir():
        if entry.is_dir() and not entry.name.startswith(".export-"):
            shutil.rmtree(entry, ignore_errors=True)
    stamp.write_text(json.dumps(versions))
