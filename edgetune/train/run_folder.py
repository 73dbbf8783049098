"""``RunFolder``: a training run on disk, and the one place that knows its layout.

    RUN/
      run.json          what the run was started with (runinfo.py: its content, the resume check)
      metrics.jsonl     one row per step (progress.MetricsLog)
      checkpoints/      step-<N>/ folders, last.json and best.json pointing at them (checkpoint.py)
      .lock             held while a trainer runs (runlock.py)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgetune.atomic import atomic_write_text, remove_temporaries
from edgetune.errors import EdgetuneError, UsageError
from edgetune.jsonfile import read_json
from edgetune.train.checkpoint import CheckpointStore, read_state
from edgetune.train.progress import METRICS, MetricsLog, read_rows
from edgetune.train.runlock import RunLock, check_free

RUN_INFO = "run.json"


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.info_file = self.path / RUN_INFO
        self.metrics_file = self.path / METRICS
        self.checkpoints = CheckpointStore(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # ---- what the run was started with -------------------------------------------------------
    def has_info(self) -> bool:
        return self.info_file.is_file()

    def read_info(self) -> dict[str, Any]:
        """``run.json``; a one-line error where it is missing, torn or not a JSON object."""
        if not self.path.is_dir():
            raise EdgetuneError(f"{self.path}: no such run folder")
        if not self.has_info():
            raise EdgetuneError(f"{self.path}: not a training run (no {RUN_INFO})")
        info = read_json(self.info_file)
        if not isinstance(info, dict):
            raise EdgetuneError(f"{self.info_file}: not a run description (a JSON object)")
        return info

    def write_info(self, info: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.info_file, json.dumps(info, indent=1))

    # ---- refusals before any work ------------------------------------------------------------
    def require_run(self) -> None:
        """Refuse ``--resume`` on a folder that holds no run (a typo in ``--out`` would otherwise
        silently start a new one)."""
        last = self.checkpoints.pointer("last").is_file()
        if not self.has_info() and not last:
            raise UsageError(f"--resume: {self.path} holds no run (no checkpoint); "
                             "drop --resume to start one")
        if not self.has_info():
            raise EdgetuneError(f"--resume: {self.info_file} is missing, so this run's settings "
                                "cannot be checked against the checkpoint's; drop --resume and train "
                                "into another --out")

    def require_fresh(self) -> None:
        """Refuse to start a new run in a folder that holds one (its checkpoints would mix)."""
        if self.checkpoints.dir.exists():
            raise UsageError(f"{self.path} already holds a run: pass --resume to continue it, "
                             "or another --out")

    def check_free(self) -> None:
        """:class:`~edgetune.train.runlock.RunInUseError` if another process trains here."""
        check_free(self.path)

    def lock(self) -> RunLock:
        return RunLock(self.path)

    def remove_temporaries(self) -> None:
        """What a killed run left half-written."""
        remove_temporaries(self.path, (RUN_INFO, METRICS))

    # ---- metrics -----------------------------------------------------------------------------
    def metrics_log(self, resume_step: int | None = None) -> MetricsLog:
        """The log to append to; rows past ``resume_step`` dropped (a new run: none kept)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return MetricsLog(self.metrics_file, resume_step)

    def metrics(self) -> list[dict[str, Any]]:
        """The readable rows of ``metrics.jsonl`` (none where there is no file)."""
        return read_rows(self.metrics_file) if self.metrics_file.is_file() else []

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, name: str = "best") -> Path | None:
        """The checkpoint folder ``name`` names (``best`` falls back to ``last``); None if the
        run has none yet."""
        return self.checkpoints.find(name)

    def state(self, folder: Path) -> dict[str, Any]:
        """A checkpoint folder's ``state.json``, checked."""
        return read_state(folder)
