"""A record of finished bench rows that outlives the work folder: one JSON per row (trained and
tested), reused by a later run of the same command, on the same runtime, on any machine.

A long bench (bench/methods.py's ViT rows: hours) spans sessions whose work folders do not
survive; committing the record carries the finished rows over. A row is reused only when its
``edgetune train`` arguments, its python and the digest of the device runtime's sources
(``edgetune/**/*.py``) all match, so a change to the runtime measures again. Each row keeps
the machine it ran on (CPU, date, the float32 matmul peak of that run): accuracy carries over
between machines, times do not, and the tables say when their rows come from several.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from common import json_default

ROOT = Path(__file__).resolve().parents[1]


def runtime_digest() -> str:
    """sha256 (12 hex) over the device runtime's sources, path and bytes, in path order."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "edgetune").rglob("*.py")):
        h.update(f.relative_to(ROOT).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def path_of(folder: Path, task: str, key: str) -> Path:
    return folder / task / f"{key}.json"


def load(folder: Path | None, task: str, key: str, args: list[str], python: str) -> dict | None:
    """The recorded row for ``key`` if it was measured with these arguments, this python and
    this runtime; else None."""
    if folder is None:
        return None
    p = path_of(folder, task, key)
    if not p.is_file():
        return None
    row = json.loads(p.read_text())
    if row.get("args") == args and row.get("python") == python and row.get("runtime") == runtime_digest():
        return row
    return None


def _loss_only(series: dict | None) -> dict | None:
    """The per-step series a record keeps: the loss (the loss plot), to 4 significant digits;
    the rest (step times, RSS, budgets: about 0.6 MB a ViT row) stays in the run folder."""
    if not series or series.get("loss") is None:
        return None
    return {"loss": [None if v is None else float(f"{v:.4g}") for v in series["loss"]]}


def save(folder: Path | None, task: str, key: str, row: dict, machine: dict) -> None:
    """Record a finished row (tested, no error), stamped with the runtime digest and, unless it
    has one, ``machine``; its series thinned to the loss; written whole (a temporary file, then
    a rename)."""
    if folder is None or "error" in row or row.get("test_accuracy") is None:
        return
    p = path_of(folder, task, key)
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = {**row, "runtime": runtime_digest(), "machine": row.get("machine") or machine,
           "series": _loss_only(row.get("series"))}
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, default=json_default))
    tmp.replace(p)
