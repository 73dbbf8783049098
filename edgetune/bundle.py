"""A bundle on disk: ``manifest.json`` + one folder per execution mode, checked by sha256.

    bundle/
      manifest.json        model, method, inputs, per-layer costs, modes, sha256 of every file
      tokenizer.json       text models
      static/              ORT's artifacts (graphs.json + training/eval/optimizer + checkpoint)
      adaptive/            per-block graphs (graphs.json + <part>/<variant>.onnx + params)
      inference/           inference.onnx (the plain model, parameters at known offsets) and the
                           recipe ``edgetune merge`` follows to write a run's values into it
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgetune.errors import EdgetuneError, UsageError
from edgetune.jsonfile import read_json

# ---- layout: the one place the bundle format's names live (exporter and runtime import them)
MANIFEST = "manifest.json"
FORMAT = "edgetune-bundle/1"          # manifest.json's "format"
MODES = ("static", "adaptive")        # each mode's folder is named after it
INFERENCE_DIR = "inference"
INFERENCE_MODEL = "inference.onnx"     # the plain model in it, parameters at known offsets
INT8_INFERENCE_MODEL = "inference.int8.onnx"  # its int8 twin (--base int8 bundles)
TOKEN_BUDGETS = "token_budgets"        # its (L,) float32 tensor: keep ⌈b_l·N⌉ tokens (1: every token)
TOKENIZER_FILE = "tokenizer.json"
INDEX_FILE = "graphs.json"            # in every mode folder and inference/
INDEX_FORMAT = "edgetune-graphs/1"    # its "format"
# what a bundle's frozen base may be stored as (``export --base``; export/onnx/quantize.py)
BASE_DTYPES = ("fp32", "int8")
# An adaptive variant's graphs that save for backward what its plain ones recompute there:
# ``forward_<variant>_store`` / ``backward_<variant>_store`` (saved under "<variant>_store").
STORE = "_store"
PARAMS_FILE = "params.safetensors"    # adaptive: every parameter, fp32
WEIGHTS_FILE = "weights.bin"          # adaptive, per part: its graphs' large constants (int8 base)
STATIC_FILES = {"training": "training_model.onnx", "eval": "eval_model.onnx",  # ORT's artifacts
                "optimizer": "optimizer_model.onnx", "checkpoint": "checkpoint"}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_tree(folder: Path, skip: tuple[str, ...] = (MANIFEST,)) -> dict[str, str]:
    """sha256 of every file below ``folder`` by relative path (sorted)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def drops_tokens(manifest: dict[str, Any]) -> bool:
    """A classifier's tokens may be dropped (ALaST); a language model's never: each position is
    a next-token target that later positions attend to."""
    return manifest["model"].get("task", "classification") != "causal_lm"


class Bundle:
    """An exported bundle. ``Bundle.open`` verifies every file's sha256 unless told not to."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        path = Path(path)
        file = path / MANIFEST
        if not path.is_dir():
            raise EdgetuneError(f"{path}: no such bundle folder")
        if not file.is_file():
            raise EdgetuneError(f"{path}: no {MANIFEST} (not an edgetune bundle?)")
        manifest = read_json(file, fmt=FORMAT)
        bundle = cls(path, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Every listed file present with its sha256, and no file missing from the list."""
        expected: dict[str, str] = self.manifest.get("files", {})
        for rel, digest in expected.items():
            p = self.path / rel
            if not p.is_file():
                raise EdgetuneError(f"{self.path}: bundle file {rel} is missing")
            if sha256_file(p) != digest:
                raise EdgetuneError(f"{self.path}: bundle file {rel} is corrupt (sha256 mismatch)")

    @property
    def sha256(self) -> str:
        """The bundle's identity: sha256 of its manifest, which holds every file's sha256."""
        return sha256_file(self.path / MANIFEST)

    # ---- what the runtime reads ----------------------------------------------------------
    @property
    def modes(self) -> list[str]:
        return list(self.manifest["modes"])

    def mode_dir(self, mode: str) -> Path:
        if mode not in self.modes:
            raise EdgetuneError(f"{self.path}: has no {mode!r} mode (exported: {', '.join(self.modes)}); "
                                f"re-export with --mode {mode} or both")
        return self.path / mode

    def index(self, mode: str) -> dict[str, Any]:
        return json.loads((self.mode_dir(mode) / INDEX_FILE).read_text())

    @property
    def num_layers(self) -> int:
        return int(self.manifest["model"]["num_layers"])

    @property
    def drops_tokens(self) -> bool:
        """Whether ALaST may drop tokens (a classifier); a language model keeps them all."""
        return drops_tokens(self.manifest)

    @property
    def task(self) -> str:
        """``classification`` (encoders) or ``causal_lm`` (a decoder that writes)."""
        return str(self.manifest["model"].get("task", "classification"))

    @property
    def is_lm(self) -> bool:
        return self.task == "causal_lm"

    @property
    def num_classes(self) -> int:
        """Classes of a classifier (a language model has none: an error to ask)."""
        n = self.manifest["model"].get("num_classes")
        if n is None:
            raise UsageError(f"{self.path}: a {self.task} bundle has no classes")
        return int(n)

    @property
    def inputs(self) -> dict[str, Any]:
        return self.manifest["inputs"]

    @property
    def kind(self) -> str:
        return self.inputs["kind"]

    @property
    def tokenizer_path(self) -> Path | None:
        rel = self.inputs.get("tokenizer")
        return self.path / rel if rel else None

