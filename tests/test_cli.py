"""The command line: listings, and one-line errors with exit code 2."""

from click.testing import CliRunner

from edgetune.cli import main
from edgetune.export import list_methods, list_models


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_models_lists_every_registered_model():
    out = run("models")
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert lines[0].split() == ["model", "family", "description"]
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


def test_export_pooling_on_a_vision_model_is_a_one_line_error(tmp_path):
    out = run("export", "vit-micro", "--method", "lora", "--num-classes", "2",
              "--out", str(tmp_path / "b"), "--pooling", "mean")
    assert out.exit_code == 2
    assert "pooling='mean': only BERT models choose their pooling" in out.output
    assert "Traceback" not in out.output and not (tmp_path / "b").exists()
