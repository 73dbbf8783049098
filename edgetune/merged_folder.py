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

    def classify(self, texts: list[str]) -> list[dict]:
        """Each text's predicted label and class probabilities (softmax of the logits), tokenized
        with the folder's tokenizer at the bundle's ``max_tokens``: ``[{"label", "probability",
        "probabilities"}]``; labels are the run's names where it had them, else class indices."""
        from edgetune.data.text import TextDataset, id_matrix
        from edgetune.data.tokenizer import load_tokenizer

        if self.info.get("tokenizer") is None:
            raise UsageError(f"{self.folder}: an image model; predict takes texts (a text model's "
                             f"merged folder)")
        if not texts or any(not t.strip() for t in texts):
            raise UsageError("predict: give one or more non-empty texts")
        spec = self.info["inference"]["preprocessing"]
        tok, pad_id = load_tokenizer(self.folder / self.info["tokenizer"], int(spec["max_tokens"]))
        ids, lengths = id_matrix(tok.encode_batch(list(texts)), pad_id)
        n = len(texts)  # the data loader's batch: ids and mask as training saw them
        batch = TextDataset(self.folder, ids, lengths, np.zeros(n, np.int64), pad_id).batch(np.arange(n))
        logits = self.predict(batch)
        z = np.exp(logits - logits.max(-1, keepdims=True))
        probs = z / z.sum(-1, keepdims=True)
        known = list(self.info.get("labels") or [])  # the run's names; a class it never saw: its index
        names = known[:probs.shape[1]] + [str(i) for i in range(len(known), probs.shape[1])]
        return [{"label": names[int(p.argmax())], "probability": float(p.max()),
                 "probabilities": {n: float(v) for n, v in zip(names, p)}} for p in probs]
