"""What ``run.json`` says (a run's bundle, data and settings), and the check that ``--resume``
repeats it; the file itself is :class:`~edgetune.train.run_folder.RunFolder`'s.

A resumed run continues the same trajectory only with the same bundle, data and training
settings, so :func:`check_resume` refuses any difference, naming the field and both values.
What may change on resume: threads, checkpoint and validation frequency, the progress bar,
the device profile.
"""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from edgetune.bundle import Bundle
from edgetune.errors import UsageError

# TrainConfig fields a resumed run must repeat (alast's only under schedule="alast")
RESUMED_CONFIG = ("batch_size", "seed", "schedule", "steps", "epochs", "lr", "warmup", "weight_decay",
                  "lr_auto", "pad_multiple")


def data_fingerprint(data: Any) -> dict[str, Any] | None:
    """Path, size in bytes and sample count of a dataset's file (or folder): cheap to take,
    and they change when the data does."""
    if data is None:
        return None
    path = getattr(data, "path", None)
    return {"path": str(Path(path).resolve()) if path is not None else None,
            "bytes": _size(Path(path)) if path is not None else None, "samples": len(data)}


def run_info(bundle: Bundle, config: Any, train_data: Any, val_data: Any, total_steps: int,
             caps: Any = None) -> dict[str, Any]:
    """The content of ``run.json`` (``config.mode`` picked already)."""
    return {"bundle": str(bundle.path.resolve()), "bundle_sha256": _manifest_sha256(bundle),
            "config": _jsonable(config), "mode": config.mode,
            "model": bundle.manifest["model"]["name"], "method": bundle.manifest["method"]["name"],
            "data": data_fingerprint(train_data), "val": data_fingerprint(val_data),
            "train_size": len(train_data), "total_steps": total_steps,
            "caps": caps.to_dict() if caps is not None and caps.any else None,
            "labels": list(getattr(train_data, "label_names", None) or []) or None,
            "data_notes": {k: list(getattr(d, "notes", ()))
                           for k, d in (("data", train_data), ("val", val_data))
                           if getattr(d, "notes", ())} or None}


def check_resume(recorded: dict[str, Any], current: dict[str, Any], where: Path | str) -> None:
    """Raise :class:`UsageError` naming every setting where ``current`` differs from ``recorded``
    (fields absent from an older ``run.json`` are not compared)."""
    diffs = []
    old_sha, new_sha = recorded.get("bundle_sha256"), current.get("bundle_sha256")
    if old_sha and new_sha and old_sha != new_sha:
        diffs.append((f"bundle={recorded.get('bundle')} (manifest sha256 {old_sha[:12]})",
                      f"bundle={current.get('bundle')} (manifest sha256 {new_sha[:12]})"))
    old, new = _resumed(recorded), _resumed(current)
    for key, value in new.items():
        if key in old and old[key] != value:
            diffs.append((f"{key}={_show(old[key])}", f"{key}={_show(value)}"))
    if diffs:
        said = "; ".join(f"{a}, this run {b}" for a, b in diffs)
        raise UsageError(f"--resume: {where} has {said}; resume with the run's settings, "
                         "or drop --resume and train into another --out")


def _resumed(info: dict[str, Any]) -> dict[str, Any]:
    """The settings a resume must repeat, flattened to ``name -> value``."""
    cfg = info.get("config") or {}
    out = {k: cfg[k] for k in RESUMED_CONFIG if k in cfg}
    if "mode" in info:
        out["mode"] = info["mode"]
    if cfg.get("schedule") == "alast":
        out.update({f"alast.{k}": v for k, v in (cfg.get("alast") or {}).items()})
    for name in ("data", "val"):
        if name in info:
            fp = info[name] or {}
            out[name] = fp.get("path")
            out.update({f"{name}.{k}": fp[k] for k in ("bytes", "samples") if k in fp})
    if "caps" in info:
        caps = info["caps"] or {}
        for key, flag in (("ram_bytes", "ram_cap"), ("energy_joules", "energy_cap"),
                          ("power_watts", "power_cap")):
            out[flag] = caps.get(key)
    return out


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def _size(path: Path) -> int | None:
    """Bytes of a file, or of every file below a folder."""
    try:
        if path.is_dir():
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)
        return path.stat().st_size
    except OSError:
        return None


def _manifest_sha256(bundle: Bundle) -> str | None:
    try:
        return bundle.sha256
    except OSError:
        return None


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return list(obj)
    return obj
