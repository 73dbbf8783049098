"""Rows from ``.csv`` / ``.tsv`` / ``.jsonl`` files, each with the line it came from."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgetune.data.errors import DataError


@dataclasses.dataclass
class Table:
    path: Path
    columns: list[str]           # the header (csv) or the first record's keys (jsonl)
    rows: list[dict[str, Any]]
    lines: list[int]             # 1-based line number of each row

    def column(self, candidates: Sequence[str], what: str) -> str:
        """The first of ``candidates`` that is a column, else an error listing the columns."""
        for name in candidates:
            if name in self.columns:
                return name
        have = ", ".join(self.columns) or "none"
        if len(candidates) == 1:
            raise DataError(self.path, f"no {what} column {candidates[0]!r} (columns: {have})")
        raise DataError(self.path, f"no {what} column: tried {', '.join(candidates)} "
                                   f"(columns: {have})")

    def values(self, name: str, what: str) -> list[Any]:
        out = []
        for row, line in zip(self.rows, self.lines):
            if name not in row:
                raise DataError(self.path, f"line {line}: no {what} {name!r} "
                                           f"(keys: {', '.join(row) or 'none'})")
            out.append(row[name])
        return out


def _decode_error(path: Path, e: UnicodeDecodeError) -> DataError:
    return DataError(path, f"not UTF-8 text (bad byte at offset {e.start})")


def read_csv(path: Path, delimiter: str = ",") -> Table:
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            while header is not None and not any(h.strip() for h in header):
                header = next(reader, None)  # blank lines before the header
            if header is None:
                raise DataError(path, "empty file")
            header = [h.strip() for h in header]
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise DataError(path, f"header repeats column(s) {', '.join(map(repr, dup))}")
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue
                if len(record) != len(header):
                    raise DataError(path, f"line {reader.line_num}: {len(record)} fields, "
                                          f"the header has {len(header)}")
                rows.append(dict(zip(header, record)))
                lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(path, f"line {reader.line_num}: malformed CSV ({e})") from None
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None
    if not rows:
        raise DataError(path, "no rows (only a header)")
    return Table(path, header, rows, lines)


def read_jsonl(path: Path) -> Table:
    rows, lines = [], []
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(path, f"line {number}: not valid JSON ({e.msg} at column "
                                          f"{e.colno})") from None
                if not isinstance(record, dict):
                    raise DataError(path, f"line {number}: expected a JSON object "
                                          f"{{\"text\": ..., \"label\": ...}}, got "
                                          f"{type(record).__name__}")
                rows.append(record)
                lines.append(number)
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None
    if not rows:
        raise DataError(path, "empty file")
    return Table(path, list(rows[0]), rows, lines)


def read_table(path: Path) -> Table:
    """By suffix: ``.csv``, ``.tsv`` (tab-separated) or ``.jsonl``."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    return read_csv(path, "\t" if suffix == ".tsv" else ",")
