"""``Trainer``: the training loop of the Python API (the CLI's ``train`` is a thin wrapper).

    trainer = Trainer("bundle/", train_data, val_data, TrainConfig(steps=200), out="run/")
    result = trainer.fit()            # resumable: Trainer(..., resume=True).fit()
    trainer.evaluate(test_data)       # {"loss": ..., "accuracy": ..., "count": ...}

An ALaST run validates both at every token and at its budgets, and keeps the better for
inference (``trainer.choice``, train/inference_tokens.py); ``evaluate`` follows that choice.

Silent unless ``progress=True``. ``callbacks`` get each step's record (a dict).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.bundle import Bundle
from edgetune.caps.limits import Caps
from edgetune.caps.planner import CapPlanner, CapReached, CapSettings
from edgetune.caps.units import MB, format_bytes
from edgetune.data.base import Dataset, split
from edgetune.data.padding import dataset_pad_id, pad_multiple
from edgetune.data.sampler import BatchSampler
from edgetune.devices import DeviceProfile, detect_device
from edgetune.engine_caps import mode_caps
from edgetune.errors import EdgetuneError, UsageError
from edgetune.optim_config import AdamWConfig
from edgetune.runtime.ort_env import ArenaFull
from edgetune.runtime.placement import Placement
from edgetune.schedule import AlastPlanner, Planner, StaticPlanner, StepPlan
from edgetune.sensors.factory import make_energy_meter
from edgetune.sensors.gate import GatedMeter
from edgetune.sensors.memory import process_rss_bytes
from edgetune.sensors.peak import peak_rss_bytes
from edgetune.train.capping import Capped, Uncapped, ValidationStopped
from edgetune.train.checkpoint import revision_of
from edgetune.train.config import MIN_HELD_OUT, TrainConfig
from edgetune.train.engines import Batch, Engine, StepStats
from edgetune.train.evaluate import evaluate_engine, token_count
from edgetune.train.inference_tokens import (
    ALL,
    RUN,
    STATE_KEY,
    TRAINED,
    TokenChoice,
    budgets_for,
    by_rule,
    decide,
    fp32_budgets,
    is_every_token,
    undecided,
)
from edgetune.train.lr_range import RangeTest, Trials, run_range_test, run_trials
from edgetune.train.modes import open_engine, resolve
from edgetune.train.optim import learning_rate
from edgetune.train.progress import MetricsLog, ProgressBar
from edgetune.train.ram_guard import arena_budget, limit_arena
from edgetune.train.run_folder import RunFolder
from edgetune.train.runinfo import check_resume, run_info

Callback = Callable[[dict[str, Any]], None]
ARENA_RETRIES = 8


@dataclass
class TrainResult:
    steps: int                   # the run's steps at the end (a resumed run's earlier ones too)
    final_loss: float
    best_accuracy: float | None
    seconds: float               # this fit()'s wall time
    peak_rss_mb: float           # decimal megabytes (10⁶ B), as --ram-cap reads them
    energy_j: float = 0.0        # this trainer's, from the meter: loading, the warm-up and every
                                 #   fit() so far (validations, checkpoints), not the time between
    stopped: str | None = None   # why the run ended before total_steps (the energy cap, patience)
    steps_run: int = 0           # the steps this fit() ran
    inference: TokenChoice | None = None  # which tokens eval and merge keep by default (the
                                          #   best checkpoint's, else the last one's)

    @property
    def seconds_per_step(self) -> float:
        """This fit()'s wall time per step it ran."""
        return self.seconds / max(1, self.steps_run)


class Trainer:
    def __init__(self, bundle: str | Path | Bundle, train_data: Dataset, val_data: Dataset | None = None,
                 config: TrainConfig | None = None, out: str | Path | None = None,
                 callbacks: Sequence[Callback] = (), progress: bool = False, resume: bool = False,
                 caps: Caps | None = None, device: DeviceProfile | None = None):
        self.run = RunFolder(out) if out is not None else None
        if self.run is not None:  # refusals before any work: a typo in out= must not start a new run
            if resume:
                self.run.require_run()
            else:
                self.run.require_fresh()
            self.run.check_free()
        elif resume:
            raise UsageError("resume needs an output folder (out=...)")
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        self.caps = caps
        self.device = device or detect_device()
        self.config = self._with_mode(config or TrainConfig(epochs=1.0))
        if len(train_data) == 0:
            raise UsageError("training data is empty")
        if val_data is not None and len(val_data) == 0:
            raise UsageError("validation data is empty")
        c = self.config
        train_data, val_data, self.held_out = hold_out(train_data, val_data, c, self.bundle.is_lm)
        if c.patience and val_data is None:
            raise UsageError(f"TrainConfig.patience={c.patience}: early stopping needs validation "
                             "data (--val, or --val-split above 0)")
        self.pad_to = c.pad_multiple
        self._max_text_tokens = int(self.bundle.inputs.get("max_tokens", 0) or 0)
        self._pad_id = dataset_pad_id(train_data)
        self.train_data, self.val_data = train_data, val_data
        # this trainer's joules only: loading, the warm-up and its fit() calls, never the time
        # between them (a fleet client waiting for its next round, another trainer's steps)
        self.meter = GatedMeter(make_energy_meter(self.device))
        self.meter.start()
        self._joules = 0.0  # the meter's reading already charged
        bs = min(c.batch_size, len(train_data))
        sample = train_data.batch(np.arange(1))
        input_bytes = float(sum(v.nbytes for k, v in sample.items() if k != "labels"))
        self.engine, arena = self._open_engine(bs, input_bytes)
        self.sampler = BatchSampler(len(train_data), bs, seed=c.seed, drop_last=True)
        self.total_steps = c.total_steps(len(self.sampler))
        self.limits = self._limits(bs, input_bytes, arena)
        self.planner: Planner = self.limits.planner
        self.info = (run_info(self.bundle, c, train_data, val_data, self.total_steps, caps)
                     if self.run else None)  # what run.json records
        if self.info is not None and "examples" in self.held_out:
            self.info["held_out"] = self.held_out
        if self.info is not None:  # what metrics' energy_j counts: a sensor, or the model (sensors/)
            self.info["energy_meter"] = self.meter.describe()
        if self.info is not None and self.pad_to > 1 and self._max_text_tokens:
            self.info["pad_multiple"] = self.pad_to
        self.callbacks = list(callbacks)
        self.progress = progress
        self.step = 0
        self.best_accuracy: float | None = None
        self.stopped: str | None = None
        self._val_joules: float | None = None  # one validation pass, last measured
        self.choice: TokenChoice | None = None  # the last validation's token choice
        self.best_choice: TokenChoice | None = None  # the best checkpoint's
        self._loads = 0  # parameter loads since the last step: a checkpoint's revision
        self._saved: tuple[int, int] | None = None  # (step, loads) of the last "last" checkpoint
        self._forget_best = False  # drop the "best" pointer with the next checkpoint (a load)
        self.lr_pick: dict[str, Any] | None = None  # --lr auto's range test, once run
        self.since_best = 0  # validations since the best one (early stopping: config.patience)
        self._elapsed = 0.0  # wall seconds inside fit() before the current one (and before a resume)
        self._fit_t0 = time.monotonic()
        if resume:
            self._resume()
        first = self.train_data.batch(self.sampler.batch_indices(0, 0)[:1])
        self.limits.prepare(self.engine, first, token_count(first, self.bundle))  # after resume
        self.meter.close()  # until fit()

    # ---- setup -------------------------------------------------------------------------------
    def _with_mode(self, config: TrainConfig) -> TrainConfig:
        """``config`` with its provider and mode picked where it names none (train/modes.py),
        and both checked against this environment and the engine's capabilities."""
        mode, provider = resolve(config.schedule, self.bundle.modes, mode=config.mode,
                                 provider=config.provider, accelerator=self.device.accelerator,
                                 ram_capped=self.caps is not None and self.caps.ram_bytes is not None,
                                 weight_decay=config.weight_decay)
        return dataclasses.replace(config, mode=mode, provider=provider)

    def _open_engine(self, batch_size: int, input_bytes: float) -> tuple[Engine, int | None]:
        """The engine, and under a RAM cap the arena's limit (ram_guard.py), which must be in
        place before the first session exists: an engine that opens its sessions with itself
        needs it first, one that opens them on first use gets it measured after its
        parameters load rather than predicted."""
        c, ram = self.config, self.caps.ram_bytes if self.caps is not None else None
        lazy = mode_caps(c.mode).lazy_sessions
        safety, arena = CapSettings().safety, None
        if ram is not None and not lazy:
            arena = limit_arena(self.bundle, c.mode, ram, safety, batch_size, input_bytes)
        elif ram is not None:  # refuse before loading parameters that cannot fit
            arena_budget(self.bundle, c.mode, ram, safety, batch_size, input_bytes)
        try:
            engine = open_engine(self.bundle, c.mode, c.threads,
                                 AdamWConfig(lr=c.lr, weight_decay=c.weight_decay),
                                 Placement(c.provider))
        except ArenaFull as e:
            raise EdgetuneError(f"--ram-cap {format_bytes(ram or 0)}: {e}; raise the cap") from None
        if ram is not None and lazy:
            arena = limit_arena(self.bundle, c.mode, ram, safety, batch_size, input_bytes,
                                engine_open=True)
        return engine, arena

    def _limits(self, batch_size: int, input_bytes: float, arena: int | None) -> Uncapped:
        """The schedule's planner, wrapped in the cap planner under caps."""
        c, L = self.config, self.engine.num_layers
        inner: Planner = (AlastPlanner(L, int(self.bundle.manifest["tokens"]), c.alast, self.total_steps,
                                       drop_tokens=self.bundle.drops_tokens)
                          if c.schedule == "alast" else StaticPlanner(L))
        if self.caps is None or not self.caps.any:
            return Uncapped(inner)
        planner = CapPlanner(inner, self.bundle.manifest, self.device, self.caps, self.total_steps,
                             batch_size,
                             settings=CapSettings.for_bundle(self.bundle.manifest, self.engine.caps.memory))
        planner.input_bytes_per_sample, planner.arena_bytes = input_bytes, arena
        return Capped(planner)

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self, steps: int | None = None) -> TrainResult:
        """Train ``steps`` more steps (default: all that are left), never past ``total_steps``:
        the learning-rate schedule and the energy cap span the whole run, so a fleet's rounds
        call ``fit(steps=k)`` on one Trainer. The run folder is locked (``RUN/.lock``) meanwhile."""
        until = self.total_steps if steps is None else min(self.total_steps, self.step + _more_steps(steps))
        with self.meter.counting():
            if self.run is None:
                return self._fit(until)
            with self.run.lock():
                self.run.remove_temporaries()
                return self._fit(until)

    def _fit(self, until: int) -> TrainResult:
        start, first = time.monotonic(), self.step
        self._fit_t0 = start
        log = self.run.metrics_log(self.step or None) if self.run else None
        if self.config.lr_auto and self.lr_pick is None and self.step == 0:
            self._lr_range_test()
        if self.run:
            assert self.info is not None  # recorded whenever there is a run folder
            self.run.write_info(self.info)
        bar = ProgressBar(self.total_steps) if self.progress else None
        self._loss, self._peak_rss, self.stopped = float("nan"), 0.0, None
        self.limits.observe_startup(self._energy())  # loading and the warm-up (or since the last fit())
        try:
            while self.step < until and self._train_one(log, bar):
                pass
            if self._saved != (self.step, self._loads):  # not already (a stop, an empty fit)
                self._checkpoint(("last",))
        finally:
            self._elapsed, self._fit_t0 = self._elapsed_s(), time.monotonic()
            if bar:
                bar.close()
            if log:
                log.close()
        # the final checkpoint's write counts too (ORT serialises the whole state at once)
        self._peak_rss = max(self._peak_rss, peak_rss_bytes() / MB)
        return TrainResult(self.step, self._loss, self.best_accuracy, time.monotonic() - start,
                           self._peak_rss, self.meter.read_joules(), self.stopped, self.step - first,
                           self.best_choice or self._choice())

    def _pad(self, batch: Batch) -> Batch:
        """A text batch padded to ``pad_multiple`` tokens (data/padding.py): fewer batch
        lengths, a lower peak."""
        return pad_multiple(batch, self.pad_to, self._max_text_tokens, self._pad_id)

    def _lr_range_test(self) -> None:
        """``lr_auto`` (train/lr_range.py): the range test, then short trials around its pick (a
        bracket search), each from the same start, scored on held-out loss; all on batches of
        their own seeded order, at the plan of step 0 under the caps. The parameters, AdamW's
        state and the planner then go back to where they were and ``config.lr`` is the trials'
        winner."""
        snapshot = self.engine.trainable_arrays()
        planner = self.limits.planner  # its plans for the probes are not training steps
        inner = getattr(planner, "inner", planner)
        capped = planner if isinstance(planner, CapPlanner) else None
        plans_before, inner_before = capped.steps_done if capped else 0, inner.state_dict()
        probe = BatchSampler(len(self.train_data), self.sampler.batch_size, seed=self.config.seed + 1,
                             drop_last=True)

        def step(lr: float, i: int) -> float:
            epoch, index = divmod(i, len(probe))
            batch = self._pad(self.train_data.batch(probe.batch_indices(epoch, index)))
            self.limits.observe_overhead(self._energy())
            try:
                plan = self.limits.plan(token_count(batch, self.bundle), len(batch["labels"]), 0)
            except (CapReached, EdgetuneError) as e:  # a refusal at step 0 comes as the latter
                raise UsageError(f"--lr auto: its probe steps do not fit the caps ({e}); "
                                 "give --lr") from None
            stats, seconds, _ = self._run_step(batch, plan, lr)
            pause = self.limits.observe_step(self._energy(), seconds)
            if pause > 0:  # a power cap
                time.sleep(pause)
            return stats.loss

        def restore() -> None:
            self.engine.load_trainable(snapshot, reset_optimizer=True)
            inner.load_state_dict(inner_before)

        probes = itertools.count()
        test = run_range_test(RangeTest(), lambda lr: step(lr, next(probes)))
        restore()
        trials = Trials()
        n = min(trials.steps, self.total_steps)
        held = self._trial_data(trials.max_examples)

        def trial(lr: float) -> float:
            losses: list[float] = []
            for i in range(n):  # the run's first n steps at this rate
                losses.append(step(learning_rate(i, self.total_steps, lr, self.config.warmup), i))
                if not np.isfinite(losses[-1]):
                    restore()
                    return float("inf")
            if held is not None:
                loss = float(self._evaluate(held, None, None)["loss"])
            else:  # progressive: each loss was taken before its batch was stepped on
                loss = float(np.mean(losses[-max(1, n // 4):]))
            restore()
            return loss

        won = run_trials(trials, test["lr"], trial)
        if capped is not None:  # the joules stay spent; the steps were not training's
            capped.steps_done = plans_before
        scored = (f"loss on {len(held)} held-out examples" if held is not None
                  else "training loss of batches each trial had not seen")
        self.lr_pick = {**test, "range_lr": test["lr"], "lr": won["lr"],
                        "trials": {**won, "steps": n, "scored_by": scored},
                        "rule": f"{test['rule']} = {test['lr']:.3g}; trials of {n} steps at "
                                + ", ".join(f"{r:.3g}" for r in won["rates"])
                                + (": every one diverged, the lowest taken" if won.get("diverged")
                                   else f": {scored} lowest at {won['lr']:.3g}")}
        self.config = dataclasses.replace(self.config, lr=self.lr_pick["lr"])
        if self.info is not None:
            self.info["config"]["lr"] = self.lr_pick["lr"]
            self.info["lr_auto"] = self.lr_pick

    def _trial_data(self, most: int) -> Dataset | None:
        """What ``--lr auto``'s trials are scored on: the validation data, at most ``most`` of it
        (a seeded draw), or None without any."""
        if self.val_data is None:
            return None
        if len(self.val_data) <= most:
            return self.val_data
        pick = np.random.default_rng(self.config.seed).choice(len(self.val_data), most, replace=False)
        return self.val_data.subset(np.sort(pick))

    def _energy(self) -> float:
        """Joules since the last call: a cap is on the whole run (logging, validation and
        checkpoints included)."""
        now = self.meter.read_joules()
        spent, self._joules = now - self._joules, now
        return spent

    def _train_one(self, log: MetricsLog | None, bar: ProgressBar | None) -> bool:
        """One step and what follows it; False where the energy cap ends the run before it."""
        epoch, index = divmod(self.step, len(self.sampler))
        batch = self._pad(self.train_data.batch(self.sampler.batch_indices(epoch, index)))
        n_tokens = token_count(batch, self.bundle)
        self.limits.observe_overhead(self._energy())  # since the last step (logging, checkpoints, the batch)
        try:
            plan = self.limits.plan(n_tokens, len(batch["labels"]), self.step)
        except CapReached as e:
            self.stopped = str(e)
            return False
        budgets = self.planner.budgets  # ALaST's, in force for this step
        lr = learning_rate(self.step, self.total_steps, self.config.lr, self.config.warmup)
        stats, seconds, plan = self._run_step(batch, plan, lr)
        if not np.isfinite(stats.loss):
            raise EdgetuneError(f"step {self.step}: loss is {stats.loss}; lower --lr (now {self.config.lr})")
        self.planner.observe(stats.cls_delta, stats.cls_norm)
        self.step += 1
        self._loads = 0
        self._loss = stats.loss
        rss = process_rss_bytes() / MB
        self._peak_rss = max(self._peak_rss, rss, peak_rss_bytes() / MB)
        pause = self.limits.observe_step(self._energy(), seconds)
        record = self._record(epoch, n_tokens, lr, stats, plan, seconds, rss, len(batch["labels"]))
        if budgets is not None:
            record["budgets"] = [float(b) for b in budgets]
        if pause > 0:
            time.sleep(pause)
            record["pause_s"] = pause
        self._validation(record)
        self._report(record, log, bar)
        if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
            self._checkpoint(("last",))
        return not self._patience_spent()

    def _elapsed_s(self) -> float:
        """Wall seconds inside fit() so far (this call's and every earlier one's, resumes too)."""
        return self._elapsed + time.monotonic() - self._fit_t0

    def _patience_spent(self) -> bool:
        """Early stopping: ``config.patience`` validations in a row without a better accuracy
        end the run (the best checkpoint is the model; the step cap stays the schedule's length)."""
        p = self.config.patience
        if not p or self.since_best < p:
            return False
        self.stopped = (f"early stop: no better validation accuracy in {p} validation{'s' * (p > 1)} "
                        f"(best {self.best_accuracy:.4f})")
        return True

    def _report(self, record: dict[str, Any], log: MetricsLog | None, bar: ProgressBar | None) -> None:
        if log:
            log.write(record)
        for cb in self.callbacks:
            cb(record)
        if bar:
            if "target_tokens_per_s" in record:  # a language model: tokens learned per second
                bar.update(self.step, record["loss"], record["target_tokens_per_s"], record["rss_mb"],
                           unit="tok/s")
            else:
                bar.update(self.step, record["loss"], record["samples_per_s"], record["rss_mb"])

    def _record(self, epoch: int, n_tokens: int, lr: float, stats: StepStats, plan: StepPlan,
                seconds: float, rss: float, samples: int) -> dict[str, Any]:
        """``accuracy``: of the step's targets (a language model's: next-token hits)."""
        record = {"step": self.step, "epoch": epoch, "loss": stats.loss, "lr": lr,
                  "accuracy": stats.correct / stats.count, "tokens": n_tokens,
                  "tokens_kept": plan.keep.tolist(), "layers_trained": np.flatnonzero(plan.trained).tolist(),
                  "micro_batch": plan.micro_batch, "step_time": seconds,
                  "samples_per_s": samples / seconds, "rss_mb": rss,
                  "peak_rss_mb": self._peak_rss, "energy_j": self._joules,
                  "elapsed_s": self._elapsed_s()}
        if self.bundle.is_lm:  # the tokens learned (targets) per second, and the step's perplexity
            record.update(targets=stats.count, target_tokens_per_s=stats.count / seconds,
                          perplexity=float(np.exp(min(stats.loss, 700.0))))
        return record

    def _run_step(self, batch: Batch, plan: StepPlan, lr: float) -> tuple[StepStats, float, StepPlan]:
        """One optimizer step; where the arena refuses a plan, nothing was updated, and the
        step runs again with a smaller one (the RAM cap's backstop, ram_guard.py)."""
        for _ in range(ARENA_RETRIES):
            t0 = time.perf_counter()
            try:
                stats = self.engine.train_step(_split(batch, plan.micro_batch), plan.keep, plan.trained, lr)
                return stats, time.perf_counter() - t0, plan
            except ArenaFull as e:  # first save less for backward, then shrink the plan
                if not self.engine.recompute_more():
                    plan = self.limits.smaller(plan, e, self.step + 1)
        raise EdgetuneError(f"step {self.step + 1}: the arena refused {ARENA_RETRIES} plans in a "
                            "row; raise --ram-cap")

    def _validation(self, record: dict[str, Any]) -> None:
        """Validate when due, into ``record``; a better accuracy checkpoints ``best``."""
        every = self.config.eval_every or len(self.sampler)
        if self.val_data is None or not (self.step % every == 0 or self.step == self.total_steps):
            return
        self.limits.observe_overhead(self._energy(), final=False)  # a pause, logging: between steps
        val = self._validate()
        self.limits.observe_validation(self._energy())
        if val is None:
            record["val_skipped"] = "energy cap"
            return
        record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        if "trained" in val:  # an ALaST run: at its budgets too, and which inference keeps
            record.update(val_loss_trained=val["trained"]["loss"],
                          val_accuracy_trained=val["trained"]["accuracy"])
        assert self.choice is not None  # set by _validate
        record["inference_tokens"] = self.choice.tokens
        score = max(val["accuracy"], val.get("trained", val)["accuracy"])  # the chosen way's
        if self.best_accuracy is None or score > self.best_accuracy:
            self.best_accuracy, self.best_choice, self.since_best = score, self.choice, 0
            self._checkpoint(("best",))
        else:
            self.since_best += 1

    def evaluate(self, data: Dataset, batch_size: int | None = None, tokens: str = RUN) -> dict[str, float]:
        """Loss and accuracy over ``data``. ``tokens``: ``run`` (the last validation's choice;
        every token before any validation), ``all``, or ``trained`` (the last validation's
        budgets, else those in force). Under a RAM cap in batches no larger than the last
        step's micro-batch, halved while the arena refuses them."""
        budgets = budgets_for(self._choice(), tokens)
        return self._evaluate(data, batch_size, budgets)

    def _evaluate(self, data: Dataset, batch_size: int | None, budgets: tuple[float, ...] | None,
                  before_batch: Callable[[int], None] | None = None) -> dict[str, float]:
        size = self.limits.eval_batch(batch_size or self.config.batch_size)
        while True:
            try:
                return evaluate_engine(self.engine, self.bundle, data, size, budgets, before_batch,
                                       prepare=self._pad)
            except ArenaFull:
                if size == 1:
                    raise EdgetuneError("evaluation: one sample does not fit the arena; raise "
                                        "--ram-cap or drop --val") from None
                size = max(1, size // 2)

    def _validate(self) -> dict | None:
        """Validation, unless the energy cap cannot pay for it (its estimate: the last one's
        measured energy, else its forward FLOPs at every token, twice for an ALaST run). An
        ALaST run whose budgets drop tokens validates at them too (``val["trained"]``) and
        decides which tokens inference keeps (``self.choice``)."""
        assert self.val_data is not None
        budgets = self._budgets()
        both = budgets is not None and not is_every_token(budgets, int(self.bundle.manifest["tokens"]))
        passes = 2 if both else 1
        spent = None if self._val_joules is None else self._val_joules * passes
        batch = self.limits.eval_batch(self.config.batch_size)
        if not self.limits.affords(spent, len(self.val_data) * passes, batch):
            return None
        before = self.meter.read_joules()
        try:
            val: dict = dict(self._evaluate(self.val_data, None, None, self._val_guard(0, passes)))
            if both:
                assert budgets is not None
                val["trained"] = self._evaluate(self.val_data, None, budgets,
                                                self._val_guard(len(self.val_data), passes))
        except ValidationStopped as e:  # what it cost is charged by _validation
            self._val_joules = e.per_pass
            return None
        if both:
            assert budgets is not None
            self.choice = decide(budgets, val["accuracy"], val["trained"]["accuracy"])
        elif budgets is None:
            self.choice = undecided(None)
        else:  # both ways are the same counts: one measurement
            self.choice = TokenChoice(ALL, budgets, {ALL: val["accuracy"], TRAINED: val["accuracy"]},
                                      "the budgets keep every token")
        self._val_joules = (self.meter.read_joules() - before) / passes
        return val

    def _val_guard(self, offset: int, passes: int) -> Callable[[int], None]:
        """The energy cap's check before each validation batch: its cost so far is what the
        meter read since the last charge (train/capping.py)."""
        assert self.val_data is not None
        total = len(self.val_data) * passes

        def check(done: int) -> None:
            spent = self.meter.read_joules() - self._joules
            self.limits.check_validation(spent, offset + done, total, passes)
        return check

    def _budgets(self) -> tuple[float, ...] | None:
        """The budgets in force, at the precision checkpoints and the merged graph hold them."""
        b = self.planner.budgets
        return None if b is None else fp32_budgets(b)

    def _choice(self) -> TokenChoice:
        """The token choice a checkpoint written now carries: the last validation's, else
        every token (undecided), with the budgets in force recorded."""
        if self.choice is not None:
            return self.choice
        if self.val_data is None:
            return by_rule(self._budgets(), str(self.bundle.inputs.get("kind", "")),
                           self.held_out.get("why", "no validation data"))
        why = "parameters loaded since the last validation" if self._loads else None
        return undecided(self._budgets(), why)

    # ---- the trainable parameters: what a fleet's clients exchange (train/exchange.py) -------
    @property
    def trainable_names(self) -> list[str]:
        """The trainable parameters' names in the bundle's order (Flower's NDArrays are
        positional: ``dict(zip(trainer.trainable_names, arrays))``)."""
        return list(self.engine.trainable)

    def trainable_state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the trainable parameters, name → float32 array in the bundle's order;
        frozen ones never leave (``list(d.values())`` is what Flower calls NDArrays)."""
        return self.engine.trainable_arrays()

    def load_trainable_state_dict(self, arrays: Mapping[str, np.ndarray],
                                  reset_optimizer: bool = False) -> None:
        """Set every trainable parameter from ``arrays`` (the names and shapes
        :meth:`trainable_state_dict` gives; any float dtype; finite), checked whole before
        anything changes. AdamW's moments and step counts stay, or restart at zero with
        ``reset_optimizer``. Another model from here on: a checkpoint at this step is a new
        revision (``step-N-rK``), the ``best`` pointer goes with the next checkpoint (``best``
        falls back to ``last``) and the next validation sets it afresh, and until a validation
        the inference tokens are undecided (the best so far scored other parameters)."""
        self.engine.load_trainable(arrays, reset_optimizer=bool(reset_optimizer))
        self._loads += 1
        self.best_accuracy, self.best_choice, self.choice = None, None, None
        self._forget_best = True

    # ---- state -------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """The trainable parameters and optimizer state (the engine's files) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.engine.save(folder)

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "mode": self.engine.mode, "planner": self.planner.state_dict(),
                "best_accuracy": self.best_accuracy, "total_steps": self.total_steps,
                "since_best": self.since_best, "elapsed_s": self._elapsed_s(),
                STATE_KEY: self._choice().to_dict()}

    def _checkpoint(self, tags: tuple[str, ...]) -> None:
        if self.run and not self.limits.affords_checkpoint():  # never past the energy cap
            last = self._saved[0] if self._saved else None
            why = (f"the energy cap left too little for a checkpoint at step {self.step} "
                   f"(the last is {'step ' + str(last) if last is not None else 'none'})")
            if why not in (self.stopped or ""):
                self.stopped = f"{self.stopped}; {why}" if self.stopped else why
            return
        if self.run:
            if self._forget_best:  # parameters were loaded: the old best is another model's
                self.run.checkpoints.forget("best")
                self._forget_best = False
            before = self.meter.read_joules()
            self.run.checkpoints.save(self.step, self.engine.save, self._state(), tags, self._loads)
            if "last" in tags:
                self._saved = (self.step, self._loads)
            self.limits.observe_checkpoint(self.meter.read_joules() - before)

    def _resume(self) -> None:
        assert self.run is not None and self.info is not None
        recorded = self.run.read_info()
        if self.config.lr_auto and "lr_auto" in recorded:  # the range test ran: its pick stands
            self.lr_pick = recorded["lr_auto"]
            self.config = dataclasses.replace(self.config, lr=float(recorded["lr_auto"]["lr"]))
            self.info["config"]["lr"], self.info["lr_auto"] = self.config.lr, self.lr_pick
        check_resume(recorded, self.info, self.run.info_file)
        folder = self.run.checkpoints.path("last")
        if folder is None:
            return  # run.json but no checkpoint: the run stopped before its first; start at step 0
        state = self.run.state(folder)
        if state["mode"] != self.engine.mode:
            raise UsageError(f"{self.run}: the run used mode {state['mode']!r}, "
                             f"this one {self.engine.mode!r}")
        self.engine.load(folder)
        self.planner.load_state_dict(state["planner"])
        self.step = int(state["step"])
        self._loads = revision_of(folder)
        self._saved = (self.step, self._loads)
        self.best_accuracy = state.get("best_accuracy")
        self.since_best = int(state.get("since_best", 0))
        self._elapsed = float(state.get("elapsed_s", 0.0))
        self.choice = _validated_choice(state)
        best = self.run.checkpoints.path("best")
        self.best_choice = None if best is None or self.best_accuracy is None \
            else _validated_choice(self.run.state(best))


def _more_steps(steps: object) -> int:
    try:
        n = operator.index(steps)  # type: ignore[arg-type]
    except TypeError:
        n = 0
    if isinstance(steps, bool) or n < 1:
        raise UsageError(f"steps={steps!r}: must be an integer >= 1 (or None: every step left)")
    return n


def _validated_choice(state: dict[str, Any]) -> TokenChoice | None:
    """A checkpoint's token choice where a validation made it, else None."""
    entry = state.get(STATE_KEY) or {}
    return TokenChoice.from_dict(entry) if entry.get("val_accuracy") is not None else None


def _split(batch: Batch, micro: int) -> list[Batch]:
    n = len(batch["labels"])
    if micro >= n:
        return [batch]
    return [{k: v[i:i + micro] for k, v in batch.items()} for i in range(0, n, micro)]


def hold_out(train: Dataset, val: Dataset | None, config: TrainConfig, lm: bool = False
             ) -> tuple[Dataset, Dataset | None, dict[str, Any]]:
    """(train, val, what was held out): without ``val``, a seeded ``config.held_out()`` slice of
    ``train`` becomes the validation data and is never trained on. A default split (no
    ``val_split`` given) needs :data:`MIN_HELD_OUT` examples to hold out, else there is none."""
    if val is not None and config.val_split:
        raise UsageError(f"val_split={config.val_split}: validation data is given (--val); "
                         f"give one or the other")
    fraction = config.held_out(val is not None, lm)
    if fraction <= 0:
        why = "no validation data (--val-split 0)" if val is None else ""
        return train, val, ({"why": why} if why else {})
    n = len(train)
    if config.val_split is None and n * fraction < MIN_HELD_OUT:
        return train, None, {"why": f"no validation data ({n} training examples: too few to hold "
                                    f"out {fraction:.0%} by default; pass --val or --val-split)"}
    if n < 2:
        raise UsageError(f"val_split={fraction}: {n} training example cannot be split; pass --val")
    rest, held = split(train, fraction, seed=config.seed)
    return rest, held, {"fraction": fraction, "examples": len(held), "of": n}
