"""The command line: listings, what each command prints and writes, and one-line errors with
exit code 2."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgetune.cli import main
from edgetune.export import list_methods, list_models


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_models_lists_every_registered_model():
    out = run("models")
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert lines[0].split() == ["model", "family", "task", "description"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(m.name for m in list_models())


def test_methods_lists_every_method_with_its_options():
    out = run("methods")
    assert out.exit_code == 0
    rows = {line.split()[0]: line for line in out.output.splitlines()[1:]}
    assert sorted(rows) == sorted(m.name for m in list_methods())
    assert "r=8" in rows["lora"] and "alpha=16.0" in rows["lora"]
    assert "degree=15" in rows["propulsion"]


def test_unknown_command_is_a_usage_error():
    out = run("fnord")
    assert out.exit_code == 2
    assert out.stderr.splitlines()[-1] == "Error: No such command 'fnord'."
    assert out.stdout == ""


def test_export_pooling_on_a_vision_model_is_a_one_line_error(tmp_path):
    out = run("export", "vit-micro", "--method", "lora", "--num-classes", "2",
              "--out", str(tmp_path / "b"), "--pooling", "mean")
    assert out.exit_code == 2
    assert "pooling='mean': only BERT models choose their pooling" in out.output
    assert "Traceback" not in out.output and not (tmp_path / "b").exists()


# ---- the commands end to end, in this process (torch-free runs: tests/test_train.py) --------

@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """A vit-micro LoRA bundle from `export`, 32 labelled images, and a 2-step run of `train`."""
    tmp = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 32)
    x = (rng.integers(0, 160, (32, 32, 32, 3)) + 80 * y[:, None, None, None]).astype(np.uint8)
    np.savez(tmp / "data.npz", x=x, y=y)
    bundle, run_dir = tmp / "bundle", tmp / "run"
    exported = run("export", "vit-micro", "--method", "lora", "--set", "r=2", "--num-classes", "2",
                   "--out", str(bundle))
    trained = run("train", str(bundle), "--data", str(tmp / "data.npz"), "--val", str(tmp / "data.npz"),
                  "--steps", "2", "--batch-size", "8", "--threads", "1", "--out", str(run_dir), "--quiet")
    return tmp, bundle, run_dir, exported, trained


def test_export_prints_the_bundle_and_writes_both_modes(flow):
    _, bundle, _, out, _ = flow
    assert out.exit_code == 0, out.output
    assert out.stdout == f"{bundle}\n"
    assert out.stderr.splitlines()[-1].startswith(f"wrote {bundle} in ")
    assert sorted(p.name for p in bundle.iterdir()) == ["adaptive", "inference", "manifest.json", "static"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["model"]["name"], manifest["method"]["name"]) == ("vit-micro", "lora")
    assert manifest["method"]["config"]["r"] == 2


def test_train_prints_one_summary_line_and_writes_the_run(flow):
    _, _, run_dir, _, out = flow
    assert out.exit_code == 0, out.output
    line = out.stdout.strip()
    assert len(out.stdout.splitlines()) == 1 and line.startswith(f"{run_dir}: 2 steps, loss ")
    assert " s/step, peak RSS " in line and " MB, " in line and ", best val accuracy 0." in line
    assert [json.loads(r)["step"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((run_dir / "checkpoints" / "last.json").read_text()) == {
        "checkpoint": "step-00000002", "step": 2}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["data"]["samples"] == 32 and info["config"]["steps"] == 2


def test_eval_json_scores_the_best_checkpoint(flow):
    tmp, _, run_dir, _, trained = flow
    out = run("eval", str(run_dir), "--data", str(tmp / "data.npz"), "--json")
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["source"] == f"{run_dir} (step-00000002)" and res["count"] == 32
    # the same data was the validation set: the accuracy train reported for its best checkpoint
    assert f"best val accuracy {res['accuracy']:.4f}" in trained.stdout
    text = run("eval", str(run_dir), "--data", str(tmp / "data.npz"))
    assert text.stdout == (f"{res['source']}: accuracy {res['accuracy']:.4f}, loss {res['loss']:.4f} "
                           "on 32 samples (every token)\n")


def test_merge_writes_the_inference_model_and_the_adapter(flow):
    _, _, run_dir, _, _ = flow
    out = run("merge", str(run_dir), "--out", str(run_dir / "m"))
    assert out.exit_code == 0, out.output
    assert out.stdout == f"{run_dir / 'm'}\n"
    assert sorted(p.name for p in (run_dir / "m").iterdir()) == ["adapter", "inference.onnx", "merged.json"]
    assert sorted(p.name for p in (run_dir / "m" / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    again = run("merge", str(run_dir), "--out", str(run_dir / "m"))
    assert (again.exit_code, again.stderr) == (
        2, f"error: {run_dir / 'm'} exists; pass --overwrite to replace it\n")


def test_plan_prints_the_plan_under_the_caps(flow):
    _, bundle, _, _, _ = flow
    out = run("plan", str(bundle), "--device", "raspberry-pi-5", "--ram-cap", "600MB", "--batch-size", "8")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == ("vit-micro on raspberry-pi-5: schedule alast, batch 8, 17 tokens, 1 step(s); "
                        "caps: ram <= 600MB")
    assert any(line.startswith("predicted peak RSS ") and "(limit 570MB after a 5% margin)" in line
               for line in lines)
    assert json.loads(run("plan", str(bundle), "--json").stdout)["device"]


def test_devices_lists_every_profile_and_marks_this_machine():
    from edgetune.devices import detect, list_devices

    out = run("devices")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["device", "RAM", "cores", "GFLOP/s", "power", "sensors"]
    rows = [line.split()[0] for line in lines[1:1 + len(list_devices())]]
    found = detect().profile.name
    assert rows == [("*" if p.name == found else "") + p.name for p in list_devices()]
    assert f"this machine: {found} (" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["train", "{bundle}", "--data", "{tmp}/data.npz", "--steps", "1", "--out", "{run}"],
     "error: {run} already holds a run: pass --resume to continue it, or another --out"),
    (["train", "{bundle}", "--data", "{tmp}/data.npz", "--steps", "1", "--out", "{tmp}/none", "--resume"],
     "error: --resume: {tmp}/none holds no run (no checkpoint); drop --resume to start one"),
    (["train", "{bundle}", "--data", "{tmp}/nope.csv", "--steps", "1", "--out", "{tmp}/fresh"],
     "error: {tmp}/nope.csv: no such file or folder"),
    (["eval", "{run}", "--data", "{tmp}/nope.csv"], "error: {tmp}/nope.csv: no such file or folder"),
    (["train", "{bundle}", "--data", "{tmp}/data.npz", "--steps", "1", "--out", "{tmp}/fresh",
      "--ram-cap", "lots"], "error: --ram-cap='lots': not a number with a unit; write e.g. 600MB or 1.5GiB"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(flow, args, message):
    tmp, bundle, run_dir, _, _ = flow
    names = {"bundle": bundle, "run": run_dir, "tmp": tmp}
    before = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*"))
    out = run(*[a.format(**names) for a in args])
    assert out.exit_code == 2 and out.stdout == ""
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr
    assert out.stderr == message.format(**names) + "\n"
    assert sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")) == before
