"""Run checkpoints that survive a kill, or a full disk, at any instant.

Each checkpoint is a folder ``checkpoints/step-<N>/`` made atomically (built under a temporary
name, then renamed); ``checkpoints/last.json`` and ``best.json`` point at one and are replaced
atomically too. A kill leaves either the old pointer or the new one, never a torn checkpoint;
a write that fails (a full disk) removes what it had written and raises :class:`DiskFullError`
naming the checkpoint still intact.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgetune.atomic import atomic_dir, atomic_write_text, remove_temporaries
from edgetune.bundle import MODES
from edgetune.errors import DiskFullError, EdgetuneError, UsageError, is_disk_full
from edgetune.jsonfile import read_json

STATE = "state.json"


class CheckpointStore:
    def __init__(self, run_dir: Path):
        self.run = run_dir
        self.dir = run_dir / "checkpoints"

    def save(self, step: int, write: Callable[[Path], None], state: dict[str, Any],
             tags: tuple[str, ...] = ("last",), revision: int = 0) -> Path:
        """Checkpoint ``step`` as ``step-<N>`` (``step-<N>-r<revision>``: the parameters
        changed at that step without a step, ``Trainer.load_trainable_state_dict``), then
        point ``tags`` at it; a folder of that name that a pointer names already holds it."""
        name = folder_name(step, revision)
        target = self.dir / name
        previous = self._pointed("last")
        created = False
        try:
            if target.exists() and name not in self._named():  # a kill's leftover: write anew
                shutil.rmtree(target)
            if not target.exists():
                with atomic_dir(target) as tmp:
                    write(tmp)
                    atomic_write_text(tmp / STATE, json.dumps(state))
                created = True
            for tag in tags:
                self.point(tag, name, step)
        except OSError as e:
            if created and name not in self._named():
                shutil.rmtree(target, ignore_errors=True)
            if not is_disk_full(e):
                raise
            kept = (f"the previous checkpoint ({previous}) is intact" if previous
                    else "there is no earlier checkpoint (a resumed run starts at step 0)")
            raise DiskFullError(f"no space left on device while writing checkpoint {name} in {self.run}; "
                                f"{kept}: free space and rerun with --resume") from None
        self._prune()
        return target

    def point(self, tag: str, name: str, step: int) -> None:
        """Point ``tag`` at the checkpoint folder ``name`` (atomically)."""
        atomic_write_text(self.pointer(tag), json.dumps({"checkpoint": name, "step": step}))

    def forget(self, tag: str) -> None:
        """Remove the ``tag`` pointer (its folder goes with the next save's pruning)."""
        self.pointer(tag).unlink(missing_ok=True)

    def pointer(self, tag: str) -> Path:
        return self.dir / f"{tag}.json"

    def path(self, tag: str) -> Path | None:
        """The checkpoint folder ``tag`` (``last``, ``best``) points at; None if no pointer."""
        name = self._pointed(tag)
        if name is None:
            return None
        folder = self.dir / name
        if not folder.is_dir():
            raise EdgetuneError(f"{self.pointer(tag)}: points at {name}, which is missing")
        return folder

    def find(self, name: str = "best") -> Path | None:
        """The checkpoint folder ``name`` names: ``best`` (falling back to ``last`` where the
        run never validated), ``last``, or a folder (``step-00000030``); None if no pointer."""
        if name in ("best", "last"):
            return self.path(name) or (self.path("last") if name == "best" else None)
        folder = self.dir / name
        if "/" in name or name.startswith(".") or not (folder / STATE).is_file():
            have = sorted(p.name for p in self.dir.glob("step-*") if p.is_dir()) if self.dir.is_dir() else []
            raise UsageError(f"checkpoint={name!r}: {self.run} has no such checkpoint "
                             f"(best, last{''.join(', ' + h for h in have)})")
        return folder

    def state(self, tag: str) -> dict[str, Any] | None:
        folder = self.path(tag)
        return None if folder is None else read_state(folder)

    def _pointed(self, tag: str) -> str | None:
        pointer = self.pointer(tag)
        if not pointer.is_file():
            return None
        data = read_json(pointer)
        name = data.get("checkpoint") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name.startswith("step-") or "/" in name:
            raise EdgetuneError(f"{pointer}: names no checkpoint folder (got {name!r})")
        return name

    def _named(self) -> set[str]:
        return {n for n in (self._pointed(p.stem) for p in self.dir.glob("*.json")) if n}

    def _prune(self) -> None:
        """Keep the checkpoints a pointer names; drop the others and stale temporaries."""
        remove_temporaries(self.dir)
        keep = self._named()
        for p in self.dir.iterdir():
            if p.is_dir() and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)


def folder_name(step: int, revision: int = 0) -> str:
    return f"step-{step:08d}" + (f"-r{revision}" if revision else "")


def revision_of(folder: Path) -> int:
    """The revision in a checkpoint folder's name (0 for ``step-<N>``)."""
    m = re.fullmatch(r"step-\d+-r(\d+)", folder.name)
    return int(m.group(1)) if m else 0


def read_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json``, checked enough to resume from: a one-line error otherwise."""
    path = folder / STATE
    state = read_json(path, "no such file (a checkpoint folder holds one)")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) \
            or state.get("mode") not in MODES:
        raise EdgetuneError(f"{path}: not a checkpoint state (needs an integer step and a mode)")
    return state
