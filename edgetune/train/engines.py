"""Engines: run one training step of a bundle on ONNX Runtime. One protocol, two engines.

``StaticEngine`` drives ORT's own artifacts (training, eval and optimizer graphs): fastest when
the trainable set never changes, but every layer always runs its full backward.
``AdaptiveEngine`` drives the per-block graphs: a layer frozen for a step runs only its
input-gradient graph, and nothing runs below the lowest trained layer (ALaST).
Both take token keep counts per layer every step. Each class declares what it can do
(:class:`EngineCaps`); a request outside that is a :class:`UsageError`, never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgetune.bundle import PARAMS_FILE  # an adaptive checkpoint holds the trainable ones
from edgetune.engine_caps import MODE_CAPS, EngineCaps
from edgetune.errors import EdgetuneError, UsageError
from edgetune.optim_config import AdamWConfig
from edgetune.runtime.ort_env import ArenaFull, arena_errors, session_options
from edgetune.runtime.ort_training import training_api
from edgetune.runtime.placement import HOST, Placement
from edgetune.targets import hits, targets
from edgetune.tensorfile import load_tensors, save_tensors
from edgetune.train.exchange import checked_state

Batch = dict[str, np.ndarray]
ORT_CHECKPOINT = "ort_checkpoint"          # a static checkpoint: ORT's whole state
OPTIMIZER_FILE = "optimizer.safetensors"   # and the AdamW moments


@dataclass
class StepStats:
    loss: float            # mean over the step's samples
    correct: int           # argmax hits, for running accuracy
    count: int             # targets in the step (samples; a language model's target tokens)
    cls_delta: np.ndarray  # (L,) ALaST importance signal, mean over micro-batches
    cls_norm: np.ndarray | None = None  # (L,) ‖CLS_{l−1}‖², mean over micro-batches (adaptive)


class Engine(Protocol):
    mode: str
    caps: EngineCaps
    num_layers: int
    trainable: list[str]

    def train_step(self, micro_batches: Sequence[Batch], keep: np.ndarray, trained: np.ndarray,
                   lr: float) -> StepStats: ...

    def predict(self, batch: Batch, keep: np.ndarray) -> np.ndarray: ...

    def trainable_arrays(self) -> dict[str, np.ndarray]: ...

    def trainable_shapes(self) -> dict[str, tuple[int, ...]]: ...

    def load_trainable(self, arrays: Mapping[str, np.ndarray], reset_optimizer: bool = False) -> None:
        """Set every trainable parameter (train/exchange.py: the names and shapes
        :meth:`trainable_shapes` gives, checked whole first); the optimizer's moments and step
        counts stay, or restart from zero."""

    def warmup(self, batch: Batch, keep: np.ndarray, trained: np.ndarray | None = None) -> None:
        """Create every session and run one gradient pass on ``batch`` (no update; ``trained``
        layers, default all), so memory measured before step 1 includes what the runtime
        allocates on first use."""

    def recompute_more(self) -> bool:
        """Save less for backward (recompute more in it) on later steps: the RAM cap's first
        lever, before smaller plans; False when nothing is left to recompute."""

    def save(self, folder: Path) -> None: ...

    def load(self, folder: Path) -> None: ...


class EngineClass(Protocol):
    """An engine class itself: what it can do, and how to open one or read a checkpoint
    without one (what :mod:`edgetune.train.modes` looks up by mode)."""

    mode: str
    caps: EngineCaps

    def __call__(self, folder: str | Path, index: dict, threads: int = 0,
                 optim: AdamWConfig | None = None, placement: Placement = HOST) -> Engine: ...

    def read_trained(self, folder: Path) -> dict[str, np.ndarray]: ...


class StaticEngine:
    """ORT's on-device training API over ``generate_artifacts`` output (AdamW inside ORT)."""

    mode = "static"
    caps = MODE_CAPS["static"]

    def __init__(self, folder: str | Path, index: dict, threads: int = 0,
                 optim: AdamWConfig | None = None, placement: Placement = HOST):
        if placement != HOST:
            raise UsageError(f"provider={placement.provider!r}: static mode runs ORT's training "
                             "API on the CPU; use mode='adaptive'")
        if optim is not None and optim.weight_decay:  # the lr is set each step
            raise UsageError(f"weight_decay={optim.weight_decay}: static mode runs ORT's AdamW graph, "
                             "exported with weight decay 0; use mode='adaptive'")
        self.api = training_api()
        self.folder = Path(folder)
        self._files = index["static"]["files"]
        # text batches are padded per batch: a new sequence length is a new shape (ort_env.py)
        self._opts = session_options(threads, fixed_shapes="input_ids" not in index["static"]["inputs"])
        self.trainable = list(index["static"]["trainable"])
        self.num_layers = int(index["model"]["num_layers"])
        state = self.api.CheckpointState.load_checkpoint(str(self.folder / self._files["checkpoint"]))
        self._shapes = {n: tuple(state.parameters[n].data.shape) for n in self.trainable}
        self._build(state)

    def _build(self, state) -> None:
        """ORT's module and optimizer over ``state``; where opening them fails, the engine is
        left as it was."""
        with arena_errors("opening ORT's training graphs"):
            module = self.api.Module(str(self.folder / self._files["training"]), state,
                                     str(self.folder / self._files["eval"]), session_options=self._opts)
            optimizer = self.api.Optimizer(str(self.folder / self._files["optimizer"]), module)
        self.state, self.module, self.optimizer = state, module, optimizer
        self.module.train()
        self._train_inputs = self.module.input_names()
        self.module.eval()
        self._eval_inputs = self.module.input_names()

    def _feeds(self, names: list[str], batch: Batch, keep: np.ndarray) -> list[np.ndarray]:
        values = {**batch, "keep": np.asarray(keep, np.int64)}
        if "labels" not in values:
            values["labels"] = np.zeros(len(next(iter(batch.values()))), np.int64)
        return [values[n] for n in names]

    def train_step(self, micro_batches, keep, trained, lr) -> StepStats:
        _trains_every_layer(trained)
        self.module.train()
        names = self.module.output_names()
        loss, correct, count, deltas = 0.0, 0, 0, []
        for mb in micro_batches:
            # on a refusal, drop what the step accumulated: nothing was updated
            with arena_errors("training graph", cleanup=self.module.lazy_reset_grad):
                outs = dict(zip(names, self.module(*self._feeds(self._train_inputs, mb, keep))))
            n = len(mb["labels"])
            loss += float(outs[names[0]]) * n
            correct += hits(outs["logits"], mb["labels"])
            count += n
            deltas.append(outs["cls_delta"])
        self.optimizer.set_learning_rate(lr)
        try:
            with arena_errors("optimizer"):
                self.optimizer.step()
        except ArenaFull as e:  # an update may be half applied: stop, never retry it
            raise EdgetuneError(f"{e}; the run stops here (its last checkpoint is intact): "
                                "raise --ram-cap") from None
        self.module.lazy_reset_grad()
        return StepStats(loss / count, correct, count, np.mean(deltas, axis=0))

    def recompute_more(self) -> bool:
        return False  # ORT's training artifacts decide what they save

    def warmup(self, batch, keep, trained=None) -> None:
        if trained is not None:
            _trains_every_layer(trained)
        self.module.train()
        try:
            with arena_errors("training graph"):
                self.module(*self._feeds(self._train_inputs, batch, keep))
        finally:
            self.module.lazy_reset_grad()  # the gradients are discarded: nothing is updated

    def predict(self, batch, keep) -> np.ndarray:
        self.module.eval()
        names = self.module.output_names()
        with arena_errors("eval graph"):
            outs = dict(zip(names, self.module(*self._feeds(self._eval_inputs, batch, keep))))
        return outs["logits"]

    def trainable_arrays(self) -> dict[str, np.ndarray]:
        return {n: np.array(self.state.parameters[n].data) for n in self.trainable}

    def trainable_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def load_trainable(self, arrays, reset_optimizer=False) -> None:
        arrays = checked_state(arrays, self._shapes)
        if reset_optimizer:  # the bundle's own checkpoint: ORT's optimizer state at step 0
            initial = self.api.CheckpointState.load_checkpoint(str(self.folder / self._files["checkpoint"]))
            # the old graphs go before the new open: both at once would raise the peak by a
            # whole training session (--lr auto restores three times); a failed open is fatal
            self.module = self.optimizer = None
            self._build(initial)
        for n in self.trainable:
            self.state.parameters[n] = np.ascontiguousarray(arrays[n], np.float32)

    def save(self, folder: Path) -> None:
        self.api.CheckpointState.save_checkpoint(self.state, str(folder / ORT_CHECKPOINT),
                                                 include_optimizer_state=True)

    def load(self, folder: Path) -> None:
        self._build(self.api.CheckpointState.load_checkpoint(str(folder / ORT_CHECKPOINT)))

    @staticmethod
    def read_trained(folder: Path) -> dict[str, np.ndarray]:
        """The trained parameters of a checkpoint folder, without an engine."""
        state = training_api().CheckpointState.load_checkpoint(str(_checkpoint_file(folder, ORT_CHECKPOINT)))
        return {n: np.array(p.data) for n, p in state.parameters if p.requires_grad}


def _trains_every_layer(trained: np.ndarray) -> None:
    if not np.all(trained):
        raise UsageError(f"trained={np.flatnonzero(trained).tolist()}: the static engine trains every "
                         "layer (ORT's training graph); freezing layers per step needs mode='adaptive'")


def _checkpoint_file(folder: Path, name: str) -> Path:
    if not (folder / name).exists():
        raise EdgetuneError(f"{folder}: no {name}")
    return folder / name


class AdaptiveEngine:
    """Per-block graphs + numpy AdamW; layers outside ``trained`` run frozen backward or none."""

    mode = "adaptive"
    caps = MODE_CAPS["adaptive"]

    def __init__(self, folder: str | Path, index: dict, threads: int = 0,
                 optim: AdamWConfig | None = None, placement: Placement = HOST):
        from edgetune.runtime.adaptive import AdaptiveRunner
        from edgetune.train.param_state import trainable_state

        self.runner = AdaptiveRunner(folder, threads=threads, placement=placement)
        self.num_layers = self.runner.num_layers
        self.trainable = list(index["trainable"])
        self.state = trainable_state(self.runner, self.trainable, optim or AdamWConfig())
        self._trainable_blocks = set(self.runner.trainable_blocks())

    def train_step(self, micro_batches, keep, trained, lr) -> StepStats:
        train = [int(i) for i in np.flatnonzero(trained) if i in self._trainable_blocks]
        train_stem = bool(trained[0])
        grads: dict = {}
        loss, correct, count, deltas, norms = 0.0, 0, 0, [], []
        total = sum(targets(mb["labels"]) for mb in micro_batches)
        for mb in micro_batches:
            n = targets(mb["labels"])
            inputs = {k: v for k, v in mb.items() if k != "labels"}
            res = self.runner.step(inputs, mb["labels"], [int(k) for k in keep], train=train,
                                   train_stem=train_stem)
            # the step's loss is the target-weighted mean of the micro-batches' (targets.py)
            self.state.accumulate(grads, res.grads, n / total)
            loss += res.loss * n
            correct += hits(res.logits, mb["labels"])
            count += n
            deltas.append(res.cls_delta)
            assert res.cls_norm is not None  # AdaptiveRunner.step always measures it
            norms.append(res.cls_norm)
        self.state.step(grads, lr)
        return StepStats(loss / count, correct, count, np.mean(deltas, axis=0), np.mean(norms, axis=0))

    def recompute_more(self) -> bool:
        return self.runner.recompute_more()

    def warmup(self, batch, keep, trained=None) -> None:
        from edgetune.runtime.adaptive import graph_files

        for file in sorted(graph_files(self.runner.index, self.runner.store)):
            self.runner.sessions.get(file)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        train = None if trained is None else [int(i) for i in np.flatnonzero(trained)
                                               if i in self._trainable_blocks]
        self.runner.step(inputs, batch["labels"], [int(k) for k in keep], train=train,
                         train_stem=None if trained is None else bool(trained[0]))  # discarded

    def predict(self, batch, keep) -> np.ndarray:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.runner.forward(inputs, [int(k) for k in keep])[0]

    def trainable_arrays(self) -> dict[str, np.ndarray]:
        return {n: np.array(a) for n, a in self.state.arrays().items()}

    def trainable_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(a.shape) for n, a in self.state.arrays().items()}

    def load_trainable(self, arrays, reset_optimizer=False) -> None:
        self.state.set_params(checked_state(arrays, self.trainable_shapes()))
        if reset_optimizer:
            self.state.reset_optimizer()

    def save(self, folder: Path) -> None:
        """Streamed from the live arrays (on the host), a tensor at a time: no copy."""
        save_tensors(folder / PARAMS_FILE, self.state.arrays())
        save_tensors(folder / OPTIMIZER_FILE, self.state.optimizer_arrays())

    def load(self, folder: Path) -> None:
        host = not self.runner.placement.resident  # on the host: read straight into the arrays
        params = load_tensors(folder / PARAMS_FILE, into=self.state.arrays() if host else None)
        missing = set(self.trainable) - set(params)
        if missing:
            raise EdgetuneError(f"{folder}: checkpoint lacks {sorted(missing)[:3]}: from another bundle?")
        optimizer = load_tensors(folder / OPTIMIZER_FILE,
                                 into=self.state.optimizer_arrays() if host else None)
        self.state.load(params, optimizer)

    @staticmethod
    def read_trained(folder: Path) -> dict[str, np.ndarray]:
        """The trained parameters of a checkpoint folder, without an engine."""
        return load_tensors(_checkpoint_file(folder, PARAMS_FILE))
