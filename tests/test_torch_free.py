"""The device package must import and run its commands where torch does not exist (the guard
itself: tests/device_guard.py)."""

import importlib.util
import subprocess
import sys

import pytest

from device_guard import (
    BLOCKED,
    NOT_EAGER,
    blocking_env,
    import_every_device_module,
    modules_on_disk,
    workstation_imports,
)


@pytest.fixture
def no_torch_env(tmp_path):
    """PYTHONPATH with a ``torch`` (and ``onnx``) whose import fails, as on a device."""
    return blocking_env(tmp_path / "shim")


def test_every_device_module_imports_without_torch(no_torch_env):
    got = import_every_device_module(no_torch_env)
    # each module pkgutil found was imported, and pkgutil found every module file: none skipped
    on_disk = modules_on_disk(got["optional"])  # the fleet's, without flwr (Python 3.10)
    assert len(got["names"]) == len(set(got["names"])) == len(on_disk)
    assert sorted(got["names"]) == on_disk
    assert not set(BLOCKED) & set(got["loaded"])
    assert all(m.startswith("edgetune.fleet.") for m in got["optional"])
    if importlib.util.find_spec("flwr") is not None:
        assert got["optional"] == []


def test_importing_the_device_package_loads_no_torch_onnx_or_pillow():
    """Here torch, onnx and Pillow are installed: importing every device module must still not
    load them (an import inside try/except, or through a library, shows up here)."""
    got = import_every_device_module()
    assert sorted(got["names"]) == modules_on_disk(got["optional"])
    assert "numpy" in got["loaded"] and "click" in got["loaded"]   # the check sees real imports
    assert [m for m in NOT_EAGER if m in got["loaded"]] == []


def test_no_device_module_imports_the_workstation_side_anywhere():
    """Imports inside functions run only on some path of some command: read the source."""
    assert workstation_imports() == []


def test_workstation_commands_explain_the_missing_extra(no_torch_env):
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", "models"], env=no_torch_env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: this command needs the workstation extra: "
                                  "pip install 'edgetune[export]'")
