"""The RAM cap's backstop: a byte limit on ONNX Runtime's shared arena, set before the engine
opens, so that no step can grow the process past ``--ram-cap`` whatever the cost model said.

    limit = (1 − safety)·cap − RSS now − S − N − H − C

RSS now: this process before the engine opens (libraries, the data); S: what opening the
engine adds outside the arena (parameters, AdamW moments, static mode's gradient buffers and
prepacked weights, P again: vit-tiny LoRA overshot a limit without it by ~30 MB; and
the sessions, ~0.5 MiB per graph file + their bytes twice, measured 0.45 MiB per graph on
vit-tiny's 123 adaptive graphs); N: numpy's gradient copies (costs.gradient_bytes, every
layer trained); H: the batch and AdamW's temporaries (costs.host_bytes); C: a checkpoint
write (costs.checkpoint_bytes). The arena then holds activations and working sets only, and
an allocation past its limit fails inside the step (``ArenaFull``): the trainer drops that
step's work and retries it with a smaller plan (cap_planner.replan_smaller).
"""

from __future__ import annotations

import math
from pathlib import Path
import numpy as np

from edgetune.bundle import Bundle
from edgetune.errors import EdgetuneError
from edgetune.runtime.ort_env import arena_registered, use_shared_arena
from edgetune.schedule.costs import (
    ModelCosts, checkpoint_bytes, gradient_bytes, host_bytes, static_bytes)
from edgetune.schedule.units import format_bytes
from edgetune.sensors.memory import process_rss_bytes
from edgetune.sensors.peak import peak_rss_bytes

MIB = 1 << 20
SESSION_BYTES = MIB // 2      # per graph file (measured 0.45 MiB)
SLACK = 8 * MIB               # Python's own allocations during a run (metrics, the sampler)
MIN_ARENA = 4 * MIB


def graph_bytes(bundle: Bundle, mode: str) -> tuple[int, int]:
    """(graph files, their bytes) of one bundle mode."""
    folder = bundle.mode_dir(mode)
    files = [f for f in Path(folder).rglob("*.onnx")]
    return len(files), sum(f.stat().st_size for f in files)


def outside_arena(bundle: Bundle, mode: str, batch_size: int, input_bytes_per_sample: float) -> float:
    """S + N + H + C + slack: everything the run holds outside the arena (module docstring)."""
    costs = ModelCosts.from_manifest(bundle.manifest)
    params, optimizer = static_bytes(costs)
    every = np.ones(costs.num_layers, bool)
    n_files, n_bytes = graph_bytes(bundle, mode)
    # static mode: ORT's gradient buffers, and its kernels' prepacked copies of the frozen
    # weights (initializers there; adaptive graphs take every weight as an input)
    state = params + optimizer + (gradient_bytes(costs, every, "static") + params if mode == "static" else 0.0)
    sessions = SESSION_BYTES * n_files + 2 * n_bytes
    grads = gradient_bytes(costs, every, mode) if mode == "adaptive" else 0.0
    return (state + sessions + grads + host_bytes(costs, batch_size, input_bytes_per_sample)
            + checkpoint_bytes(costs, mode) + SLACK)


def limit_arena(bundle: Bundle, mode: str, cap_bytes: int, safety: float,
                batch_size: int, input_bytes_per_sample: float) -> int:
    """Register the shared arena with the limit above and return that limit, bytes, for the
    planner. Where this process registered its arena earlier (the Python API, a second
    Trainer), that arena's limit stays, and the planner alone keeps plans under this one."""
    import onnxruntime  # noqa: F401 - its libraries are a large part of the RSS: in "now"

    if mode == "static":
        from edgetune.runtime.ort_training import training_api

        training_api()
    rss_now = float(max(process_rss_bytes(), peak_rss_bytes()))
    budget = (1.0 - safety) * cap_bytes - rss_now - outside_arena(bundle, mode, batch_size,
                                                                  input_bytes_per_sample)
    if budget < MIN_ARENA:
        need = (rss_now + outside_arena(bundle, mode, batch_size, input_bytes_per_sample)
                + MIN_ARENA) / (1.0 - safety)
        raise EdgetuneError(
            f"--ram-cap {format_bytes(cap_bytes)}: this process holds {format_bytes(rss_now)} and "
            f"the {mode} engine needs about {format_bytes(need - rss_now, True)} more before any "
            f"step; the smallest cap that could work is --ram-cap {format_bytes(need, True)}")
    if not arena_registered():
        use_shared_arena(int(math.floor(budget)))
    return int(math.floor(budget))
