"""The RAM cap's backstop: a byte limit on ONNX Runtime's shared arena, set before the first
session exists, so that no step can grow the process past ``--ram-cap`` whatever the cost
model said.

    limit = (1 − safety)·cap − RSS now − S − X − H − C − slack

RSS now: this process with ORT imported and (adaptive) the engine open: parameters and AdamW
moments loaded, no session yet. S: what comes outside the arena still — in static mode, where
ORT's training API must have the arena before it opens, its state (parameters, their
prepacked copies of the frozen weights in the kernels: measured 182 MB for minilm-l6 LoRA,
P = 91 MB; its gradient buffers and AdamW moments come from the arena, which must hold them).
X: the sessions and their first runs outside the arena (kernels, thread pools, scratch),
4 MiB + 0.6 MiB per graph file + 10 × the graph files' bytes + the external weights each
reads (an int8 base's: a session holds its pre-packed copy), counting the files a run may open
(adaptive: a block's saving or recomputing pair, not both), an upper fit of what opening them
all measured (stock onnxruntime 1.32): vit-micro 30 MiB (31 files, 0.81 MiB), minilm-l6 LoRA
61 MiB (87, 1.9 MiB), minilm-l6 LoRA on an int8 base 222 MiB (87, 2.4 MiB, 156 MiB external).
The gradients are not outside: numpy views ORT's outputs without a copy, so they count
against the arena (:func:`arena_state_bytes`). H: the batch and AdamW's temporaries
(cost_model.host_bytes); C: a checkpoint write (cost_model.checkpoint_bytes). The arena then holds
activations and working sets only, and an allocation past its limit fails inside the step
(``ArenaFull``): the trainer drops that step's work and retries it with a smaller plan
(CapPlanner.replan_smaller).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgetune.bundle import Bundle
from edgetune.caps.cost_model import (
    FP32,
    ModelCosts,
    checkpoint_bytes,
    gradient_bytes,
    host_bytes,
    static_bytes,
)
from edgetune.caps.units import MIB, format_bytes
from edgetune.engine_caps import mode_caps
from edgetune.errors import EdgetuneError
from edgetune.runtime.adaptive import graph_files, twins
from edgetune.runtime.ort_build import onnxruntime
from edgetune.runtime.ort_env import arena_registered, use_shared_arena
from edgetune.runtime.sessions import read_index
from edgetune.sensors.memory import process_rss_bytes
from edgetune.sensors.peak import peak_rss_bytes

SESSIONS_FIXED = 4 * MIB      # X = 4 MiB + 0.6 MiB per graph file + 10 × graph bytes + external
SESSION_PER_FILE = 0.6 * MIB
SESSION_PER_BYTE = 10.0
SLACK = 8 * MIB               # Python's own allocations during a run (metrics, the sampler)
MIN_ARENA = 4 * MIB


def graph_bytes(bundle: Bundle, mode: str) -> tuple[int, int, int]:
    """(graph files, their bytes, the external weights they read) of one bundle mode: the
    files a run may open (adaptive: a block's ``_store`` graphs or the plain ones they
    replace, not both)."""
    folder = Path(bundle.mode_dir(mode))
    if mode != "adaptive":
        files = list(folder.rglob("*.onnx"))
        return len(files), sum(f.stat().st_size for f in files), 0
    index = read_index(folder)
    names = graph_files(index)
    external = sum(n for part in index["parts"].values() for twin in twins(part)
                   for f, n in twin.get("external", {}).items() if f in names)
    return len(names), sum((folder / f).stat().st_size for f in names), external


def session_bytes(bundle: Bundle, mode: str) -> float:
    """X: what the sessions of every graph a run may open hold outside the arena (module
    docstring)."""
    n_files, n_bytes, external = graph_bytes(bundle, mode)
    return SESSIONS_FIXED + SESSION_PER_FILE * n_files + SESSION_PER_BYTE * n_bytes + external


def outside_arena(bundle: Bundle, mode: str, batch_size: int, input_bytes_per_sample: float,
                  engine_open: bool) -> float:
    """S + X + H + C + slack: what the run holds outside the arena beyond RSS now (module
    docstring); ``engine_open``: the parameters and moments are in RSS now already."""
    costs, memory = ModelCosts.from_manifest(bundle.manifest), mode_caps(mode).memory
    params, optimizer = static_bytes(costs)
    if memory.ort_state:  # ORT's state: parameters, moments, gradients, and the kernels'
        # prepacked copies of the frozen weights (constants there; trained ones are not packed)
        frozen = FP32 * (costs.total_params - costs.trainable_params)
        state = params + frozen  # its gradient buffers and AdamW moments come from the arena
    else:
        state = 0.0 if engine_open else params + optimizer
    return (state + session_bytes(bundle, mode)
            + host_bytes(costs, batch_size, input_bytes_per_sample, memory)
            + checkpoint_bytes(costs, memory) + SLACK)


def arena_state_bytes(bundle: Bundle, mode: str) -> float:
    """What the engine keeps in the arena: the gradients, G (adaptive: ORT's outputs, which
    numpy views without a copy), and in static mode the AdamW moments, O (ORT's training API
    allocates both there when it opens: minilm-l6 full fine-tuning opened under a 280 MB arena,
    not under 190 MB; G + O = 273 MB)."""
    costs, memory = ModelCosts.from_manifest(bundle.manifest), mode_caps(mode).memory
    grads = gradient_bytes(costs, np.ones(costs.num_layers, bool), memory)
    return grads + (static_bytes(costs)[1] if memory.ort_state else 0.0)


def arena_budget(bundle: Bundle, mode: str, cap_bytes: int, safety: float, batch_size: int,
                 input_bytes_per_sample: float, engine_open: bool = False) -> int:
    """The arena's limit (module docstring), bytes; :class:`EdgetuneError` with the smallest
    cap that could work where less than :data:`MIN_ARENA` is left. Imports ORT first: its
    libraries are a large part of RSS now."""
    onnxruntime()  # imported now: its libraries count in RSS

    if mode_caps(mode).ort_state:
        from edgetune.runtime.ort_training import training_api

        training_api()
    rss_now = float(max(process_rss_bytes(), peak_rss_bytes()))
    outside = outside_arena(bundle, mode, batch_size, input_bytes_per_sample, engine_open)
    budget = (1.0 - safety) * cap_bytes - rss_now - outside
    least = MIN_ARENA + arena_state_bytes(bundle, mode)
    if budget < least:
        need = (rss_now + outside + least) / (1.0 - safety)
        raise EdgetuneError(
            f"--ram-cap {format_bytes(cap_bytes)}: this process holds {format_bytes(rss_now)} and "
            f"the {mode} engine needs about {format_bytes(need - rss_now, True)} more before any "
            f"step, so a cap below --ram-cap {format_bytes(need, True)} cannot work (the plan "
            "itself may need more: `edgetune plan` predicts it)")
    return int(math.floor(budget))


def limit_arena(bundle: Bundle, mode: str, cap_bytes: int, safety: float, batch_size: int,
                input_bytes_per_sample: float, engine_open: bool = False) -> int:
    """Register the shared arena with :func:`arena_budget` as its limit and return it, for the
    planner. Where this process registered its arena earlier (the Python API, a second
    Trainer), that arena's limit stays, and the planner alone keeps plans under this one."""
    budget = arena_budget(bundle, mode, cap_bytes, safety, batch_size, input_bytes_per_sample,
                          engine_open)
    if not arena_registered():
        use_shared_arena(budget)
    return budget
