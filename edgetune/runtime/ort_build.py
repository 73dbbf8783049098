"""Which ONNX Runtime build this environment has, and what it can do (the one owner).

Three builds install the same ``onnxruntime`` module, so an environment holds exactly one:

- ``onnxruntime`` (stock, ``pip install "edgetune[cpu]"``): Linux x86-64 and aarch64, every
  supported Python; runs every adaptive graph (the bundle's graphs are standard ONNX).
- ``onnxruntime-gpu`` (``edgetune[cuda]``): the same, plus the CUDA execution provider.
- ``onnxruntime-training-cpu`` 1.19.2 (``edgetune[training]``; x86-64, Python ≤ 3.12, no longer
  released): adds ORT's training API, which static mode's artifacts need.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from types import ModuleType

from edgetune.errors import UsageError

INSTALL = ('install one ONNX Runtime build: pip install "edgetune[cpu]" (stock, any Linux CPU), '
           '"edgetune[cuda]" (NVIDIA GPUs) or "edgetune[training]" (ORT\'s training API, x86-64, '
           'Python <= 3.12)')
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_DISTRIBUTIONS = ("onnxruntime-training-cpu", "onnxruntime-training", "onnxruntime-gpu",
                  "onnxruntime")


def onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a :class:`UsageError` saying how to install one."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError(f"no ONNX Runtime in this environment: {INSTALL}") from None
    return ort


@cache
def distribution() -> str:
    """The installed build's distribution name ('' when none is installed)."""
    from importlib import metadata

    for name in _DISTRIBUTIONS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    return ""


@cache
def has_training_api() -> bool:
    """Whether ORT's on-device training API (static mode) is importable: the training build."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    return importlib.util.find_spec("onnxruntime.training") is not None


def build_name() -> str:
    """The installed build and its version, e.g. 'onnxruntime 1.32.0'."""
    return f"{distribution() or 'onnxruntime'} {onnxruntime().__version__}"


def available_providers() -> list[str]:
    """Short names (:data:`PROVIDERS`) of the execution providers this build offers."""
    names = set(onnxruntime().get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in names]


def check_provider(provider: str) -> str:
    """``provider`` if this build runs it, else a :class:`UsageError` saying what to install."""
    if provider not in PROVIDERS:
        raise UsageError(f"provider={provider!r}: must be one of {', '.join(PROVIDERS)}")
    have = available_providers()
    if provider not in have:
        hint = ('pip install "edgetune[cuda]" in an environment without another onnxruntime, on '
                'a machine with an NVIDIA driver' if provider == "cuda" else INSTALL)
        raise UsageError(f"provider={provider!r}: this onnxruntime ({build_name()}) "
                         f"offers {', '.join(have) or 'none'}; {hint}")
    return provider


def describe() -> str:
    """One line for ``edgetune devices``: the build, its version, providers, training API."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime: not installed; " + INSTALL
    api = "with" if has_training_api() else "without"
    return (f"onnxruntime: {build_name()}, providers "
            f"{', '.join(available_providers())}, {api} the training API (static mode)")


# MatMulNBits with 8-bit weights (an int8 base's gradient products) runs from onnxruntime 1.22
INT8_BASE_MIN = (1, 22)


def runs_int8_base() -> bool:
    """Whether this onnxruntime runs an int8 base's graphs."""
    version = onnxruntime().__version__
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) >= INT8_BASE_MIN


def check_int8_base(where: str) -> None:
    """Refuse an int8-base bundle on an onnxruntime that cannot run its graphs."""
    if not runs_int8_base():
        need = ".".join(map(str, INT8_BASE_MIN))
        raise UsageError(f"{where}: exported with --base int8, which needs onnxruntime >= {need} "
                         f"(8-bit MatMulNBits); this is {build_name()}. Install stock onnxruntime "
                         f">= {need}, or export with --base fp32")
