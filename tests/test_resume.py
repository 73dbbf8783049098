"""Resume and the run folder: torn files, changed settings, a folder with no run, a full disk,
two trainers on one folder, and how the command line reports what escapes."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_train import bundle, data, synthetic_images  # noqa: F401  (fixtures)

from edgetune.bundle import Bundle
from edgetune.cli import main
from edgetune.errors import DiskFullError, EdgetuneError, UsageError
from edgetune.train import TrainConfig, Trainer, load_data
from edgetune.train.runlock import LOCK, RunInUseError, RunLock

from conftest import training_api
from numerics import assert_close_normwise

STEPS = 6


class Killed(Exception):
    """Stands in for a kill: raised from a callback, after the step's metrics row is written."""


def kill_at(step):
    def callback(record):
        if record["step"] == step:
            raise Killed(step)
    return callback


@pytest.fixture(scope="module")
def sets(bundle, data):  # noqa: F811
    b = Bundle.open(bundle)
    return b, load_data(b, data[0])


def make(sets, out, resume=False, callbacks=(), **cfg):
    b, train = sets
    cfg = {"steps": STEPS, "batch_size": 8, "threads": 1, "checkpoint_every": 2, **cfg}
    return Trainer(b, cfg.pop("train", train), None, TrainConfig(**cfg), out=out, resume=resume,
                   callbacks=callbacks)


def interrupted_run(sets, out, at=5, **cfg):
    """A run stopped after step ``at`` (its last checkpoint: the even step before)."""
    with pytest.raises(Killed):
        make(sets, out, callbacks=[kill_at(at)], **cfg).fit()


@pytest.fixture(scope="module")
def clean(sets, tmp_path_factory):
    """The weights of an uninterrupted run."""
    t = make(sets, tmp_path_factory.mktemp("clean") / "run")
    t.fit()
    return t.engine.trainable_arrays()


def assert_same_weights(trainer, clean):
    got = trainer.engine.trainable_arrays()
    assert sorted(got) == sorted(clean)
    for name in clean:
        np.testing.assert_array_equal(got[name], clean[name], err_msg=name)


def metric_steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def leftovers(run):
    return sorted(p.relative_to(run).as_posix() for p in run.rglob("*")
                  if ".tmp-" in p.name or ".old-" in p.name)


def cli(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def train_args(bundle_dir, data_file, run, *extra):
    return ("train", bundle_dir, "--data", data_file, "--steps", STEPS, "--batch-size", 8, "--threads", 1,
            "--checkpoint-every", 2, "--quiet", "--out", run, *extra)


# ---- 1. torn files ---------------------------------------------------------------------------

def test_torn_metrics_lines_are_dropped_on_resume(sets, clean, tmp_path):
    run = tmp_path / "run"
    interrupted_run(sets, run)  # rows 1-5, checkpoint at 4
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    torn = lines[1][: len(lines[1]) // 2]
    metrics.write_text("\n".join([lines[0], torn, *lines[2:]]) + "\n" + '{"step": 6, "loss": 0.')
    t = make(sets, run, resume=True)
    assert t.step == 4
    t.fit()
    assert metric_steps(run) == [1, 3, 4, 5, 6]  # the torn row 2 is gone, the rest kept, none twice
    assert_same_weights(t, clean)


@pytest.mark.parametrize("victim", ["run.json", "checkpoints/last.json",
                                    "checkpoints/step-00000004/state.json"])
def test_a_torn_run_file_is_a_one_line_error_naming_it(sets, bundle, data, tmp_path, victim):  # noqa: F811
    run = tmp_path / "run"
    interrupted_run(sets, run)
    path = run / victim
    path.write_text(path.read_text()[:7])
    with pytest.raises(EdgetuneError, match="not valid JSON") as e:
        make(sets, run, resume=True)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    out = cli(*train_args(bundle, data[0], run, "--resume"))
    assert out.exit_code == 2 and str(path) in out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output


def test_checkpoint_state_with_the_wrong_shape_is_refused(sets, tmp_path):
    run = tmp_path / "run"
    interrupted_run(sets, run)
    (run / "checkpoints/step-00000004/state.json").write_text('{"step": "four"}')
    with pytest.raises(EdgetuneError, match=r"state.json: not a checkpoint state"):
        make(sets, run, resume=True)


# ---- 2. a resume must repeat the run's settings -----------------------------------------------

@pytest.mark.parametrize("change, said", [
    ({"batch_size": 4}, "batch_size=8, this run batch_size=4"),
    ({"seed": 1}, "seed=0, this run seed=1"),
    ({"steps": 8}, "steps=6, this run steps=8"),
    ({"lr": 2e-3}, "lr=0.001, this run lr=0.002"),
    pytest.param({"mode": "static"}, "mode=adaptive, this run mode=static", marks=training_api),
    ({"schedule": "alast"}, "schedule=static, this run schedule=alast"),
])
def test_resume_with_other_settings_is_refused(sets, tmp_path, change, said):
    run = tmp_path / "run"
    interrupted_run(sets, run)
    with pytest.raises(UsageError, match="^--resume: ") as e:
        make(sets, run, resume=True, **change)
    assert f"{run / 'run.json'} has {said}" in str(e.value)
    assert "drop --resume and train into another --out" in str(e.value)


def test_resume_with_other_data_or_bundle_is_refused(sets, bundle, data, tmp_path):  # noqa: F811
    b, _ = sets
    run = tmp_path / "run"
    interrupted_run(sets, run)
    with pytest.raises(UsageError, match=r"data=\S+train.npz, this run data=\S+val.npz; data.bytes=\d+, "
                                         r"this run data.bytes=\d+; data.samples=96, "
                                         r"this run data.samples=64"):
        make(sets, run, resume=True, train=load_data(b, data[1]))
    other = tmp_path / "other-bundle"  # the same files, another manifest
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "created": "another export"}))
    with pytest.raises(UsageError,
                       match=r"has bundle=\S+ \(manifest sha256 \w+\), this run bundle=\S+other-bundle"):
        Trainer(other, sets[1], None, TrainConfig(steps=STEPS, batch_size=8, threads=1), out=run, resume=True)


def test_resume_refuses_a_data_file_changed_in_place(sets, tmp_path):
    b, _ = sets
    file = synthetic_images(tmp_path / "train.npz")
    run = tmp_path / "run"
    interrupted_run(sets, run, train=load_data(b, file))
    synthetic_images(file, n=80)
    with pytest.raises(UsageError, match=r"data.samples=96, this run data.samples=80"):
        make(sets, run, resume=True, train=load_data(b, file))


def test_resume_may_change_threads_and_checkpoint_frequency(sets, clean, bundle, data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    interrupted_run(sets, run)
    out = cli(*train_args(bundle, data[0], run, "--resume", "--checkpoint-every", 3, "--threads", 2))
    assert out.exit_code == 0, out.output
    assert "resuming" in out.output and "at step 4/6" in out.output
    from edgetune.train.evaluate import open_run

    _, engine, info, _ = open_run(run, "last")
    got = engine.trainable_arrays()
    for name in clean:  # two threads may sum in another order: norm-wise (tests/numerics.py)
        assert_close_normwise(got[name], clean[name], name)
    assert info["config"]["threads"] == 2 and info["data"]["samples"] == 96
    out = cli(*train_args(bundle, data[0], run, "--resume", "--batch-size", 4))
    assert out.exit_code == 2
    assert f"error: --resume: {run / 'run.json'} has batch_size=8, this run batch_size=4" in out.output


# ---- 3. a folder that holds no run -----------------------------------------------------------

def test_resume_of_a_folder_without_a_run_is_refused(sets, bundle, data, tmp_path):  # noqa: F811
    for run in (tmp_path / "typo", tmp_path):
        with pytest.raises(UsageError, match=f"^--resume: {run} holds no run \\(no checkpoint\\); "
                                             "drop --resume to start one$"):
            make(sets, run, resume=True)
        out = cli(*train_args(bundle, data[0], run, "--resume"))
        assert out.exit_code == 2 and out.output == f"error: --resume: {run} holds no run (no checkpoint); " \
                                                     "drop --resume to start one\n"
    assert not (tmp_path / "typo").exists() and list(tmp_path.iterdir()) == []


def test_resume_before_the_first_checkpoint_starts_at_step_0(sets, clean, bundle, data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    interrupted_run(sets, run, at=1)  # run.json and one metrics row, no checkpoint
    assert (run / "run.json").exists() and not (run / "checkpoints/last.json").exists()
    out = cli(*train_args(bundle, data[0], run, "--resume"))
    assert out.exit_code == 0, out.output
    assert "no checkpoint yet (the run stopped before its first one); starting at step 0" in out.output
    assert metric_steps(run) == list(range(1, STEPS + 1))


# ---- 4. a full disk during a checkpoint ------------------------------------------------------

def _enospc(*_):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_disk(monkeypatch, trainer, point):
    """From step 3 on, the next write at ``point`` of a checkpoint fails with ENOSPC."""
    armed = {"on": False}
    real_save, real_fsync = trainer.engine.save, os.fsync

    def save(folder):
        real_save(folder)
        if armed["on"] and point == "params":
            armed["on"] = False
            (folder / "half-written.bin").write_bytes(b"\0" * 100)
            raise _enospc()

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1]
        prefix = {"state": ".state.json.tmp-", "pointer": ".last.json.tmp-"}.get(point, "-")
        if armed["on"] and name.startswith(prefix):
            armed["on"] = False
            raise _enospc()
        return real_fsync(fd)

    monkeypatch.setattr(trainer.engine, "save", save)
    monkeypatch.setattr(os, "fsync", fsync)
    trainer.callbacks.append(lambda r: armed.update(on=True) if r["step"] == 3 else None)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names a descriptor's file via /proc")
@pytest.mark.parametrize("point", ["params", "state", "pointer"])
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(sets, clean, tmp_path, monkeypatch, point):
    run = tmp_path / "run"
    t = make(sets, run)
    fill_disk(monkeypatch, t, point)
    with pytest.raises(DiskFullError) as e:
        t.fit()
    assert str(e.value) == (f"no space left on device while writing checkpoint step-00000004 in {run}; "
                            "the previous checkpoint (step-00000002) is intact: "
                            "free space and rerun with --resume")
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.json", "step-00000002"]
    assert json.loads((run / "checkpoints/last.json").read_text())["step"] == 2
    assert leftovers(run) == []
    resumed = make(sets, run, resume=True)
    assert resumed.step == 2
    resumed.fit()
    assert_same_weights(resumed, clean)
    assert metric_steps(run) == list(range(1, STEPS + 1))


def test_full_disk_is_one_line_from_the_cli(bundle, data, tmp_path, monkeypatch):  # noqa: F811
    from edgetune.bundle import Bundle
    from edgetune.engine_caps import pick_mode
    from edgetune.train.modes import engine_class

    engine = engine_class(pick_mode("static", Bundle.open(bundle).modes, False))  # what train runs
    real = engine.save

    def save(self, folder):
        if folder.name.startswith(".step-00000004"):
            raise _enospc()
        real(self, folder)

    monkeypatch.setattr(engine, "save", save)
    run = tmp_path / "run"
    out = cli(*train_args(bundle, data[0], run))
    assert out.exit_code == 2
    assert out.output.splitlines()[-1] == (f"error: no space left on device while writing checkpoint "
                                           f"step-00000004 in {run}; the previous checkpoint (step-00000002) "
                                           "is intact: free space and rerun with --resume")
    assert "Traceback" not in out.output and leftovers(run) == []


def test_full_disk_writing_metrics_is_one_line(tmp_path, monkeypatch):
    from edgetune.train.progress import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log._f.close()
    monkeypatch.setattr(log, "_f", _FullFile())
    with pytest.raises(DiskFullError, match=f"while writing {tmp_path / 'metrics.jsonl'}: free space "
                                            "and rerun with --resume"):
        log.write({"step": 1})
    assert log._f.closed
    log.close()  # nothing left to flush: no second error


class _FullFile:
    closed = False

    def write(self, text):
        raise _enospc()

    def flush(self):
        pass

    def close(self):
        self.closed = True


# ---- 5. one trainer per run folder -----------------------------------------------------------

def test_a_held_run_folder_is_refused(sets, bundle, data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    waiting = make(sets, run)  # built before the lock is taken: fit() refuses
    with RunLock(run):
        said = f"{run} is in use by another edgetune process (pid {os.getpid()}, holding {run / LOCK})"
        with pytest.raises(RunInUseError) as e:
            make(sets, run)
        assert str(e.value).startswith(said)
        with pytest.raises(RunInUseError, match="wait for it to end, or train into another --out"):
            waiting.fit()
        out = cli(*train_args(bundle, data[0], run))
        assert out.exit_code == 2 and out.output == f"error: {e.value}\n"
    waiting.fit()  # released: free again
    assert (run / LOCK).read_text() == ""  # the pid goes with the lock


def test_a_lock_held_by_another_process_dies_with_it(sets, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom edgetune.train.runlock import RunLock\n"
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
         str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUseError, match=f"pid {holder.pid}, holding"):
            make(sets, run)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert (run / LOCK).read_text().strip() == str(holder.pid)  # left behind by the kill ...
    make(sets, run).fit()  # ... and blocks nobody


def test_a_stale_lock_file_does_not_block_and_an_error_releases_the_lock(sets, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text("999999999\n")
    interrupted_run(sets, run)  # an error inside fit() ...
    with RunLock(run):  # ... released the lock
        pass


# ---- 6. what escapes the command line --------------------------------------------------------

@pytest.fixture
def broken_models(monkeypatch):
    import edgetune.cli

    def fail(exc):
        def table(*_):
            raise exc
        monkeypatch.setattr(edgetune.cli, "_table", table)
    return fail


def test_an_internal_error_is_one_line_and_exit_1(broken_models):
    broken_models(RuntimeError("boom\n  more detail"))
    out = cli("devices")
    assert out.exit_code == 1
    assert out.output == "error: RuntimeError: boom more detail (run with --debug for the traceback)\n"
    for args, env in ((["--debug", "devices"], {}), (["devices"], {"EDGETUNE_DEBUG": "1"})):
        out = cli(*args, env=env)
        assert isinstance(out.exception, RuntimeError) and out.output == ""  # the traceback is Python's
    assert cli("devices", env={"EDGETUNE_DEBUG": "0"}).exit_code == 1


def test_ctrl_c_is_one_line_and_exit_130(broken_models):
    broken_models(KeyboardInterrupt())
    out = cli("devices")
    assert (out.exit_code, out.output) == (130, "interrupted\n")


def test_a_user_error_stays_exit_2(broken_models):
    broken_models(UsageError("x=1: must be 2"))
    out = cli("devices")
    assert (out.exit_code, out.output) == (2, "error: x=1: must be 2\n")


def test_a_real_internal_error_in_a_subprocess(bundle, tmp_path):  # noqa: F811
    """``plan`` on a hand-edited manifest that lacks a field: a KeyError deep inside."""
    exe = Path(sys.executable).parent / "edgetune"
    if not exe.exists():
        pytest.skip("no edgetune console script beside this Python")
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    del manifest["tokens"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    env = {k: v for k, v in os.environ.items() if k != "EDGETUNE_DEBUG"}
    out = subprocess.run([str(exe), "plan", str(broken)], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert out.stderr == "error: KeyError: 'tokens' (run with --debug for the traceback)\n"
    out = subprocess.run([str(exe), "--debug", "plan", str(broken)], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert out.stderr.startswith("Traceback") and out.stderr.strip().endswith("KeyError: 'tokens'")



# ---- 7. the run folder, and what a resumed process measures ----------------------------------

def test_the_run_folder_finds_its_files_and_checkpoints(tmp_path):
    from edgetune.train import RunFolder

    folder = RunFolder(tmp_path / "run")
    assert not folder.has_info() and folder.metrics() == [] and folder.checkpoint("best") is None
    with pytest.raises(EdgetuneError, match="no such run folder"):
        folder.read_info()
    folder.write_info({"bundle": "b"})
    assert folder.read_info() == {"bundle": "b"} and folder.info_file == tmp_path / "run" / "run.json"
    log = folder.metrics_log()
    log.write({"step": 1, "loss": 0.5})
    log.close()
    assert folder.metrics() == [{"step": 1, "loss": 0.5}]

    def save(step, tags):
        folder.checkpoints.save(step, lambda tmp: None, {"step": step, "mode": "static"}, tags)

    save(2, ("last",))
    # best falls back to last
    assert folder.checkpoint("best").name == folder.checkpoint("last").name == "step-00000002"
    save(4, ("best",))
    save(6, ("last",))
    assert folder.checkpoint("best").name == "step-00000004"
    assert folder.checkpoint("last").name == "step-00000006"
    assert folder.state(folder.checkpoint("step-00000004"))["step"] == 4
    with pytest.raises(UsageError,
                       match=r"checkpoint='step-9': .* \(best, last, step-00000004, step-00000006\)"):
        folder.checkpoint("step-9")


def test_a_resumed_run_reports_time_per_step_over_the_steps_it_ran(sets, tmp_path):
    run = tmp_path / "run"
    interrupted_run(sets, run)  # checkpoint at 4: the resumed process runs steps 5 and 6
    result = make(sets, run, resume=True).fit()
    assert result.steps == STEPS and result.steps_run == 2
    assert result.seconds_per_step == pytest.approx(result.seconds / 2)


def test_the_cli_summary_divides_by_the_steps_this_process_ran(sets, bundle, data, tmp_path, monkeypatch):  # noqa: F811
    from edgetune.train import TrainResult

    done = TrainResult(steps=STEPS, final_loss=0.5, best_accuracy=None, seconds=1.0, peak_rss_mb=1.0,
                       steps_run=2)
    monkeypatch.setattr(Trainer, "fit", lambda self: done)
    out = cli(*train_args(bundle, data[0], tmp_path / "run"))
    assert out.exit_code == 0, out.output
    assert f"{STEPS} steps, loss 0.5000, 0.500 s/step" in out.output


def test_a_capped_resume_warms_up_after_loading_and_keeps_its_measurement(sets, tmp_path):
    """The warm-up's RSS calibrates the resumed run: it is measured after the checkpoint
    loaded (the engine rebuilt), and the planner's state loaded does not erase it."""
    from edgetune.caps.limits import Caps

    run, caps = tmp_path / "run", Caps.parse(ram="64GB")
    b, train = sets
    cfg = TrainConfig(steps=STEPS, batch_size=8, threads=1, checkpoint_every=2, mode="adaptive")
    with pytest.raises(Killed):
        Trainer(b, train, None, cfg, out=run, caps=caps, callbacks=[kill_at(5)]).fit()
    resumed = Trainer(b, train, None, cfg, out=run, caps=caps, resume=True)
    assert resumed.step == 4 and resumed.planner.memory.idle is not None
    assert resumed.fit().steps == STEPS
