"""Which engine a run uses: a bundle mode names one, :func:`pick_mode` picks one where none is
named (the CLI's ``train`` and ``plan``, :class:`~edgetune.train.Trainer`, ``eval`` of a
bundle ask here), and :func:`check_request` refuses what the engine cannot do."""

from __future__ import annotations

from typing import Sequence

from edgetune.bundle import Bundle
from edgetune.errors import UsageError
from edgetune.train.engines import AdaptiveEngine, Engine, EngineCaps, StaticEngine
from edgetune.train.optim import AdamWConfig

ENGINES: dict[str, type] = {"static": StaticEngine, "adaptive": AdaptiveEngine}  # fastest first


def engine_class(mode: str) -> type:
    if mode not in ENGINES:
        raise UsageError(f"mode={mode!r}: must be one of {', '.join(ENGINES)}")
    return ENGINES[mode]


def open_engine(bundle: Bundle, mode: str, threads: int = 0, optim: AdamWConfig | None = None) -> Engine:
    return engine_class(mode)(bundle.mode_dir(mode), bundle.index(mode), threads, optim)


def follows(caps: EngineCaps, schedule: str) -> bool:
    """Whether an engine can run ``schedule`` (ALaST freezes layers and drops tokens per step)."""
    return schedule != "alast" or (caps.freeze_per_step and caps.drop_tokens)


def pick_mode(schedule: str, bundle_modes: Sequence[str], ram_capped: bool) -> str:
    """The bundle mode a run uses when none is named: the fastest exported engine that can run
    ``schedule``; under a RAM cap one whose plans can freeze layers and whose checkpoints
    stream, where exported. Where the bundle has none that can, the most capable (the bundle's
    mode check then names what to re-export)."""
    able = [m for m, cls in ENGINES.items() if follows(cls.caps, schedule)]
    have = [m for m in able if m in bundle_modes]
    frugal = [m for m in have if ENGINES[m].caps.freeze_per_step and ENGINES[m].caps.streams_checkpoint]
    return (frugal if ram_capped and frugal else have or able[-1:])[0]


def check_request(mode: str, schedule: str, weight_decay: float, where: str = "TrainConfig") -> None:
    """:class:`UsageError` where the ``mode``'s engine cannot run the schedule or the decay."""
    caps = engine_class(mode).caps
    if not follows(caps, schedule):
        able = " or ".join(m for m, cls in ENGINES.items() if follows(cls.caps, schedule))
        raise UsageError(f"{where}.mode={mode!r}: ALaST needs the {able} mode (its engine freezes "
                         f"layers per step; the {mode} engine trains every layer)")
    if weight_decay and not caps.weight_decay:
        able = " or ".join(repr(m) for m, cls in ENGINES.items() if cls.caps.weight_decay)
        raise UsageError(f"{where}.weight_decay={weight_decay}: {mode} mode runs ORT's AdamW graph, "
                         f"exported with weight decay 0; use mode={able}")
