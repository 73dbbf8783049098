"""The process's ONNX Runtime environment: one CPU arena shared by every session, with an
optional byte limit, and the session options and providers every engine uses (set here,
nowhere else).

One arena for all sessions: a per-session arena keeps its own high-water mark, so a process
with one session per block would hold the sum of every graph's peak; a shared one holds the
step's peak. Its limit (``max_mem``) is the RAM cap's backstop: an allocation past it fails
inside ``run`` (:func:`is_out_of_memory`), the step is dropped and retried with a smaller plan,
and the process never grows past the limit. ORT registers one shared arena per process, so
the first call fixes the limit; later calls get what is there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from edgetune.errors import EdgetuneError
from edgetune.runtime.ort_build import onnxruntime as ort_module

_ARENA: dict[str, Any] | None = None   # {"ok": bool} once registered


class ArenaFull(EdgetuneError):
    """A graph asked the shared arena for more than its limit allows; nothing was updated."""


def use_shared_arena(max_bytes: int | None = None) -> bool:
    """Register the shared CPU arena (once per process) with ``max_bytes`` as its limit (None:
    unlimited). True if sessions can share it; a second call changes nothing."""
    global _ARENA
    if _ARENA is None:
        onnxruntime = ort_module()

        cfg: dict[str, int] = {"arena_extend_strategy": 1}  # kSameAsRequested: no doubling
        if max_bytes is not None:
            cfg["max_mem"] = max(1, int(max_bytes))
        try:
            info = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR,
                                             0, onnxruntime.OrtMemType.DEFAULT)
            onnxruntime.create_and_register_allocator(info, onnxruntime.OrtArenaCfg(cfg))
            _ARENA = {"ok": True}
        except Exception:  # noqa: BLE001 - per-session arenas still work, only bigger
            _ARENA = {"ok": False}
    return bool(_ARENA["ok"])


def arena_registered() -> bool:
    return _ARENA is not None


def session_options(threads: int = 0, fixed_shapes: bool = True):
    """Options for every session: ``threads`` intra-op threads (0: ORT's default), idle workers
    sleep instead of spinning (with one session per block, a finished session's spinning
    workers would steal the cores from the next one), the shared arena.

    ``fixed_shapes=False`` (the adaptive engine: ALaST's keep counts give its graphs a new
    shape most steps) turns ORT's memory pattern off. The pattern plans one block per input
    shape, and the arena keeps every block it ever handed out: an ALaST + LoRA run on a
    197-token ViT reached 2448 MB with it and 1137 MB without, and ran no slower.
    """
    onnxruntime = ort_module()

    # fatal only: ORT logs a refused allocation as an error before raising it, and the RAM
    # cap's backstop recovers from those (ArenaFull); every error still reaches us raised
    onnxruntime.set_default_logger_severity(4)
    opts = onnxruntime.SessionOptions()
    opts.log_severity_level = 4
    opts.enable_mem_pattern = fixed_shapes
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    if use_shared_arena():
        opts.add_session_config_entry("session.use_env_allocators", "1")
    return opts


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is ORT refusing an allocation (the arena's limit, or the system's)."""
    text = str(exc)
    return ("Available memory of" in text and "smaller than requested" in text) or "bad_alloc" in text \
        or "Failed to allocate memory" in text


@contextlib.contextmanager
def arena_errors(what: str, cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """Turn ORT refusing an allocation inside the block into :class:`ArenaFull` naming
    ``what`` (after ``cleanup``); any other error passes through."""
    try:
        yield
    except ArenaFull:
        raise
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        if not is_out_of_memory(e):
            raise
        if cleanup is not None:
            cleanup()
        lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        raise ArenaFull(f"{what}: {lines[-1][-160:]}") from None
