"""The device training runtime: learning, engines agreeing, checkpoints, resume after SIGKILL,
clean errors, and the whole export → train → eval path with torch blocked."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from bundles import micro_bundle

from edgetune.bundle import Bundle
from edgetune.errors import EdgetuneError, UsageError
from edgetune.train import TrainConfig, Trainer, load_data

from conftest import training_api
from numerics import RTOL, assert_close_normwise


def synthetic_images(path, n=96, seed=0):
    """Class 1 images are brighter than class 0 ones: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    x = (rng.integers(0, 160, (n, 32, 32, 3)) + 80 * y[:, None, None, None]).astype(np.uint8)
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def bundle():
    return micro_bundle("vit-micro", "full", num_classes=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return synthetic_images(d / "train.npz"), synthetic_images(d / "val.npz", n=64, seed=1)


def test_training_learns_and_writes_metrics(bundle, data, tmp_path):
    b = Bundle.open(bundle)
    train, val = (load_data(b, p) for p in data)
    seen = []
    trainer = Trainer(b, train, val, TrainConfig(steps=40, batch_size=16, lr=2e-3, threads=1),
                      out=tmp_path / "run", callbacks=[seen.append])
    before = trainer.evaluate(val)
    result = trainer.fit()
    after = trainer.evaluate(val)
    assert after["loss"] < before["loss"] - 0.05
    assert after["accuracy"] > 0.7
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 41)) == [r["step"] for r in seen]
    for key in ("loss", "lr", "tokens_kept", "layers_trained", "step_time", "rss_mb"):
        assert key in rows[0]
    assert result.steps == 40 and result.peak_rss_mb > 0
    assert (tmp_path / "run" / "checkpoints" / "last.json").exists()
    assert (tmp_path / "run" / "checkpoints" / "best.json").exists()


@training_api
def test_static_and_adaptive_engines_follow_the_same_trajectory(bundle, data):
    b = Bundle.open(bundle)
    train = load_data(b, data[0])
    losses = {}
    for mode in ("static", "adaptive"):
        seen = []
        Trainer(b, train, None, TrainConfig(steps=8, batch_size=16, lr=1e-3, mode=mode, threads=1,
                                            ), callbacks=[seen.append]).fit()
        losses[mode] = [r["loss"] for r in seen]
    # ORT's AdamW vs ours in numpy: the same update, float rounding apart. Each loss is a forward
    # pass (within RTOL, tests/numerics.py) at parameters the two runs moved apart. Adam's step is
    # blind to the gradient's scale: entry i moves ≲ lr·t·|δg_i|/|g_i| apart, so the loss moves
    # ≲ Σ|g_i|·lr·t·|δg_i|/|g_i| = lr·t·‖δg‖₁, incoherently lr·t·‖δg‖₂ ≤ lr·t·RTOL·‖g‖₂; with
    # lr·t ≤ 8e-3 and ‖g‖₂/L ≈ 14 here: 0.1·RTOL of L. 2·RTOL: the forward's, the drift's 10 times.
    for t, (adaptive, static) in enumerate(zip(losses["adaptive"], losses["static"]), start=1):
        assert_close_normwise(adaptive, static, f"loss at step {t}", rtol=2 * RTOL)


@pytest.mark.parametrize("rule", [{"rule": "relative", "alpha": 0.5, "token_budget": 0.4},
                                  {"rule": "paper", "alpha": 1000.0}])
def test_alast_freezes_layers_and_moves_budgets(bundle, data, rule):
    from edgetune.schedule import AlastConfig

    b = Bundle.open(bundle)
    train = load_data(b, data[0])
    seen = []
    cfg = TrainConfig(steps=6, batch_size=16, schedule="alast", threads=1,
                      alast=AlastConfig(n_train=1, b_min=0.3, **rule))
    Trainer(b, train, None, cfg, callbacks=[seen.append]).fit()
    assert all(len(r["layers_trained"]) == 1 for r in seen)
    assert any(min(r["budgets"]) < 1 for r in seen)
    if rule["rule"] == "relative":  # layer 1 takes in a share of the tokens once budgets fall
        assert any(min(r["tokens_kept"]) < r["tokens"] for r in seen)


def _train_cmd(bundle, data, out, steps, *extra):
    return [sys.executable, "-m", "edgetune.cli", "train", str(bundle), "--data", str(data), "--steps",
            str(steps), "--batch-size", "8", "--out", str(out), "--threads", "1", "--checkpoint-every", "1",
            "--quiet", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [pytest.param("static", marks=training_api), "adaptive"])
def test_sigkill_at_random_points_then_resume_gives_the_same_weights(bundle, data, tmp_path, mode):
    steps = 24
    start = time.monotonic()
    subprocess.run(_train_cmd(bundle, data[0], tmp_path / "clean", steps, "--mode", mode), check=True)
    took = time.monotonic() - start  # kill points inside a run's span, whatever the ORT build's speed
    run = tmp_path / "killed"
    rng = np.random.default_rng(3)
    kills = 0
    for delay in rng.uniform(0.3, 0.9, size=3) * took:
        resume = ("--resume",) if (run / "run.json").exists() else ()  # --resume needs a run
        proc = subprocess.Popen(_train_cmd(bundle, data[0], run, steps, "--mode", mode, *resume))
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    resume = ("--resume",) if (run / "run.json").exists() else ()
    subprocess.run(_train_cmd(bundle, data[0], run, steps, "--mode", mode, *resume), check=True)
    assert kills >= 1
    from edgetune.train.evaluate import open_run

    _, clean, _, _ = open_run(tmp_path / "clean", "last")
    _, resumed, _, _ = open_run(run, "last")
    a, b = clean.trainable_arrays(), resumed.trainable_arrays()
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    rows = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, steps + 1))


def test_bad_data_is_one_line_exit_2_and_writes_nothing(bundle, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 32, 32, 3), np.uint8), y=np.array([0, 1, 5, 0]))
    out = subprocess.run(_train_cmd(bundle, bad, tmp_path / "run", 3), capture_output=True, text=True)
    assert out.returncode == 2
    # onnxruntime's own CPU probe prints a warning on CPUs it does not know (qemu's aarch64)
    ours = [ln for ln in out.stderr.strip().splitlines() if not ln.startswith("onnxruntime cpuid_info")]
    assert len(ours) == 1 and "bad.npz" in out.stderr
    assert not (tmp_path / "run").exists()


def test_corrupt_bundle_is_refused(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    victim = next((copy / "adaptive").rglob("*.onnx"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(EdgetuneError, match=r"bundle file adaptive/.*\.onnx is corrupt \(sha256 mismatch\)"):
        Bundle.open(copy)
    with pytest.raises(EdgetuneError, match="no manifest.json"):
        Bundle.open(tmp_path)


def test_config_errors_name_the_field():
    with pytest.raises(UsageError, match=r"give exactly one of steps \(got 0\) and epochs \(got 0.0\)"):
        TrainConfig()
    with pytest.raises(UsageError, match=r"TrainConfig.lr=-1.0"):
        TrainConfig(steps=1, lr=-1.0)
    with pytest.raises(UsageError, match="ALaST needs the adaptive mode"):
        TrainConfig(steps=1, schedule="alast", mode="static")


def test_export_train_eval_from_the_cli_without_torch(bundle, data, tmp_path):
    """The device side end to end in a process where ``import torch`` fails."""
    shim = tmp_path / "shim"
    for name in ("torch", "onnx"):
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n')
    env = {**os.environ, "PYTHONPATH": str(shim)}
    from edgetune.runtime.ort_build import has_training_api

    for mode in ("static", "adaptive") if has_training_api() else ("adaptive",):
        run = tmp_path / f"run-{mode}"
        out = subprocess.run(_train_cmd(bundle, data[0], run, 4, "--mode", mode, "--val", str(data[1])),
                             env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "4 steps" in out.stdout
        ev = subprocess.run([sys.executable, "-m", "edgetune.cli", "eval", str(run), "--data", str(data[1]),
                             "--json"], env=env, capture_output=True, text=True)
        assert ev.returncode == 0, ev.stderr
        assert json.loads(ev.stdout)["count"] == 64


def test_ram_cap_is_never_exceeded(bundle, data, tmp_path):
    """Caps at 115 %, 90 % and 60 % of the uncapped peak, each run in its own process and
    measured from outside (the child's VmHWM from wait4): a run that trains finishes every step
    under its cap; one that cannot refuses before training, naming a larger cap, and writes no
    checkpoint (refusing costs the libraries' import, so its own peak may pass a cap below
    them). The 115 % run must finish: a guard that always refused would fail here. Its cap also
    carries the guard's reserve for the sessions of every graph a run may open (a capped run
    opens them all before step 1, the uncapped one those it used), Python's slack and the
    smallest arena, which a micro model's whole process (~75 MB) would otherwise drown in."""
    from edgetune.caps.units import parse_bytes
    from edgetune.sensors.child import run_measured
    from edgetune.train.ram_guard import MIN_ARENA, SLACK, session_bytes

    free = run_measured(_train_cmd(bundle, data[0], tmp_path / "free", 6, "--schedule", "alast"))
    assert free.returncode == 0, free.stderr
    for frac in (1.15, 0.9, 0.6):
        fixed = session_bytes(Bundle.open(bundle), "adaptive") + SLACK + MIN_ARENA if frac > 1 else 0
        cap = int(frac * free.peak_rss_bytes + fixed)
        run = tmp_path / f"cap{frac}"
        got = run_measured(_train_cmd(bundle, data[0], run, 6, "--schedule", "alast",
                                      "--ram-cap", f"{cap}B"))
        if got.returncode != 0:
            assert frac < 1, got.stderr[-400:]
            need = re.findall(r"--ram-cap (\d+MB)", got.stderr.strip().splitlines()[-1])
            assert len(need) == 2 and parse_bytes(need[-1]) > cap, got.stderr[-300:]
            assert not (run / "checkpoints").exists()
        else:
            assert got.peak_rss_bytes <= cap, (frac, cap, got.peak_rss_bytes, got.stdout)
            rows = (run / "metrics.jsonl").read_text().splitlines()
            assert len(rows) == 6

    # A cap below the uncapped peak that can be met must be met by training, not refused: at
    # batch 256 the activations lift the uncapped peak well above the floor (what loading alone
    # needs, from the refusal of a 1 MB cap); a cap halfway between them trains every step under
    # it, with a smaller plan than the uncapped run's. A planner that refused every cap below the
    # uncapped peak, or that never shrank the plan, fails here.
    big = synthetic_images(tmp_path / "big.npz", n=256)
    cmd = lambda out, *cap: _train_cmd(bundle, big, tmp_path / out, 3, "--schedule", "alast",  # noqa: E731
                                       "--batch-size", "256", *cap)
    free = run_measured(cmd("free256"))
    assert free.returncode == 0, free.stderr[-400:]
    probe = run_measured(cmd("probe256", "--ram-cap", "1MB"))
    assert probe.returncode == 2 and not (tmp_path / "probe256" / "checkpoints").exists()
    floor = parse_bytes(re.findall(r"--ram-cap (\d+MB)", probe.stderr)[-1])
    assert floor < free.peak_rss_bytes, (floor, free.peak_rss_bytes)
    cap = (floor + free.peak_rss_bytes) // 2
    got = run_measured(cmd("cap256", "--ram-cap", f"{cap}B"))
    assert got.returncode == 0, (cap, got.stderr[-400:])
    assert got.peak_rss_bytes <= cap, (cap, got.peak_rss_bytes)
    metrics = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
               for name in ("free256", "cap256")]
    assert len(metrics[1]) == 3
    plan = lambda r: (r["micro_batch"], len(r["layers_trained"]), sum(r["tokens_kept"]))  # noqa: E731
    assert all(plan(c) != plan(f) and all(x <= y for x, y in zip(plan(c), plan(f)))
               for f, c in zip(*metrics)), metrics

def test_energy_cap_holds_for_the_whole_run(bundle, data, tmp_path):
    """The modelled meter counts everything the run does (loading, warm-up, logging, the final
    checkpoint); under a cap at loading plus about half the steps' energy, the run stops
    before the step it cannot pay for, checkpointed, and its total stays under the cap.
    Loading's modelled energy follows wall time, which a busy CPU stretches, so the cap is
    re-aimed (at most eight tries) from what the last try measured; every try that trains
    must stay under its cap, and one must stop early."""
    STEPS = 40  # of 64 samples: enough work that the steps' energy stands above loading's noise

    def cmd(out, steps, *extra):
        return _train_cmd(bundle, data[0], out, steps, "--batch-size", "64", *extra)

    def joules(text):
        m = re.search(r", ([0-9.]+)(k?)J$", text.strip())
        return float(m.group(1)) * (1000 if m.group(2) else 1)

    one, full = (joules(subprocess.run(cmd(tmp_path / f"free{n}", n),
                                         capture_output=True, text=True, check=True).stdout)
                   for n in (1, STEPS))
    half = 0.5 * (full - one)
    tiny = subprocess.run(cmd(tmp_path / "tiny", STEPS, "--energy-cap", "1mJ"),
                          capture_output=True, text=True)
    assert tiny.returncode == 2 and "--energy-cap 0.001J" in tiny.stderr, tiny.stderr
    cap, stopped, tries = one + half, False, []
    for i in range(8):
        run = tmp_path / f"capped{i}"
        out = subprocess.run(cmd(run, STEPS, "--energy-cap", f"{cap}J"),
                             capture_output=True, text=True)
        tries.append((cap, out.returncode, out.stdout.strip()[-120:]))
        if out.returncode == 2:                      # loading alone took more this time
            cap = float(re.search(r"alone took ([0-9.]+)J", out.stderr).group(1)) + half
            continue
        assert out.returncode == 0, out.stderr
        steps, used = int(re.search(r"(\d+) steps, ", out.stdout).group(1)), joules(out.stdout)
        assert used <= cap, (used, cap, out.stdout)
        if steps == STEPS:                              # loading was quicker: aim lower
            cap = used - half
            continue
        assert 0 < steps < STEPS and "stopped early: --energy-cap" in out.stderr
        assert json.loads((run / "checkpoints" / "last.json").read_text())["step"] == steps
        stopped = True
        break
    assert stopped, f"no try stopped early (one step {one} J, {STEPS} steps {full} J): {tries}"


@pytest.mark.parametrize("training", [True, False], ids=["training-build", "stock-build"])
def test_one_rule_picks_the_mode_for_the_cli_and_the_api(bundle, data, training, monkeypatch):
    """The adaptive engine wherever the bundle has it, on every build (it beats ORT's own
    artifacts there too: engine_caps.MODE_CAPS); static mode where it is the only one exported
    and the training build runs it; without the training API naming static mode is a one-line
    error that says both ways out."""
    from edgetune import engine_caps as modes
    from edgetune.caps import Caps
    from edgetune.runtime.ort_build import has_training_api

    if training and not has_training_api():
        pytest.skip("the training build is not installed")
    monkeypatch.setattr(modes, "has_training_api", lambda: training)
    static = "static" if training else "adaptive"
    # the adaptive engine wherever exported, on every build; static only where it is all there is
    assert modes.pick_mode("static", ["static", "adaptive"], False) == "adaptive"
    assert modes.pick_mode("alast", ["static", "adaptive"], False) == "adaptive"
    assert modes.pick_mode("static", ["static", "adaptive"], True) == "adaptive"   # under a RAM cap
    assert modes.pick_mode("static", ["static"], True) == static     # if it has it and can run it
    assert modes.pick_mode("static", ["adaptive"], False) == "adaptive"            # what was exported
    assert modes.pick_mode("static", ["static", "adaptive"], False, "cuda") == "adaptive"
    if not training:
        with pytest.raises(UsageError, match=r"mode='static': the static engine runs ORT's training "
                                             r"API.*use mode 'adaptive'.*edgetune\[training\]"):
            modes.check_available("static")
    else:
        with pytest.raises(UsageError, match="provider='cuda': the static engine runs on cpu"):
            modes.check_available("static", "cuda")
    b = Bundle.open(bundle)
    ds = load_data(b, data[0])
    assert Trainer(b, ds, config=TrainConfig(steps=1, batch_size=8)).engine.mode == "adaptive"
    if training:
        named = Trainer(b, ds, config=TrainConfig(steps=1, batch_size=8, mode="static"))
        assert named.engine.mode == "static"  # the opt-in
    capped = Trainer(b, ds, config=TrainConfig(steps=1, batch_size=8), caps=Caps.parse(ram="64GB"))
    assert capped.engine.mode == "adaptive" and capped.config.mode == "adaptive"


def test_a_step_the_arena_refuses_runs_again_smaller(bundle, data):
    """ORT refusing an allocation mid-step (the RAM cap's backstop) drops that step's work and
    runs the same step again with a smaller plan; the run goes on."""
    from edgetune.caps import Caps
    from edgetune.runtime.ort_env import ArenaFull

    b = Bundle.open(bundle)
    trainer = Trainer(b, load_data(b, data[0]), config=TrainConfig(steps=3, batch_size=8, mode="adaptive"),
                      caps=Caps.parse(ram="64GB"))
    p = trainer.planner                            # room for the full plan, not for 1.5× of it
    L, n = p.costs.num_layers, p.costs.tokens
    p.arena_bytes = 1.2 * p._arena_use(p.estimate(np.full(L, n), np.ones(L, bool), 8, n, 8).memory)
    real, calls = trainer.engine.train_step, []

    def refuse_once(micro_batches, keep, trained, lr):
        calls.append((sum(len(m["labels"]) for m in micro_batches), len(micro_batches), list(keep)))
        if len(calls) == 1:
            raise ArenaFull("block_00/forward_train.onnx: Available memory of 1 is smaller than requested")
        return real(micro_batches, keep, trained, lr)

    trainer.engine.train_step = refuse_once
    trainer.engine.runner.store = set()                   # nothing left to recompute
    result = trainer.fit()
    assert result.steps == 3 and len(calls) == 4          # step 1 ran twice
    assert trainer.planner.arena_factor == 1.5
    assert calls[0][0] == calls[1][0] == 8                # the same batch both times
    assert calls[1][1] > calls[0][1] or sum(calls[1][2]) < sum(calls[0][2])   # a smaller plan


def test_a_refused_step_first_recomputes_in_backward_then_shrinks(bundle, data):
    """The RAM cap's first lever is recomputation: a refused step runs again with the same
    plan, the lower half of the saving blocks now recomputing in backward; only when none
    saves any more does the plan shrink."""
    from edgetune.caps import Caps
    from edgetune.runtime.ort_env import ArenaFull

    b = Bundle.open(bundle)
    trainer = Trainer(b, load_data(b, data[0]), config=TrainConfig(steps=2, batch_size=8, mode="adaptive"),
                      caps=Caps.parse(ram="64GB"))
    runner = trainer.engine.runner
    L = runner.num_layers
    assert runner.store == set(range(L))
    real, calls = trainer.engine.train_step, []

    def refuse_while_saving(micro_batches, keep, trained, lr):
        calls.append((len(micro_batches), list(keep), set(runner.store)))
        if runner.store:
            raise ArenaFull("block_00/forward_train_store.onnx: Available memory of 1 is smaller "
                            "than requested")
        return real(micro_batches, keep, trained, lr)

    trainer.engine.train_step = refuse_while_saving
    result = trainer.fit()
    assert result.steps == 2
    stores = [c[2] for c in calls]
    assert stores[0] == set(range(L)) and stores[-1] == set()
    assert all(a > b for a, b in zip(stores, stores[1:len(stores) - 1]))   # halves, lowest first
    assert all(c[:2] == calls[0][:2] for c in calls[:-1])                   # the same plan throughout
    assert trainer.planner.arena_factor == 1.0                              # never shrunk


def test_validation_is_inside_the_energy_cap(bundle, data, tmp_path):
    """Validation costs energy too: under an energy cap it runs only when the budget left pays
    for it and the final checkpoint, so a run with a large validation set still ends under
    its cap (here the cap leaves room for the steps, not for every validation)."""
    def joules(text):
        m = re.search(r", ([0-9.]+)(k?)J", text)
        return float(m.group(1)) * (1000 if m.group(2) else 1)

    big_val = synthetic_images(tmp_path / "val.npz", n=1024, seed=3)
    free = subprocess.run(_train_cmd(bundle, data[0], tmp_path / "free", 12, "--batch-size", "64"),
                          capture_output=True, text=True, check=True)
    cap = 1.25 * joules(free.stdout)          # the steps fit; twelve validations of 1024 do not
    out = subprocess.run(_train_cmd(bundle, data[0], tmp_path / "capped", 12, "--batch-size", "64",
                                    "--val", str(big_val), "--eval-every", "1", "--energy-cap", f"{cap}J"),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "capped" / "metrics.jsonl").read_text().splitlines()]
    seen = [(r["step"], round(r["energy_j"], 2), round(1e3 * r["step_time"], 1), r["tokens_kept"],
             r["layers_trained"], r["micro_batch"]) for r in rows]
    assert joules(out.stdout) <= cap, (out.stdout, out.stderr, cap, seen)
    assert any("val_skipped" in r for r in rows)


class CountingMeter:
    """Energy as a count of engine calls (1 J each), so a cap's arithmetic is exact."""

    def __init__(self, engine):
        self.joules = 0.0
        for name in ("train_step", "predict"):
            real = getattr(engine, name)
            setattr(engine, name, self._counting(real))

    def _counting(self, real):
        def call(*args, **kwargs):
            self.joules += 1.0
            return real(*args, **kwargs)
        return call

    name = "count"

    def start(self):
        pass

    def sample(self):
        pass

    def available(self):
        return True

    def read_joules(self):
        return self.joules


def _counted(trainer):
    """A CountingMeter behind the trainer's gate (it counts only inside ``fit()``)."""
    from edgetune.sensors.gate import GatedMeter
    meter = CountingMeter(trainer.engine)
    trainer.meter = GatedMeter(meter)
    return meter


def test_a_validation_whose_estimate_is_wrong_stops_part_way_inside_the_cap(bundle, data, tmp_path,
                                                                             monkeypatch):
    """Before it is measured, a validation's energy is a FLOPs estimate; where that is far too
    low, the check before each batch stops it once its extrapolated rest no longer fits, so the
    cap holds. Here: 12 steps at 1 J, a validation of 16 batches at 1 J each, a 17 J cap (room
    for the steps, not for one validation) and an estimate of 0 J."""
    from edgetune.caps.limits import Caps
    from edgetune.train.capping import Capped
    monkeypatch.setattr(Capped, "_val_estimate", lambda self, samples: 0.0)
    b = Bundle.open(bundle)
    train = load_data(b, data[0])
    val = load_data(b, synthetic_images(tmp_path / "val.npz", n=1024, seed=3))
    trainer = Trainer(b, train, val, TrainConfig(steps=12, batch_size=64, eval_every=1, threads=1),
                      out=tmp_path / "run", caps=Caps(energy_joules=17.0))
    meter = _counted(trainer)
    result = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == 12 and result.stopped is None
    assert meter.joules <= 17.0
    assert all(r.get("val_skipped") == "energy cap" for r in rows)
    # one validation started (its first batch, then the check stopped it) and none after:
    # its extrapolated cost, 16 J, became the estimate the later ones were refused on
    assert meter.joules == 12 + 1


def _counted_run(bundle, data, tmp_path, monkeypatch, cap, n_val, eval_every, pause_j=0.0,
                 estimate=None):
    """12 steps of 64 under an energy cap with a CountingMeter (the final checkpoint's reserve
    pinned at 1.5 J); ``pause_j``: a 1 s pause after
    every step (as a power cap makes) costing that much idle energy; ``estimate``: the FLOPs
    estimate of a validation replaced by this value."""
    from edgetune.caps.limits import Caps
    from edgetune.train import capping
    from edgetune.train import trainer as trainer_module

    if estimate is not None:
        monkeypatch.setattr(capping.Capped, "_val_estimate", lambda self, samples: estimate)
    if pause_j:
        step = capping.Capped.observe_step
        monkeypatch.setattr(capping.Capped, "observe_step", lambda self, j, s: (step(self, j, s), 1.0)[1])
    b = Bundle.open(bundle)
    train = load_data(b, data[0])
    tmp_path.mkdir(parents=True, exist_ok=True)
    val = load_data(b, synthetic_images(tmp_path / "val.npz", n=n_val, seed=3))
    trainer = Trainer(b, train, val, TrainConfig(steps=12, batch_size=64, eval_every=eval_every, threads=1),
                      out=tmp_path / "run", caps=Caps(energy_joules=cap))
    meter = _counted(trainer)
    trainer.limits.planner.budget.reserve = 1.5  # the final checkpoint's prior, pinned
    def pause(seconds):
        meter.joules += pause_j

    monkeypatch.setattr(trainer_module.time, "sleep", pause)
    result = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return result, meter.joules, [r for r in rows if "val_accuracy" in r or "val_skipped" in r]


def test_a_power_cap_pause_is_time_between_steps_not_validation(bundle, data, tmp_path, monkeypatch):
    """A 5 J pause after each step: it is reserved for every step left, not charged to (and
    extrapolated over) the validation after it. Validations of 16 J every 4 steps fit the 150 J
    cap (12 steps of 1 J + 12 pauses + 3 validations = 120 J) and all run; under a 78 J cap
    with a validation of one batch after every step the run stops early inside the cap."""
    result, spent, vals = _counted_run(bundle, data, tmp_path / "a", monkeypatch, 150.0, 1024, 4, pause_j=5.0)
    assert spent <= 150.0 and [r["step"] for r in vals if "val_accuracy" in r] == [4, 8, 12]
    result, spent, vals = _counted_run(bundle, data, tmp_path / "b", monkeypatch, 78.0, 64, 1, pause_j=5.0)
    assert spent <= 78.0 and result.stopped is not None


def test_a_validation_s_first_batch_is_paid_for_before_it_runs(bundle, data, tmp_path, monkeypatch):
    """The checks before each batch cannot stop the first one: a validation starts only where a
    batch at the costliest step's energy per sample fits, whatever its estimate (here 0 J).
    12 steps of 1 J, then one batch of 1 J against a 15.5 J cap that keeps the checkpoint
    reserve (1.5 J) twice: 12 + 1 + 3 > 15.5, skipped; on the 0 J estimate alone (12 + 0 + 3)
    it would have run."""
    result, spent, vals = _counted_run(bundle, data, tmp_path, monkeypatch, 15.5, 64, 12, estimate=0.0)
    assert result.steps == 12 and spent == 12.0
    assert [r.get("val_skipped") for r in vals] == ["energy cap"]
    result, spent, vals = _counted_run(bundle, data, tmp_path / "more", monkeypatch, 16.5, 64, 12,
                                       estimate=0.0)
    assert spent == 13.0 and "val_accuracy" in vals[0]  # 12 + 1 + 3 <= 16.5: it runs


def test_an_empty_validation_set_is_refused_before_training(bundle, data):
    """A data file cannot be empty (the loaders refuse it); a Dataset from the API can."""
    class Empty:
        def __len__(self):
            return 0

    b = Bundle.open(bundle)
    with pytest.raises(UsageError, match="validation data is empty"):
        Trainer(b, load_data(b, data[0]), Empty(), TrainConfig(steps=1))


def test_the_api_refuses_a_new_run_in_a_folder_that_holds_one(bundle, data, tmp_path):
    b = Bundle.open(bundle)
    ds = load_data(b, data[0])
    Trainer(b, ds, config=TrainConfig(steps=1, batch_size=8), out=tmp_path / "run").fit()
    with pytest.raises(UsageError, match="already holds a run: pass --resume"):
        Trainer(b, ds, config=TrainConfig(steps=1, batch_size=8, lr=0.01), out=tmp_path / "run")


@training_api
def test_an_engine_refuses_what_it_cannot_do(bundle, data):
    """A request outside an engine's capabilities is an error, not a silent no-op."""
    from edgetune.optim_config import AdamWConfig
    from edgetune.train import open_engine
    from edgetune.train.engines import AdaptiveEngine, StaticEngine

    assert not StaticEngine.caps.freeze_per_step and AdaptiveEngine.caps.freeze_per_step
    b = Bundle.open(bundle)
    engine = open_engine(b, "static", threads=1)
    batch = load_data(b, data[0]).batch(np.arange(4))
    keep, some = np.full(b.num_layers, int(b.manifest["tokens"]), np.int64), np.zeros(b.num_layers, bool)
    some[-1] = True
    with pytest.raises(UsageError, match=rf"trained=\[{b.num_layers - 1}\]: the static engine trains every"):
        engine.train_step([batch], keep, some, 1e-3)
    with pytest.raises(UsageError, match="the static engine trains every layer"):
        engine.warmup(batch, keep, some)
    with pytest.raises(UsageError, match=r"weight_decay=0.1: static mode runs ORT's AdamW graph"):
        open_engine(b, "static", optim=AdamWConfig(weight_decay=0.1))
    with pytest.raises(UsageError, match=r"TrainConfig.weight_decay=0.1: static mode runs ORT's AdamW graph"):
        TrainConfig(steps=1, weight_decay=0.1, mode="static")


def test_weight_decay_is_checked_against_the_mode_picked_for_the_bundle(bundle, data):
    """``mode=""`` is decided by the bundle and the request (pick_mode), as on the command line:
    weight decay picks the engine that has it; naming a mode that cannot decay is refused."""
    b = Bundle.open(bundle)
    ds = load_data(b, data[0])
    cfg = TrainConfig(steps=1, batch_size=8, weight_decay=0.01)  # no refusal before the bundle is known
    from edgetune.runtime.ort_build import has_training_api

    # the engine that can decay is picked (static mode, where it runs, cannot); naming static
    # mode with weight decay is refused
    assert Trainer(b, ds, config=cfg).engine.mode == "adaptive"
    if has_training_api():
        with pytest.raises(UsageError, match="weight_decay=0.01: static mode"):
            TrainConfig(steps=1, batch_size=8, weight_decay=0.01, mode="static")
    adaptive_only = Bundle(b.path, {**b.manifest, "modes": ["adaptive"]})
    trainer = Trainer(adaptive_only, ds, config=cfg)
    assert trainer.engine.mode == trainer.config.mode == "adaptive"
    assert trainer.fit().steps == 1


def test_adaptive_sessions_plan_memory_per_run_not_per_shape(bundle):
    """ALaST changes the keep counts, and so the graphs' shapes, most steps: ORT's memory
    pattern (one block per shape, kept by the arena) is off for the adaptive engine's sessions
    (a 197-token ViT ALaST + LoRA run: 2448 MB with it, 1137 MB without)."""
    from edgetune.runtime.ort_env import session_options
    from edgetune.runtime.sessions import SessionCache

    assert SessionCache(bundle).options.enable_mem_pattern is False
    assert session_options().enable_mem_pattern is True  # fixed shapes (the static engine) keep it
