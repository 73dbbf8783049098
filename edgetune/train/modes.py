"""Which engine a run uses: a bundle mode names one, :func:`pick_mode` picks one where none is
named (the CLI's ``train`` and ``plan``, :class:`~edgetune.train.Trainer`, ``eval`` of a
bundle ask here), and :func:`check_request` refuses what the engine cannot do."""

from __future__ import annotations

from collections.abc import Sequence

from edgetune.bundle import Bundle
from edgetune.errors import UsageError
from edgetune.runtime.ort_build import build_name, check_provider, has_training_api
from edgetune.runtime.placement import HOST, Placement
from edgetune.train.engines import AdaptiveEngine, Engine, EngineCaps, EngineClass, StaticEngine
from edgetune.train.optim import AdamWConfig

ENGINES: dict[str, EngineClass] = {"static": StaticEngine, "adaptive": AdaptiveEngine}  # fastest first


def engine_class(mode: str) -> EngineClass:
    if mode not in ENGINES:
        raise UsageError(f"mode={mode!r}: must be one of {', '.join(ENGINES)}")
    return ENGINES[mode]


def open_engine(bundle: Bundle, mode: str, threads: int = 0, optim: AdamWConfig | None = None,
                placement: Placement = HOST) -> Engine:
    check_available(mode, placement.provider)
    return engine_class(mode)(bundle.mode_dir(mode), bundle.index(mode), threads, optim, placement)


def follows(caps: EngineCaps, schedule: str) -> bool:
    """Whether an engine can run ``schedule`` (ALaST freezes layers and drops tokens per step)."""
    return schedule != "alast" or (caps.freeze_per_step and caps.drop_tokens)


def available(caps: EngineCaps, provider: str = "cpu") -> bool:
    """Whether this environment runs the engine: its ORT build (the training API where the
    engine needs it) and the execution provider."""
    return (has_training_api() or not caps.training_api) and provider in caps.providers


def check_available(mode: str, provider: str = "cpu") -> None:
    caps = engine_class(mode).caps
    if caps.training_api and not has_training_api():
        raise UsageError(f"mode={mode!r}: the {mode} engine runs ORT's training API, which this "
                         f"onnxruntime ({build_name()}) does not have; use mode "
                         "'adaptive' (with --schedule static it trains every layer and token "
                         'too), or install "edgetune[training]" (x86-64, Python <= 3.12)')
    if provider not in caps.providers:
        able = [m for m, cls in ENGINES.items() if provider in cls.caps.providers]
        raise UsageError(f"provider={provider!r}: the {mode} engine runs on "
                         f"{', '.join(caps.providers)}; use mode {' or '.join(map(repr, able))}")


def pick_mode(schedule: str, bundle_modes: Sequence[str], ram_capped: bool,
              provider: str = "cpu", weight_decay: float = 0.0) -> str:
    """The bundle mode a run uses when none is named: the fastest exported engine this
    environment runs (:func:`available`) that can run ``schedule`` (and ``weight_decay``, when
    asked for); under a RAM cap one whose
    plans can freeze layers and whose checkpoints stream, where exported. Where the bundle has
    none that can, the most capable (the bundle's mode check then names what to re-export)."""
    able = [m for m, cls in ENGINES.items()
            if follows(cls.caps, schedule) and available(cls.caps, provider)
            and (cls.caps.weight_decay or not weight_decay)]
    able = able or [m for m, cls in ENGINES.items() if follows(cls.caps, schedule)]
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


def pick_provider(accelerator: str) -> str:
    """The execution provider a run uses when none is named: the device profile's
    ``accelerator`` where this ONNX Runtime build offers it, else the CPU."""
    from edgetune.runtime.ort_build import available_providers

    return accelerator if accelerator in available_providers() else "cpu"


def resolve(schedule: str, bundle_modes: Sequence[str], *, mode: str = "", provider: str = "",
            accelerator: str = "cpu", ram_capped: bool = False,
            weight_decay: float = 0.0) -> tuple[str, str]:
    """(mode, provider) of a run: each as named, else picked (:func:`pick_provider`,
    :func:`pick_mode`), then checked against this environment and the engine (the CLI's
    ``train`` before it loads data, and :class:`~edgetune.train.Trainer`)."""
    provider = check_provider(provider or pick_provider(accelerator))
    if provider != "cpu" and ram_capped:
        raise UsageError(f"--ram-cap with provider={provider!r}: the cap models host memory "
                         "only (parameters, activations and AdamW live on the GPU there); "
                         "drop --ram-cap or use --provider cpu")
    mode = mode or pick_mode(schedule, bundle_modes, ram_capped, provider, weight_decay)
    check_available(mode, provider)
    check_request(mode, schedule, weight_decay)
    return mode, provider
