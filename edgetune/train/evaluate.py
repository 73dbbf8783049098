"""Evaluation: loss and accuracy of an engine on a dataset, at every token or at an ALaST run's
trained budgets (train/inference_tokens.py decides which by default)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from edgetune import merged_folder
from edgetune.bundle import MANIFEST, Bundle
from edgetune.data.base import Dataset
from edgetune.engine_caps import pick_mode
from edgetune.errors import EdgetuneError, UsageError
from edgetune.targets import IGNORE, targets
from edgetune.targets import hits as count_hits
from edgetune.train.engines import Engine
from edgetune.train.inference_tokens import (
    ALL,
    REQUESTS,
    RUN,
    TRAINED,
    TokenChoice,
    budgets_for,
    keep_for,
)
from edgetune.train.inputs import load_data
from edgetune.train.modes import open_engine
from edgetune.train.run_folder import RUN_INFO, RunFolder


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean of −log softmax(z)[y] over the targets: one per sample (logits (B, C), labels
    (B,)), or a language model's positions with a target (logits (B, N, V), labels (B, N),
    −100 elsewhere)."""
    labels = np.asarray(labels).reshape(-1)
    logits = np.asarray(logits).reshape(labels.size, -1)
    keep = labels != IGNORE
    z = logits[keep] - logits[keep].max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(z)), labels[keep]].mean())


def token_count(batch: dict[str, np.ndarray], bundle: Bundle) -> int:
    """Tokens entering the first layer for this batch (prompt tokens included)."""
    if "input_ids" in batch:
        return batch["input_ids"].shape[1] + int(bundle.manifest.get("extra_tokens", 0))
    return int(bundle.manifest["tokens"])


class Predictor(Protocol):
    """What evaluation needs of a model: an engine, or a merged folder's model."""

    num_layers: int

    def predict(self, batch: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray: ...


def evaluate_engine(engine: Predictor, bundle: Bundle, data: Dataset, batch_size: int = 32,
                    budgets: tuple[float, ...] | None = None,
                    before_batch: Callable[[int], None] | None = None,
                    prepare: Callable[[dict], dict] | None = None) -> dict:
    """Mean loss and accuracy over ``data``'s targets (samples; a language model's target
    tokens, with ``perplexity``); ``budgets``: keep ⌈b_l·N⌉ tokens (None: every token).
    ``before_batch(samples_done)`` runs before each batch after the first (an energy cap's
    check; it raises to stop); ``prepare(batch)`` reshapes each batch first (a run's padding)."""
    total_loss, hits, n = 0.0, 0, 0
    for lo in range(0, len(data), batch_size):
        if before_batch is not None and lo:
            before_batch(lo)
        batch = data.batch(np.arange(lo, min(lo + batch_size, len(data))))
        if prepare is not None:
            batch = prepare(batch)
        keep = keep_for(budgets, token_count(batch, bundle), engine.num_layers)
        logits = engine.predict(batch, keep)
        labels = batch["labels"]
        count = targets(labels)
        total_loss += cross_entropy(logits, labels) * count
        hits += count_hits(logits, labels)
        n += count
    if n == 0:
        raise UsageError("evaluation data is empty")
    out = {"loss": total_loss / n, "accuracy": hits / n, "count": n}
    if bundle.is_lm:  # per target token: perplexity = exp(mean NLL)
        out["perplexity"] = float(np.exp(min(out["loss"], 700.0)))
    return out


def open_run(run: Path, checkpoint: str = "best", threads: int = 0) -> tuple[Bundle, Engine, dict, Path]:
    """A run's bundle, an engine holding its ``checkpoint`` (best falls back to last), run.json
    and the checkpoint folder."""
    folder = RunFolder(run)
    info = folder.read_info()
    bundle = Bundle.open(info["bundle"])
    checkpoint_dir = folder.checkpoint(checkpoint)
    if checkpoint_dir is None:
        raise EdgetuneError(f"{run}: no checkpoint yet (the run stopped before its first one)")
    engine = open_engine(bundle, folder.state(checkpoint_dir)["mode"], threads)
    engine.load(checkpoint_dir)
    return bundle, engine, info, checkpoint_dir


def checkpoint_choice(run: Path, checkpoint_dir: Path) -> TokenChoice:
    """The token choice a checkpoint carries (train/inference_tokens.py)."""
    return TokenChoice.from_state(RunFolder(run).state(checkpoint_dir))


def evaluate_state(bundle: Bundle, arrays: dict[str, np.ndarray], data: str | Path, batch_size: int = 32,
                   threads: int = 0, labels: tuple[str, ...] | None = None, text_column: str = "text",
                   label_column: str = "label") -> dict:
    """Loss and accuracy on ``data`` of the bundle with its trainable parameters set from
    ``arrays`` (name → array, as ``Trainer.trainable_state_dict`` gives), every token."""
    engine = open_engine(bundle, pick_mode("static", bundle.modes, False), threads)
    engine.load_trainable(arrays)
    ds = load_data(bundle, data, labels, text_column, label_column)
    return evaluate_engine(engine, bundle, ds, batch_size, None)


def evaluate_path(path: str | Path, data: str | Path, checkpoint: str = "best", batch_size: int = 32,
                  threads: int = 0, text_column: str = "text", label_column: str = "label",
                  tokens: str = RUN) -> dict:
    """Evaluate a run folder's checkpoint, a bundle's initial weights or a merged folder's model
(:func:`evaluate_merged`) on the file ``data``.

    ``tokens``: ``run`` (what the run chose from its validation), ``all`` or ``trained`` (the
    ALaST budgets the checkpoint was trained with). The result says which (``tokens``), the
    budgets, and the keep counts (``keep``, None for every token) at ``keep_tokens`` tokens,
    the bundle's longest input: a text batch keeps ⌈b·N⌉ of its own padded length N.
    """
    path = Path(path)
    if tokens not in REQUESTS:
        raise UsageError(f"tokens={tokens!r}: must be one of {', '.join(REQUESTS)}")
    if merged_folder.holds_one(path):
        return evaluate_merged(path, data, batch_size, threads, text_column, label_column, tokens)
    is_run = RunFolder(path).has_info()
    if not is_run and (path / MANIFEST).is_file() and tokens == TRAINED:
        raise UsageError(f"{path}: a bundle has no trained budgets; evaluate a run folder")
    if is_run:
        bundle, engine, info, folder = open_run(path, checkpoint, threads)
        labels, source = info.get("labels"), f"{path} ({folder.name})"
        choice = checkpoint_choice(path, folder)
    elif (path / MANIFEST).is_file():
        bundle = Bundle.open(path)
        engine = open_engine(bundle, pick_mode("static", bundle.modes, False), threads)
        labels, source = None, f"{path} (initial weights)"
        choice = TokenChoice(ALL, reason="a bundle's initial weights")
    else:
        raise EdgetuneError(f"{path}: neither a run folder (no {RUN_INFO}) nor a bundle (no {MANIFEST})")
    budgets = budgets_for(choice, tokens)
    ds = load_data(bundle, data, tuple(labels) if labels else None, text_column, label_column)
    n = int(bundle.manifest["tokens"])
    keep = None if budgets is None else keep_for(budgets, n, engine.num_layers).tolist()
    return {"source": source, **evaluate_engine(engine, bundle, ds, batch_size, budgets),
            "data_notes": list(ds.notes),
            "tokens": ALL if budgets is None else TRAINED,
            "budgets": None if budgets is None else list(budgets), "keep": keep, "keep_tokens": n,
            "choice": choice.to_dict()}


def evaluate_merged(path: Path, data: str | Path, batch_size: int = 32, threads: int = 0,
                    text_column: str = "text", label_column: str = "label", tokens: str = RUN) -> dict:
    """A merged folder's ``inference.onnx`` (or the ``.onnx`` file of one named, e.g.
    ``inference.int8.onnx``) on ``data``, as merged: its tokens are the ones merge wrote."""
    model = merged_folder.MergedModel(path, threads)
    info = model.info
    if tokens != RUN and tokens != info.get("tokens", ALL):
        raise UsageError(f"--tokens {tokens}: {model.folder} was merged keeping "
                         f"{info.get('tokens', ALL)} tokens; merge again with --tokens {tokens}")
    bundle = Bundle.open(model.bundle_path)
    labels = info.get("labels")
    ds = load_data(bundle, data, tuple(labels) if labels else None, text_column, label_column)
    budgets = info.get("token_budgets")
    return {"source": f"{model.file} (merged)", **evaluate_engine(model, bundle, ds, batch_size, None),
            "data_notes": list(ds.notes),
            "tokens": info.get("tokens", ALL), "budgets": budgets, "keep": None,
            "keep_tokens": int(bundle.manifest["tokens"]),
            "choice": {"tokens": info.get("tokens", ALL), "budgets": budgets,
                       "reason": "as merged" + (f": {info['tokens_reason']}"
                                                if info.get("tokens_reason") else "")}}
