"""``Trainer``: the training loop of the Python API (the CLI's ``train`` is a thin wrapper).

    trainer = Trainer("bundle/", train_data, val_data, TrainConfig(steps=200), out="run/")
    result = trainer.fit()            # resumable: Trainer(..., resume=True).fit()
    trainer.evaluate(test_data)       # {"loss": ..., "accuracy": ..., "count": ...}

Silent unless ``progress=True``. ``callbacks`` get each step's record (a dict).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgetune.atomic import atomic_write_text, remove_temporaries
from edgetune.bundle import Bundle, default_mode
from edgetune.data.base import Dataset
from edgetune.data.sampler import BatchSampler
from edgetune.errors import EdgetuneError, UsageError
from edgetune.devices import DeviceProfile, detect_device
from edgetune.runtime.ort_env import ArenaFull
from edgetune.caps.limits import Caps
from edgetune.caps.planner import CapPlanner, CapReached, CapSettings
from edgetune.caps.units import format_bytes, format_joules
from edgetune.schedule import AlastPlanner, Planner, StaticPlanner
from edgetune.sensors.factory import make_energy_meter
from edgetune.sensors.memory import process_rss_bytes
from edgetune.sensors.peak import peak_rss_bytes
from edgetune.train.checkpoint import CheckpointStore
from edgetune.train.config import TrainConfig
from edgetune.train.engines import AdaptiveEngine, Engine, StaticEngine
from edgetune.train.evaluate import RUN_INFO, evaluate_engine, token_count
from edgetune.train.optim import AdamWConfig, learning_rate
from edgetune.train.progress import METRICS, MetricsLog, ProgressBar
from edgetune.train.ram_guard import arena_budget, limit_arena
from edgetune.train.runinfo import check_resume, recorded_info, require_fresh, require_run, run_info
from edgetune.train.runlock import RunLock, check_free

Callback = Callable[[dict[str, Any]], None]
MB = 1e6             # every size the tool prints or parses: decimal megabytes (caps/units.py)
ARENA_RETRIES = 8


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    best_accuracy: float | None
    seconds: float
    peak_rss_mb: float           # decimal megabytes (10⁶ B), as --ram-cap reads them
    energy_j: float = 0.0        # this process's, from the meter: loading to the last checkpoint
    stopped: str | None = None   # why the run ended before total_steps (the energy cap)


def open_engine(bundle: Bundle, mode: str, threads: int = 0, optim: AdamWConfig | None = None) -> Engine:
    folder = bundle.mode_dir(mode)
    index = bundle.index(mode)
    if mode == "static":
        return StaticEngine(folder, index, threads)
    return AdaptiveEngine(folder, index, threads, optim)


class Trainer:
    def __init__(self, bundle: str | Path | Bundle, train_data: Dataset, val_data: Dataset | None = None,
                 config: TrainConfig | None = None, out: str | Path | None = None,
                 callbacks: Sequence[Callback] = (), progress: bool = False, resume: bool = False,
                 caps: "Caps | None" = None, device: "DeviceProfile | None" = None):
        if out is not None:  # refusals before any work: a typo in out= must not start a new run
            if resume:
                require_run(Path(out))
            else:
                require_fresh(Path(out))
            check_free(Path(out))
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        config = config or TrainConfig(epochs=1.0)
        if not config.mode:  # the CLI's default too (train/config.py)
            ram_capped = caps is not None and caps.ram_bytes is not None
            config = dataclasses.replace(config, mode=default_mode(config.schedule, self.bundle.modes,
                                                                   ram_capped))
        self.config = config
        self.train_data, self.val_data = train_data, val_data
        if len(train_data) == 0:
            raise UsageError("training data is empty")
        c = self.config
        self.device = device or detect_device()
        self.meter = make_energy_meter(self.device)
        self.meter.start()  # the run's energy includes loading and the warm-up
        self._joules = 0.0  # the meter's reading already charged to the planner
        self.caps = caps
        self.capped = caps is not None and caps.any
        bs = min(c.batch_size, len(train_data))
        sample = train_data.batch(np.arange(1))
        input_bytes = float(sum(v.nbytes for k, v in sample.items() if k != "labels"))
        self.engine, arena = self._open_engine(bs, input_bytes)
        L = self.engine.num_layers
        self.planner: Planner = (AlastPlanner(L, int(self.bundle.manifest["tokens"]), c.alast)
                                 if c.schedule == "alast" else StaticPlanner(L))
        self.sampler = BatchSampler(len(train_data), bs, seed=c.seed, drop_last=True)
        self.total_steps = c.total_steps(len(self.sampler))
        if self.capped:
            self.planner = self._cap_planner(bs, input_bytes, arena)
        self.out = Path(out) if out is not None else None
        self.store = CheckpointStore(self.out) if self.out else None
        self.info = (run_info(self.bundle, c, train_data, val_data, self.total_steps, caps)
                     if self.out else None)  # what run.json records
        self.callbacks = list(callbacks)
        self.progress = progress
        self.step = 0
        self.best_accuracy: float | None = None
        if resume:
            self._resume()

    def _open_engine(self, batch_size: int, input_bytes: float) -> tuple[Engine, int | None]:
        """The engine, and under a RAM cap the arena's limit (ram_guard.py), which must be in
        place before the first session exists: ORT's training API opens its sessions with the
        engine, the adaptive engine on first use (so its limit is measured after the
        parameters load rather than predicted)."""
        c, ram = self.config, self.caps.ram_bytes if self.caps is not None else None
        safety, arena = CapSettings().safety, None
        if ram is not None and c.engine_mode == "static":
            arena = limit_arena(self.bundle, "static", ram, safety, batch_size, input_bytes)
        elif ram is not None:  # refuse before loading parameters that cannot fit
            arena_budget(self.bundle, "adaptive", ram, safety, batch_size, input_bytes)
        try:
            engine = open_engine(self.bundle, c.engine_mode, c.threads,
                                 AdamWConfig(lr=c.lr, weight_decay=c.weight_decay))
        except ArenaFull as e:
            raise EdgetuneError(f"--ram-cap {format_bytes(ram or 0)}: {e}; raise the cap") from None
        if ram is not None and c.engine_mode == "adaptive":
            arena = limit_arena(self.bundle, "adaptive", ram, safety, batch_size, input_bytes,
                                engine_open=True)
        return engine, arena

    def _cap_planner(self, batch_size: int, input_bytes: float, arena: int | None) -> CapPlanner:
        """The planner around the schedule, calibrated on a warm-up pass of the smallest plan
        (what any plan needs at least); refuses caps that even that cannot meet."""
        assert self.caps is not None
        planner = CapPlanner(self.planner, self.bundle.manifest, self.device, self.caps,
                             self.total_steps, batch_size, settings=CapSettings(engine=self.engine.mode))
        planner.input_bytes_per_sample, planner.arena_bytes = input_bytes, arena
        first = self.train_data.batch(self.sampler.batch_indices(0, 0)[:1])
        least = planner.smallest(token_count(first, self.bundle), 1).plan
        try:
            self.engine.warmup(first, least.keep, least.trained)
        except ArenaFull:
            raise EdgetuneError(f"--ram-cap {format_bytes(self.caps.ram_bytes or 0)}: one sample "
                                "of the smallest plan does not fit; raise the cap") from None
        planner.observe_memory(max(process_rss_bytes(), peak_rss_bytes()))
        planner.check_feasible()
        return planner

    # ---- the loop --------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to ``total_steps``; the run folder is locked (``RUN/.lock``) meanwhile."""
        if not self.out:
            return self._fit()
        with RunLock(self.out):
            remove_temporaries(self.out, (RUN_INFO, METRICS))  # what a killed run left half-written
            return self._fit()

    def _fit(self) -> TrainResult:
        c, start = self.config, time.monotonic()
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(self.out / "metrics.jsonl", self.step if self.step else None) if self.out else None
        if self.out:
            self._write_run_info()
        bar = ProgressBar(self.total_steps) if self.progress else None
        peak_rss, loss = 0.0, float("nan")
        joules = self.meter.read_joules()  # loading and the warm-up (or since the last fit())
        if self.capped:
            self.planner.observe_startup(joules - self._joules)
        self._joules = joules
        self.stopped: str | None = None
        self._val_joules: float | None = None
        per_epoch = len(self.sampler)
        eval_every = c.eval_every or per_epoch
        try:
            while self.step < self.total_steps:
                epoch, index = divmod(self.step, per_epoch)
                batch = self.train_data.batch(self.sampler.batch_indices(epoch, index))
                n_tokens = token_count(batch, self.bundle)
                if self.capped:  # what ran since the last step (logging, checkpoints, the batch)
                    now = self.meter.read_joules()
                    self.planner.observe_overhead(now - self._joules)
                    self._joules = now
                try:
                    plan = self.planner.plan(n_tokens, len(batch["labels"]))
                except CapReached as e:
                    if self.step == 0:  # nothing trained: a refusal, not a run
                        raise EdgetuneError(f"{e}; loading and the warm-up alone took "
                                            f"{format_joules(self.planner.spent_joules, True)}") from None
                    self.stopped = str(e)
                    break
                budgets = getattr(self.planner, "budgets", None)  # ALaST's, in force for this step
                lr = learning_rate(self.step, self.total_steps, c.lr, c.warmup)
                stats, seconds, plan = self._run_step(batch, plan, lr)
                if not np.isfinite(stats.loss):
                    raise EdgetuneError(f"step {self.step}: loss is {stats.loss}; lower --lr (now {c.lr})")
                self.planner.observe(stats.cls_delta, stats.cls_norm)
                self.step += 1
                loss = stats.loss
                rss = process_rss_bytes() / MB
                peak_rss = max(peak_rss, rss, peak_rss_bytes() / MB)
                # everything since the last reading: this step, and the logging, validation and
                # checkpoint after the one before: a cap is on the whole run
                joules = self.meter.read_joules()
                step_joules, self._joules = joules - self._joules, joules
                pause = 0.0
                if self.capped:
                    self.planner.observe_memory(peak_rss_bytes())
                    self.planner.observe_energy(step_joules, seconds)
                    pause = self.planner.pause_seconds(seconds)
                record = {"step": self.step, "epoch": epoch, "loss": loss, "lr": lr,
                          "accuracy": stats.correct / stats.count, "tokens": n_tokens,
                          "tokens_kept": plan.keep.tolist(),
                          "layers_trained": np.flatnonzero(plan.trained).tolist(),
                          "micro_batch": plan.micro_batch, "step_time": seconds,
                          "samples_per_s": stats.count / seconds, "rss_mb": rss,
                          "peak_rss_mb": peak_rss, "energy_j": joules}
                if budgets is not None:
                    record["budgets"] = [float(b) for b in budgets]
                if pause > 0:
                    time.sleep(pause)
                    record["pause_s"] = pause
                if self.val_data is not None and (self.step % eval_every == 0 or self.step == self.total_steps):
                    val = self._validate()
                    if val is None:
                        record["val_skipped"] = "energy cap"
                    else:
                        record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                        if self.best_accuracy is None or val["accuracy"] > self.best_accuracy:
                            self.best_accuracy = val["accuracy"]
                            self._checkpoint(("best",))
                if log:
                    log.write(record)
                for cb in self.callbacks:
                    cb(record)
                if bar:
                    bar.update(self.step, loss, record["samples_per_s"], rss)
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self._checkpoint(("last",))
            self._checkpoint(("last",))
        finally:
            if bar:
                bar.close()
            if log:
                log.close()
        # the final checkpoint's write counts too (ORT serialises the whole state at once)
        peak_rss = max(peak_rss, peak_rss_bytes() / MB)
        return TrainResult(self.step, loss, self.best_accuracy, time.monotonic() - start, peak_rss,
                           self.meter.read_joules(), self.stopped)

    def _run_step(self, batch, plan, lr):
        """One optimizer step; where the arena refuses a plan, nothing was updated, and the
        step runs again with a smaller one (the RAM cap's backstop, ram_guard.py)."""
        for _ in range(ARENA_RETRIES):
            t0 = time.perf_counter()
            try:
                stats = self.engine.train_step(_split(batch, plan.micro_batch), plan.keep, plan.trained, lr)
                return stats, time.perf_counter() - t0, plan
            except ArenaFull as e:
                if not self.capped:
                    raise EdgetuneError(f"out of memory at step {self.step + 1}: {e}") from None
                refused, plan = plan, self.planner.replan_smaller()
                if plan.to_dict() == refused.to_dict():  # nothing smaller to try: the cap is too tight for this run
                    raise EdgetuneError(f"step {self.step + 1}: {e}; no smaller plan is left: "
                                        "raise --ram-cap") from None
        raise EdgetuneError(f"step {self.step + 1}: the arena refused {ARENA_RETRIES} plans in a "
                            "row; raise --ram-cap")

    def evaluate(self, data: Dataset, batch_size: int | None = None) -> dict[str, float]:
        """Loss and accuracy over ``data``, every token kept. Under a RAM cap in batches no
        larger than the last step's micro-batch, halved while the arena refuses them."""
        size = batch_size or self.config.batch_size
        if isinstance(self.planner, CapPlanner) and self.planner.last is not None:
            size = min(size, self.planner.last.plan.micro_batch)
        while True:
            try:
                return evaluate_engine(self.engine, self.bundle, data, size)
            except ArenaFull:
                if size == 1:
                    raise EdgetuneError("validation: one sample at every token does not fit the "
                                        "arena; raise --ram-cap or drop --val") from None
                size = max(1, size // 2)

    def _validate(self) -> dict[str, float] | None:
        """Validation, unless the energy cap cannot pay for it (its estimate: the last one's
        measured energy, else its forward FLOPs at every token)."""
        assert self.val_data is not None
        capped = isinstance(self.planner, CapPlanner)
        if capped and not self.planner.can_afford(self._val_joules or self._val_estimate()):
            return None
        before = self.meter.read_joules()
        val = self.evaluate(self.val_data)
        self._val_joules = self.meter.read_joules() - before
        return val

    def _val_estimate(self) -> float:
        planner = self.planner
        assert isinstance(planner, CapPlanner) and self.val_data is not None
        n = planner.costs.tokens
        L = planner.costs.num_layers
        est = planner.estimate(np.full(L, n), np.ones(L, bool), 1, n, len(self.val_data))
        return est.joules * float(est.flops.forward.sum() / max(est.flops.total, 1.0))

    # ---- state -----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """The trainable parameters and optimizer state (the engine's files) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.engine.save(folder)

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "mode": self.engine.mode, "planner": self.planner.state_dict(),
                "best_accuracy": self.best_accuracy, "total_steps": self.total_steps}

    def _checkpoint(self, tags: tuple[str, ...]) -> None:
        if self.store:
            before = self.meter.read_joules()
            self.store.save(self.step, self.engine.save, self._state(), tags)
            if self.capped:
                self.planner.observe_checkpoint()
                self.planner.observe_checkpoint_energy(self.meter.read_joules() - before)

    def _resume(self) -> None:
        if self.store is None:
            raise UsageError("resume needs an output folder (out=...)")
        check_resume(recorded_info(self.out), self.info, self.out / RUN_INFO)
        state = self.store.state("last")
        if state is None:
            return  # run.json but no checkpoint: the run stopped before its first; start at step 0
        if state["mode"] != self.engine.mode:
            raise UsageError(f"{self.out}: the run used mode {state['mode']!r}, this one {self.engine.mode!r}")
        self.engine.load(self.store.path("last"))
        self.planner.load_state_dict(state["planner"])
        self.step = int(state["step"])
        self.best_accuracy = state.get("best_accuracy")

    def _write_run_info(self) -> None:
        atomic_write_text(self.out / RUN_INFO, json.dumps(self.info, indent=1))


def _split(batch: dict[str, np.ndarray], micro: int) -> list[dict[str, np.ndarray]]:
    n = len(batch["labels"])
    if micro >= n:
        return [batch]
    return [{k: v[i:i + micro] for k, v in batch.items()} for i in range(0, n, micro)]
