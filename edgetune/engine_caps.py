"""What each engine (a bundle mode) can do, declared once, and the mode a run picks where none
is named (the CLI's ``train`` and ``plan``, :class:`~edgetune.train.Trainer`, ``eval`` of a
bundle); :func:`check_request` refuses what an engine cannot do. The engines themselves live in
edgetune/train/engines.py (their classes by mode: edgetune/train/modes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgetune.caps.cost_model import EngineMemory
from edgetune.errors import UsageError
from edgetune.runtime.ort_build import build_name, has_training_api


@dataclass(frozen=True)
class EngineCaps:
    """What an engine can do (its class holds its mode's :data:`MODE_CAPS` entry)."""

    freeze_per_step: bool     # train some layers only in a step (ALaST, the RAM cap's plans)
    drop_tokens: bool         # keep fewer tokens per layer
    weight_decay: bool        # AdamW's decoupled weight decay
    streams_checkpoint: bool  # checkpoints written a tensor at a time, not the whole state at once
    ort_state: bool           # parameters, gradients and AdamW moments live in ORT's training state
    lazy_sessions: bool       # sessions open on first use, not with the engine
    training_api: bool = False            # needs ORT's training API (the training build)
    providers: tuple[str, ...] = ("cpu",)  # execution providers it runs on (ort_build.PROVIDERS)

    @property
    def memory(self) -> EngineMemory:
        """What the cost model needs of it."""
        return EngineMemory(ort_state=self.ort_state, streams_checkpoint=self.streams_checkpoint,
                            freeze_per_step=self.freeze_per_step)


# preferred first: the adaptive engine, on every build. On ORT's training build too it runs the
# every-layer step faster and leaner than ORT's own artifacts (minilm-l6, batch 32 × 64: LoRA
# 0.627 vs 0.733 s at 456 vs 675 MiB, full 0.958 vs 1.047 s at 781 vs 1024 MiB; docs/peers.md),
# so static mode runs only where named (--mode static) or the only one exported.
MODE_CAPS: dict[str, EngineCaps] = {
    "adaptive": EngineCaps(freeze_per_step=True, drop_tokens=True, weight_decay=True,
                           streams_checkpoint=True, ort_state=False, lazy_sessions=True,
                           providers=("cpu", "cuda")),
    "static": EngineCaps(freeze_per_step=False, drop_tokens=True, weight_decay=False,
                         streams_checkpoint=False, ort_state=True, lazy_sessions=False,
                         training_api=True),
}


def mode_caps(mode: str) -> EngineCaps:
    if mode not in MODE_CAPS:
        raise UsageError(f"mode={mode!r}: must be one of {', '.join(MODE_CAPS)}")
    return MODE_CAPS[mode]


def follows(caps: EngineCaps, schedule: str) -> bool:
    """Whether an engine can run ``schedule`` (ALaST freezes layers and drops tokens per step)."""
    return schedule != "alast" or (caps.freeze_per_step and caps.drop_tokens)


def available(caps: EngineCaps, provider: str = "cpu") -> bool:
    """Whether this environment runs the engine: its ORT build (the training API where the
    engine needs it) and the execution provider."""
    return (has_training_api() or not caps.training_api) and provider in caps.providers


def check_available(mode: str, provider: str = "cpu") -> None:
    caps = mode_caps(mode)
    if caps.training_api and not has_training_api():
        raise UsageError(f"mode={mode!r}: the {mode} engine runs ORT's training API, which this "
                         f"onnxruntime ({build_name()}) does not have; use mode "
                         "'adaptive' (with --schedule static it trains every layer and token "
                         'too), or install "edgetune[training]" (x86-64, Python <= 3.12)')
    if provider not in caps.providers:
        able = [m for m, c in MODE_CAPS.items() if provider in c.providers]
        raise UsageError(f"provider={provider!r}: the {mode} engine runs on "
                         f"{', '.join(caps.providers)}; use mode {' or '.join(map(repr, able))}")


def pick_mode(schedule: str, bundle_modes: Sequence[str], ram_capped: bool,
              provider: str = "cpu", weight_decay: float = 0.0) -> str:
    """The bundle mode a run uses when none is named: the first of :data:`MODE_CAPS` (the
    adaptive engine) that the bundle holds, this environment runs (:func:`available`) and can
    run ``schedule`` (and ``weight_decay``, when asked for); under a RAM cap one whose plans can
    freeze layers and whose checkpoints stream, where exported. Where the bundle has none that
    can, the most capable (the bundle's mode check then names what to re-export)."""
    able = [m for m, c in MODE_CAPS.items()
            if follows(c, schedule) and available(c, provider) and (c.weight_decay or not weight_decay)]
    able = able or [m for m, c in MODE_CAPS.items() if follows(c, schedule)]
    have = [m for m in able if m in bundle_modes]
    frugal = [m for m in have if MODE_CAPS[m].freeze_per_step and MODE_CAPS[m].streams_checkpoint]
    return (frugal if ram_capped and frugal else have or able[:1])[0]


def check_request(mode: str, schedule: str, weight_decay: float, where: str = "TrainConfig") -> None:
    """:class:`UsageError` where the ``mode``'s engine cannot run the schedule or the decay."""
    caps = mode_caps(mode)
    if not follows(caps, schedule):
        able = " or ".join(m for m, c in MODE_CAPS.items() if follows(c, schedule))
        raise UsageError(f"{where}.mode={mode!r}: ALaST needs the {able} mode (its engine freezes "
                         f"layers per step; the {mode} engine trains every layer)")
    if weight_decay and not caps.weight_decay:
        able = " or ".join(repr(m) for m, c in MODE_CAPS.items() if c.weight_decay)
        raise UsageError(f"{where}.weight_decay={weight_decay}: {mode} mode runs ORT's AdamW graph, "
                         f"exported with weight decay 0; use mode={able}")
