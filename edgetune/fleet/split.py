"""One data file split into a file per client, to try a fleet on one machine or to bench it:
IID (a seeded shuffle, equal shares) or non-IID by label with a Dirichlet prior (Hsu et al.
2019, arXiv 1909.06335): for each class c, shares p_c ~ Dir(α·1_N) of its samples go to the N
clients; a small α gives each client few classes. Draws repeat (seeded) until every client
has at least ``min_size`` samples.

Files: ``.npz`` (``x``, ``y``), ``.jsonl``, ``.csv`` / ``.tsv`` (rows, header kept).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from edgetune.data.errors import DataError
from edgetune.errors import UsageError

TRIES = 200


def split_indices(labels: np.ndarray, clients: int, alpha: float | None, seed: int = 0,
                  min_size: int = 1) -> list[np.ndarray]:
    """Sample indices per client: ``alpha`` None for IID, else Dirichlet(α) per class."""
    if clients < 1:
        raise UsageError(f"clients={clients!r}: must be >= 1")
    if alpha is not None and not alpha > 0:
        raise UsageError(f"alpha={alpha!r}: must be > 0 (or None for an IID split)")
    n = len(labels)
    if n < clients * min_size:
        raise UsageError(f"{n} samples cannot give {clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    if alpha is None:
        return [np.sort(part) for part in np.array_split(rng.permutation(n), clients)]
    classes = np.unique(labels)
    for _ in range(TRIES):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha)))[:-1] * len(idx)).astype(int)
            for i, piece in enumerate(np.split(idx, cuts)):
                parts[i].extend(piece.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise UsageError(f"alpha={alpha}: {TRIES} draws left a client with under {min_size} samples; "
                     "raise alpha or use fewer clients")


def split_file(path: str | Path, clients: int, out: str | Path, alpha: float | None = None,
               seed: int = 0, min_size: int = 1, label_column: str = "label") -> list[Path]:
    """``path`` split into ``out/client-<i><suffix>``, one file per client."""
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise DataError(path, "no such file (a fleet split takes one .npz, .jsonl, .csv or .tsv file)")
    suffix = path.suffix.lower()
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"client-{i}{suffix}" for i in range(clients)]
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
        for file, idx in zip(files, split_indices(y, clients, alpha, seed, min_size)):
            np.savez(file, x=x[idx], y=y[idx])
        return files
    if suffix == ".jsonl":
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        labels = np.array([str(json.loads(r).get(label_column)) for r in rows])
        for file, idx in zip(files, split_indices(labels, clients, alpha, seed, min_size)):
            file.write_text("".join(rows[i] + "\n" for i in idx))
        return files
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        with open(path, newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header, body = next(reader), list(reader)
        if label_column not in header:
            raise DataError(path, f"no column {label_column!r} (columns: {', '.join(header)})")
        col = header.index(label_column)
        labels = np.array([row[col] if col < len(row) else "" for row in body])
        for file, idx in zip(files, split_indices(labels, clients, alpha, seed, min_size)):
            with open(file, "w", newline="") as f:
                writer = csv.writer(f, delimiter=delimiter)
                writer.writerow(header)
                writer.writerows(body[i] for i in idx)
        return files
    raise DataError(path, f"unsupported file type {suffix!r} for a fleet split (.npz, .jsonl, .csv, .tsv)")
