"""Evaluation: loss and accuracy of an engine on a dataset, every token kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.bundle import MANIFEST, Bundle
from edgetune.data.base import Dataset
from edgetune.errors import EdgetuneError, UsageError
from edgetune.train.engines import Engine
from edgetune.train.inputs import load_data
from edgetune.train.modes import open_engine, pick_mode
from edgetune.train.run_folder import RUN_INFO, RunFolder


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def token_count(batch: dict[str, np.ndarray], bundle: Bundle) -> int:
    """Tokens entering the first layer for this batch (prompt tokens included)."""
    if "input_ids" in batch:
        return batch["input_ids"].shape[1] + int(bundle.manifest.get("extra_tokens", 0))
    return int(bundle.manifest["tokens"])


def evaluate_engine(engine: Engine, bundle: Bundle, data: Dataset, batch_size: int = 32) -> dict:
    total_loss, hits, n = 0.0, 0, 0
    for lo in range(0, len(data), batch_size):
        batch = data.batch(np.arange(lo, min(lo + batch_size, len(data))))
        keep = np.full(engine.num_layers, token_count(batch, bundle), np.int64)
        logits = engine.predict(batch, keep)
        labels = batch["labels"]
        total_loss += cross_entropy(logits, labels) * len(labels)
        hits += int((logits.argmax(-1) == labels).sum())
        n += len(labels)
    if n == 0:
        raise UsageError("evaluation data is empty")
    return {"loss": total_loss / n, "accuracy": hits / n, "count": n}


def open_run(run: Path, checkpoint: str = "best", threads: int = 0) -> tuple[Bundle, Engine, dict, Path]:
    """A run's bundle and an engine holding its ``checkpoint`` (best falls back to last)."""
    folder = RunFolder(run)
    info = folder.read_info()
    bundle = Bundle.open(info["bundle"])
    checkpoint_dir = folder.checkpoint(checkpoint)
    if checkpoint_dir is None:
        raise EdgetuneError(f"{run}: no checkpoint yet (the run stopped before its first one)")
    engine = open_engine(bundle, folder.state(checkpoint_dir)["mode"], threads)
    engine.load(checkpoint_dir)
    return bundle, engine, info, checkpoint_dir


def evaluate_path(path: str | Path, data: str | Path, checkpoint: str = "best", batch_size: int = 32,
                  threads: int = 0, text_column: str = "text", label_column: str = "label") -> dict:
    """Evaluate a run folder's checkpoint, or a bundle's initial weights, on the file ``data``."""
    path = Path(path)
    if RunFolder(path).has_info():
        bundle, engine, info, folder = open_run(path, checkpoint, threads)
        labels, source = info.get("labels"), f"{path} ({folder.name})"
    elif (path / MANIFEST).is_file():
        bundle = Bundle.open(path)
        engine = open_engine(bundle, pick_mode("static", bundle.modes, False), threads)
        labels, source = None, f"{path} (initial weights)"
    else:
        raise EdgetuneError(f"{path}: neither a run folder (no {RUN_INFO}) nor a bundle (no {MANIFEST})")
    ds = load_data(bundle, data, tuple(labels) if labels else None, text_column, label_column)
    return {"source": source, **evaluate_engine(engine, bundle, ds, batch_size)}
