"""Text classification data from ``.csv`` / ``.tsv`` / ``.jsonl``, tokenized once on load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.data.base import Dataset
from edgetune.data.errors import DataError, check_file
from edgetune.data.labels import to_indices
from edgetune.data.spec import TextSpec
from edgetune.data.tables import read_table
from edgetune.data.tokenizer import load_tokenizer


class TextDataset(Dataset):
    """Token ids kept as one N×max_length matrix plus lengths; each batch is padded (right) to
    its own longest text, so ``input_ids`` and ``attention_mask`` are int64 B×L, L ≤ max_length.
    """

    input_names = ("input_ids", "attention_mask")

    def __init__(self, path: Path, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray,
                 pad_id: int, label_names: tuple[str, ...] | None = None):
        self.path, self.ids, self.lengths, self.labels = Path(path), ids, lengths, labels
        self.pad_id, self.label_names = pad_id, label_names

    def _inputs(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        lengths = self.lengths[idx]
        width = int(lengths.max()) if idx.size else 0
        mask = np.arange(width, dtype=np.int64)[None, :] < lengths[:, None]
        return {"input_ids": np.ascontiguousarray(self.ids[idx, :width]),
                "attention_mask": mask.astype(np.int64)}


def id_matrix(encodings, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids N×longest, padded with ``pad_id``; lengths N) of a tokenizer's encodings."""
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    ids = np.full((len(encodings), int(lengths.max(initial=0))), pad_id, dtype=np.int64)
    for row, enc in enumerate(encodings):
        ids[row, :len(enc.ids)] = enc.ids
    return ids, lengths


def _texts(table, column: str) -> list[str]:
    texts = table.values(column, "text")
    for text, line in zip(texts, table.lines):
        if not isinstance(text, str):
            raise DataError(table.path, f"line {line}: text {column!r} is {text!r}, not a string")
        if not text.strip():
            raise DataError(table.path, f"line {line}: empty text in column {column!r}")
    return texts


def load_text(path: str | Path, spec: TextSpec) -> TextDataset:
    """Read, check and tokenize ``path`` with ``spec.tokenizer_path``."""
    path = Path(path)
    check_file(path)
    table = read_table(path)
    text_col = table.column(spec.text_columns(), "text")
    label_col = table.column(spec.label_columns(), "label")
    texts = _texts(table, text_col)
    raw = table.values(label_col, "label")
    labels, names = to_indices(raw, path, lambda i: f"line {table.lines[i]}", spec.num_classes,
                               spec.labels)
    tok, pad_id = load_tokenizer(spec.tokenizer_path, spec.max_length)
    encodings = tok.encode_batch(texts)
    ids, lengths = id_matrix(encodings, pad_id)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        line = table.lines[int(empty[0])]
        raise DataError(path, f"line {line}: text has no tokens for {Path(spec.tokenizer_path).name}")
    ds = TextDataset(path, ids, lengths, labels, pad_id, names)
    cut = sum(1 for e in encodings if e.overflowing)
    if cut:
        ds.notes = (f"{cut} of {len(texts)} texts are longer than {spec.max_length} tokens (the "
                    f"bundle's --max-tokens); each is cut to its first {spec.max_length}",)
    return ds
