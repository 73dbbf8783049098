"""One client's round, without Flower: open the device's run, take the global trainable
state, train ``local_steps`` under the device's own profile and caps, hand back the new state
and what it cost. The ClientApp (fleet/client.py) is a thin adapter around this.

A round runs in a fresh process (Flower starts one per message), so what lasts between rounds
lives on disk: the node's run folder ``OUT/<run>/`` holds the Trainer's checkpoints (the
parameters, AdamW's moments, the energy spent so far, the planner's state). A client killed
mid-round resumes from its last checkpoint at the next round it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.bundle import Bundle
from edgetune.caps.limits import Caps
from edgetune.caps.planner import CapPlanner
from edgetune.caps.units import MB
from edgetune.config import from_strings
from edgetune.devices import DeviceProfile, detect_device, get_device
from edgetune.errors import EdgetuneError, UsageError
from edgetune.fleet.config import FleetConfig, NodeConfig
from edgetune.schedule.alast import AlastConfig
from edgetune.train import RunFolder, TrainConfig, Trainer, load_data
from edgetune.train.checkpoint import read_state


@dataclass
class RoundReport:
    """What a client says of its round (the server logs it; ``samples`` weights FedAvg)."""

    steps: int                  # steps this round ran
    samples: int                # samples trained on this round (steps × batch)
    run_steps: int              # the client's steps so far, all rounds
    loss: float                 # the last step's
    seconds: float              # the round's wall time, opening the run included
    joules: float               # this round's (the trainer's own: loading and its steps)
    joules_total: float         # the run's energy so far under an energy cap, else this round's
    peak_rss_mb: float          # this process's high-water mark (VmHWM), decimal MB
    device: str                 # the profile it planned against
    caps: str                   # its caps, in words
    tokens_kept: list[float] = field(default_factory=list)  # per layer, mean over the round
    layers_trained: float = 0.0  # layers trained per step, mean over the round
    micro_batch: int = 0        # the smallest micro-batch a step ran at
    stopped: str = ""           # why the round ran fewer steps than asked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_profile(node: NodeConfig) -> DeviceProfile:
    return get_device(node.device) if node.device else detect_device()


def train_config(fleet: FleetConfig, node: NodeConfig) -> TrainConfig:
    """The client's whole run (every round): the schedule and the energy cap span it."""
    return TrainConfig(steps=fleet.total_steps, batch_size=fleet.batch_size, lr=fleet.lr,
                       warmup=fleet.warmup, schedule=fleet.schedule, seed=fleet.seed,
                       threads=node.threads, alast=from_strings(AlastConfig, fleet.alast_settings()))


def run_folder(node: NodeConfig, run: str) -> Path:
    return Path(node.out) / str(run)


def rewind(folder: Path, server_round: int) -> None:
    """Before round ``server_round``: where this client already trained it (the server
    restarted before aggregating it, and sends it again), point ``last`` back at the checkpoint
    it ended its latest earlier round with (none: back to step 0), so that its step count and
    schedule follow the server's rounds. A client killed mid-round has no tag for that round:
    it goes on from its last checkpoint. The rewound round's energy is not counted again."""
    store = RunFolder(folder).checkpoints
    tags = store.dir.glob("round-*.json") if store.dir.is_dir() else ()
    done = {int(p.stem.split("-")[1]) for p in tags}
    if not any(r >= server_round for r in done):
        return
    earlier = [r for r in done if r < server_round]
    before = store.path(round_tag(max(earlier))) if earlier else None
    if before is None:
        store.forget("last")
    else:
        store.point("last", before.name, read_state(before)["step"])
    for r in done - set(earlier):
        store.forget(round_tag(r))


def mark_round(folder: Path, server_round: int) -> None:
    """After round ``server_round``: tag the checkpoint it ended with (two rounds are kept)."""
    store = RunFolder(folder).checkpoints
    last = store.path("last")
    if last is not None:
        store.point(round_tag(server_round), last.name, read_state(last)["step"])
    store.forget(round_tag(server_round - 2))


def round_tag(server_round: int) -> str:
    return f"round-{server_round}"


def open_trainer(node: NodeConfig, fleet: FleetConfig, bundle_id: str, run: str,
                 server_round: int | None = None) -> Trainer:
    """The node's Trainer for this federation run, resumed from its last checkpoint when it
    has one (rewound to the end of the round before ``server_round``); refuses a bundle that
    is not the server's."""
    bundle = Bundle.open(node.bundle)
    if bundle.sha256 != bundle_id:
        raise UsageError(f"node bundle={node.bundle!r}: bundle id {bundle.sha256[:16]!r}, the "
                         f"server's is {str(bundle_id)[:16]!r}; every client needs the server's bundle")
    data = load_data(bundle, node.data, fleet.label_names())
    folder = run_folder(node, run)
    resume = RunFolder(folder).has_info()
    if resume and server_round is not None:
        rewind(folder, server_round)
    return Trainer(bundle, data, config=train_config(fleet, node), out=folder, resume=resume,
                   caps=node.caps(), device=device_profile(node))


def client_round(node: NodeConfig, fleet: FleetConfig, arrays: Mapping[str, np.ndarray],
                 bundle_id: str, run: str, server_round: int) -> tuple[dict[str, np.ndarray], RoundReport]:
    """Train one round from the global ``arrays``; :class:`EdgetuneError` where no step can run
    (the energy cap is spent, the run is complete): such a client sends nothing to average."""
    import time

    from edgetune.sensors.peak import peak_rss_bytes

    t0 = time.monotonic()
    trainer = open_trainer(node, fleet, bundle_id, run, server_round)
    trainer.load_trainable_state_dict(arrays, reset_optimizer=fleet.reset_optimizer)
    steps: list[dict[str, Any]] = []
    trainer.callbacks.append(steps.append)
    result = trainer.fit(steps=fleet.local_steps)
    if result.steps_run == 0:
        why = result.stopped or f"the run is complete ({trainer.total_steps} steps)"
        raise EdgetuneError(f"no step this round: {why}")
    mark_round(run_folder(node, run), server_round)
    planner = trainer.planner  # under an energy cap, its charge spans the client's every round
    spent = planner.spent_joules if isinstance(planner, CapPlanner) else result.energy_j
    kept = np.mean([s["tokens_kept"] for s in steps], axis=0) if steps else np.zeros(0)
    report = RoundReport(
        steps=result.steps_run, samples=result.steps_run * min(fleet.batch_size, len(trainer.train_data)),
        run_steps=result.steps, loss=float(result.final_loss), seconds=time.monotonic() - t0,
        joules=float(result.energy_j), joules_total=float(spent),
        peak_rss_mb=max(result.peak_rss_mb, peak_rss_bytes() / MB), device=trainer.device.name,
        caps=(trainer.caps or Caps()).describe(), tokens_kept=[float(k) for k in kept],
        layers_trained=float(np.mean([len(s["layers_trained"]) for s in steps])) if steps else 0.0,
        micro_batch=min((int(s["micro_batch"]) for s in steps), default=0),
        stopped=result.stopped or "")
    return trainer.trainable_state_dict(), report


def evaluate_arrays(bundle: Bundle, arrays: Mapping[str, np.ndarray], data: str | Path,
                    fleet: FleetConfig, threads: int = 0) -> dict[str, float]:
    """Loss and accuracy of the trainable state ``arrays`` on ``data`` (every token): the
    server's central evaluation and a client's federated one."""
    ds = load_data(bundle, data, fleet.label_names())
    cfg = TrainConfig(steps=1, batch_size=min(fleet.batch_size, len(ds)), threads=threads)
    trainer = Trainer(bundle, ds, config=cfg)
    trainer.load_trainable_state_dict(arrays)
    if len(ds) == 0:
        raise EdgetuneError(f"{data}: no samples to evaluate")
    return trainer.evaluate(ds, batch_size=32, tokens="all")
