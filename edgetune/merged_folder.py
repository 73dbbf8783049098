"""Reading a merged folder (``edgetune merge``'s output, layout in edgetune/merge.py): its
``merged.json`` and an inference model in it on a plain ``onnxruntime.InferenceSession``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgetune.errors import EdgetuneError, UsageError

MERGED_JSON = "merged.json"


def holds_one(path: str | Path) -> bool:
    """Whether ``path`` is a merged folder or an ``.onnx`` file in one."""
    path = Path(path)
    folder = path.parent if path.suffix == ".onnx" else path
    return (folder / MERGED_JSON).is_file()


class MergedModel:
    """One classifier of a merged folder (``inference.onnx``, or the file named) run as it is:
    the token budgets a run chose are inside the graph."""

    num_layers = 0  # the graph keeps its own tokens: nothing to ask of evaluate_engine

    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        from edgetune.runtime.ort_env import session_options

        path = Path(path)
        self.folder = path.parent if path.suffix == ".onnx" else path
        self.info = json.loads((self.folder / MERGED_JSON).read_text())
        inference = self.info["inference"]
        if "decoder" in inference:
            raise UsageError(f"{self.folder}: a language model's merged folder; use edgetune "
                             f"generate (eval takes its run folder)")
        self.file = path if path.suffix == ".onnx" else self.folder / inference["file"]
        if not self.file.is_file():
            raise EdgetuneError(f"{self.file}: no such model file")
        self.inputs = list(inference["inputs"])
        self.session = ort.InferenceSession(str(self.file), session_options(threads),
                                            providers=["CPUExecutionProvider"])

    @property
    def bundle_path(self) -> Path:
        path = Path(self.info["bundle"])
        if not path.is_dir():  # its preprocessing and labels live there
            raise EdgetuneError(f"{self.folder}: its bundle {path} is gone")
        return path

    def predict(self, batch: dict[str, np.ndarray], keep=None) -> np.ndarray:
        """Logits of a batch (the data loader's dict: the model's inputs by name)."""
        return self.session.run(None, {n: batch[n] for n in self.inputs})[0]
