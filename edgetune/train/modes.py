"""The engine a run opens: a bundle mode names its class (what each can do, and which mode a
run picks where none is named: edgetune/engine_caps.py), :func:`resolve` settles the mode and
the execution provider of a run (the CLI's ``train`` and :class:`~edgetune.train.Trainer`)."""

from __future__ import annotations

from collections.abc import Sequence

from edgetune.bundle import Bundle
from edgetune.engine_caps import MODE_CAPS, check_available, check_request, mode_caps, pick_mode
from edgetune.errors import UsageError
from edgetune.optim_config import AdamWConfig
from edgetune.runtime.ort_build import check_provider
from edgetune.runtime.placement import HOST, Placement
from edgetune.train.engines import AdaptiveEngine, Engine, EngineClass, StaticEngine

ENGINES: dict[str, EngineClass] = {"adaptive": AdaptiveEngine, "static": StaticEngine}
assert list(ENGINES) == list(MODE_CAPS) and all(c.caps is MODE_CAPS[m] for m, c in ENGINES.items())


def engine_class(mode: str) -> EngineClass:
    mode_caps(mode)  # a known mode, or the error naming them
    return ENGINES[mode]


def open_engine(bundle: Bundle, mode: str, threads: int = 0, optim: AdamWConfig | None = None,
                placement: Placement = HOST) -> Engine:
    check_available(mode, placement.provider)
    return engine_class(mode)(bundle.mode_dir(mode), bundle.index(mode), threads, optim, placement)


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
