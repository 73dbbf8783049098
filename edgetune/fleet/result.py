"""A fleet's aggregate as a model: what ``edgetune eval FLEET`` and ``edgetune merge FLEET``
read (the last aggregated round, or ``server_round``), with the bundle ``fleet.json`` names.

A fleet validates nothing on its clients' behalf, so its model keeps every token (an ALaST
fleet's clients each trained at their own budgets; no one budget is the fleet's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgetune.bundle import Bundle
from edgetune.errors import UsageError
from edgetune.fleet.folder import FleetFolder
from edgetune.merge import write_merged
from edgetune.train.evaluate import evaluate_state
from edgetune.train.inference_tokens import ALL, TokenChoice

WHY = "a fleet's aggregate: no validation chose its tokens"


def _check_tokens(tokens: str) -> None:
    if tokens not in ("run", ALL):
        raise UsageError(f"--tokens {tokens}: a fleet's aggregate has no trained budgets; use all (or run)")


def _round(folder: FleetFolder, server_round: int | None) -> int:
    last = folder.last_round()
    n = last if server_round is None else server_round
    if not 1 <= n <= last:
        raise UsageError(f"round {n}: {folder.path} holds rounds 1..{last}")
    return n


def evaluate_fleet(path: str | Path, data: str | Path, batch_size: int = 32, threads: int = 0,
                   text_column: str = "text", label_column: str = "label", tokens: str = "run",
                   server_round: int | None = None, bundle: str | Path | None = None) -> dict:
    """``evaluate_path``'s result for the aggregate of ``server_round`` (default: the last)."""
    _check_tokens(tokens)
    folder = FleetFolder(path)
    n = _round(folder, server_round)
    b = Bundle.open(bundle if bundle is not None else folder.bundle_path())
    res = evaluate_state(b, folder.arrays(n), data, batch_size, threads, folder.label_names(),
                         text_column, label_column)
    return {"source": f"{path} (round {n} aggregate)", **res, "tokens": ALL, "budgets": None,
            "keep": None, "keep_tokens": int(b.manifest["tokens"]),
            "choice": TokenChoice(ALL, reason=WHY).to_dict()}


def merge_fleet(path: str | Path, out: str | Path | None = None, overwrite: bool = False,
                bundle: str | Path | None = None, log: Callable[[str], None] | None = None,
                tokens: str = "run", server_round: int | None = None, int8: bool = False) -> Path:
    """``merge_run``'s output (default ``FLEET/merged``) for the aggregate of ``server_round``."""
    _check_tokens(tokens)
    say = log or (lambda msg: None)
    folder = FleetFolder(path)
    n = _round(folder, server_round)
    out = Path(out) if out is not None else folder.path / "merged"
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    b = Bundle.open(bundle if bundle is not None else folder.bundle_path())
    say(f"reading the round {n} aggregate")
    return write_merged(b, folder.arrays(n), out, overwrite, None, ALL,
                        {"run": str(folder.path.resolve()), "checkpoint": f"round-{n}", "step": None,
                         "mode": None, "labels": folder.label_names()}, say, where=f"round {n}",
                        int8=int8)
