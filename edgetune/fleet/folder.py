"""The server's fleet folder, one owner for its layout:

    OUT/fleet.json          the run's settings and the bundle id (a restart must match them),
                            and the server's bundle path (``edgetune eval`` / ``merge`` open it)
    OUT/rounds/round-N.safetensors   the aggregate after round N (atomic)
    OUT/state.json          {"round": N, "file": ...}: the last aggregated round (atomic)
    OUT/metrics.jsonl       a row per client per round, and one per round (``"client": null``)
    OUT/rounds.png          accuracy, joules and peak RSS per round (fleet/plot.py)

A restarted server resumes after ``state.json``'s round with its arrays.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.atomic import atomic_write_text
from edgetune.errors import EdgetuneError, UsageError
from edgetune.jsonfile import read_json
from edgetune.tensorfile import load_tensors, save_tensors

SETTINGS, STATE, METRICS, PLOT = "fleet.json", "state.json", "metrics.jsonl", "rounds.png"


class FleetFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rounds = self.path / "rounds"
        self.metrics_file = self.path / METRICS
        self.plot_file = self.path / PLOT

    @staticmethod
    def holds_one(path: str | Path) -> bool:
        """Whether ``path`` is a fleet folder with an aggregate (what eval and merge accept)."""
        return (Path(path) / SETTINGS).is_file() and (Path(path) / STATE).is_file()

    def settings(self) -> dict[str, Any]:
        return dict(read_json(self.path / SETTINGS))

    def bundle_path(self) -> Path:
        """The server's bundle, as ``fleet.json`` records it."""
        path = self.settings().get("bundle")
        if not path:
            raise EdgetuneError(f"{self.path / SETTINGS}: names no bundle; pass the bundle's path")
        if not Path(path).is_dir():
            raise EdgetuneError(f"{self.path}: its bundle {path} is gone; pass the bundle's new path")
        return Path(path)

    def label_names(self) -> tuple[str, ...] | None:
        """The class names of string labels the fleet mapped (None: the data's integers)."""
        text = str(self.settings().get("fleet", {}).get("labels", ""))
        names = tuple(s.strip() for s in text.split(",") if s.strip())
        return names or None

    def start(self, settings: Mapping[str, Any], bundle: str | Path | None = None
              ) -> tuple[str, int, dict[str, np.ndarray] | None]:
        """Record ``settings`` (and where the ``bundle`` is) for a new run, with a new fleet
        id, or check them against a restarted one's; the fleet id, the last aggregated round
        and its arrays (0 and None when there is none)."""
        self.path.mkdir(parents=True, exist_ok=True)
        file = self.path / SETTINGS
        if file.is_file():
            old = read_json(file)
            for key in settings:
                if old.get(key) != settings[key]:
                    raise UsageError(f"{self.path} holds a fleet run with other {key} "
                                     f"({_short(old.get(key))} vs {_short(settings[key])}): "
                                     "use another output folder")
            fleet_id = str(old["fleet_id"])
            if bundle is not None and old.get("bundle") != str(Path(bundle).resolve()):
                atomic_write_text(file, json.dumps({**old, "bundle": str(Path(bundle).resolve())}, indent=1))
        else:
            fleet_id = uuid.uuid4().hex[:12]
            where = {"bundle": str(Path(bundle).resolve())} if bundle is not None else {}
            atomic_write_text(file, json.dumps({"fleet_id": fleet_id, **settings, **where}, indent=1))
        if not (self.path / STATE).is_file():
            return fleet_id, 0, None
        done = self.last_round()
        return fleet_id, done, self.arrays(done)

    def save_round(self, server_round: int, arrays: Mapping[str, np.ndarray]) -> Path:
        """The aggregate of ``server_round``, then the pointer to it (each atomic)."""
        self.rounds.mkdir(parents=True, exist_ok=True)
        name = f"round-{server_round:05d}.safetensors"
        tmp = self.rounds / f".{name}.tmp"
        save_tensors(tmp, {k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()})
        tmp.replace(self.rounds / name)
        atomic_write_text(self.path / STATE, json.dumps({"round": server_round, "file": name}))
        return self.rounds / name

    def log(self, row: Mapping[str, Any]) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(dict(row)) + "\n")
            f.flush()

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.is_file():
            raise EdgetuneError(f"{self.path}: no {METRICS} (not a fleet run?)")
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    def last_round(self) -> int:
        state = self.path / STATE
        return int(read_json(state)["round"]) if state.is_file() else 0

    def arrays(self, server_round: int | None = None) -> dict[str, np.ndarray]:
        """The aggregate after ``server_round`` (default: the last)."""
        n = self.last_round() if server_round is None else server_round
        file = self.rounds / f"round-{n:05d}.safetensors"
        if not file.is_file():
            raise EdgetuneError(f"{self.path}: no aggregate of round {n}")
        return load_tensors(file)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 60 else text[:57] + "..."
