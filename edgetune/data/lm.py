"""Language-model data: JSONL (or CSV/TSV) rows of ``text``, or ``prompt`` + ``completion``,
tokenized once on load into next-token targets.

For a row of ids x_0 … x_{n−1} (the tokenizer's own specials, e.g. a BOS, then the text, then
EOS), position t learns x_{t+1}: ``labels[t] = x_{t+1}`` for t < n − 1, and −100
(:data:`~edgetune.targets.IGNORE`) at the last position, on padding, and wherever
x_{t+1} belongs to the prompt. Batches are padded (right) to their longest row; causal
attention never lets a real token see the padding after it, so no attention mask is needed.
Packed (``LMSpec.pack``, text rows): the texts' tokens run on across rows of ``max_length``,
no padding at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.data.base import Dataset
from edgetune.data.errors import DataError, check_file
from edgetune.data.spec import LMSpec
from edgetune.data.tables import Table, read_table
from edgetune.data.tokenizer import load_tokenizer
from edgetune.targets import IGNORE


class LMDataset(Dataset):
    """Ids and shifted labels as N×max_length matrices plus lengths; a batch is cut to its
    longest row. ``labels`` (N, max_length); ``targets`` counts the learned tokens."""

    input_names = ("input_ids",)

    def __init__(self, path: Path, ids: np.ndarray, labels: np.ndarray, lengths: np.ndarray,
                 pad_id: int):
        self.path, self.ids, self.labels, self.lengths = Path(path), ids, labels, lengths
        self.pad_id = pad_id

    def _labels(self, idx: np.ndarray, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(self.labels[idx, :inputs["input_ids"].shape[1]])

    def _inputs(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        width = int(self.lengths[idx].max()) if idx.size else 0
        return {"input_ids": np.ascontiguousarray(self.ids[idx, :width])}

    @property
    def targets(self) -> int:
        return int((self.labels != IGNORE).sum())


def _strings(table: Table, column: str, what: str) -> list[str]:
    values = table.values(column, what)
    for value, line in zip(values, table.lines):
        if not isinstance(value, str):
            raise DataError(table.path, f"line {line}: {what} {column!r} is {value!r}, not a string")
    return values


def _packed(rows: list[list[int]], length: int) -> list[tuple[list[int], int]]:
    """Rows of ``length`` tokens from the texts' ids concatenated (the last one shorter); the
    first token of each row is learned from nothing, as any row's: rows overlap by one token,
    so every token but the very first is a target once."""
    ids = [i for row in rows for i in row]
    step = length - 1
    return [(ids[lo:lo + length], 1) for lo in range(0, max(1, len(ids) - 1), step)]


def load_lm(path: str | Path, spec: LMSpec) -> LMDataset:
    """Read, check and tokenize ``path``: every row a ``text``, or every row a ``prompt`` and a
    ``completion`` (one kind per file)."""
    path = Path(path)
    check_file(path)
    table = read_table(path)
    has_text = spec.text_column in table.columns
    has_pair = spec.prompt_column in table.columns and spec.completion_column in table.columns
    if not has_text and not has_pair:
        raise DataError(path, f"no {spec.text_column!r} column, nor {spec.prompt_column!r} + "
                              f"{spec.completion_column!r} (columns: {', '.join(table.columns)})")
    tok, pad_id = load_tokenizer(spec.tokenizer_path, spec.max_length)
    tok.no_truncation()  # cut here, after the EOS and with the prompt kept whole
    eos = [] if spec.eos_id is None else [spec.eos_id]
    rows: list[tuple[list[int], int]] = []  # (ids, index of the first learned id)
    prompts_given = has_pair and not has_text
    if prompts_given:
        if spec.pack:
            raise DataError(path, "pack applies to text rows; prompt + completion rows stay one a row")
        prompts = _strings(table, spec.prompt_column, "prompt")
        completions = _strings(table, spec.completion_column, "completion")
        for line, completion in zip(table.lines, completions):
            if not completion.strip():
                raise DataError(path, f"line {line}: empty completion {spec.completion_column!r}")
        head = tok.encode_batch(prompts)
        tail = tok.encode_batch(completions, add_special_tokens=False)
        rows = [(p.ids + c.ids + eos, len(p.ids)) for p, c in zip(head, tail)]
    else:
        texts = _strings(table, spec.text_column, "text")
        for line, text in zip(table.lines, texts):
            if not text.strip():
                raise DataError(path, f"line {line}: empty text in column {spec.text_column!r}")
        rows = [(e.ids + eos, 1) for e in tok.encode_batch(texts)]
        if spec.pack:
            rows = _packed([r for r, _ in rows], spec.max_length)
    n, width = len(rows), min(spec.max_length, max(len(r) for r, _ in rows))
    ids = np.full((n, width), pad_id, dtype=np.int64)
    labels = np.full((n, width), IGNORE, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    places = ([f"packed row {i + 1}" for i in range(n)] if spec.pack and not prompts_given
              else [f"line {line}" for line in table.lines])  # packed rows outnumber the lines
    for i, ((row, first), place) in enumerate(zip(rows, places)):
        row = row[:spec.max_length]
        if first >= len(row) and first > 1:
            raise DataError(path, f"{place}: the prompt's {first} tokens fill max_length="
                                  f"{spec.max_length}; no completion token is left to learn")
        if len(row) < 2:
            raise DataError(path, f"{place}: {len(row)} token; a row needs 2 (one to learn)")
        k = len(row)
        ids[i, :k] = row
        labels[i, max(first, 1) - 1:k - 1] = row[max(first, 1):k]
        lengths[i] = k
    ds = LMDataset(path, ids, labels, lengths, pad_id)
    cut = 0 if spec.pack else sum(1 for row, _ in rows if len(row) > spec.max_length)
    if cut:
        ds.notes = (f"{cut} of {n} rows are longer than {spec.max_length} tokens (the bundle's "
                    f"--max-tokens); each is cut to its first {spec.max_length}"
                    + ("" if prompts_given else " (--pack keeps them)"),)
    return ds
