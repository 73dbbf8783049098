"""safetensors written and read a tensor at a time (edgetune.tensorfile): the standard format
both ways, in-place loads, clear errors, and no second copy in RSS while loading."""

import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from edgetune.errors import EdgetuneError
from edgetune.tensorfile import load_tensors, save_tensors

ARRAYS = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "t": np.asarray(7, np.int64),
          "empty": np.zeros((0, 3), np.float32), "mask": np.array([True, False])}


def same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]), k


def test_ours_read_by_safetensors_and_theirs_by_ours(tmp_path):
    save_tensors(tmp_path / "ours.safetensors", ARRAYS)
    same(load_file(str(tmp_path / "ours.safetensors")), ARRAYS)
    save_file(ARRAYS, str(tmp_path / "theirs.safetensors"))
    same(load_tensors(tmp_path / "theirs.safetensors"), ARRAYS)


def test_load_into_live_arrays_in_place(tmp_path):
    save_tensors(tmp_path / "a.safetensors", ARRAYS)
    live = {"w": np.zeros((3, 4), np.float32)}
    got = load_tensors(tmp_path / "a.safetensors", into=live)
    assert got["w"] is live["w"] and np.array_equal(live["w"], ARRAYS["w"])


@pytest.mark.parametrize("content", [b"", b"12345678", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"])
def test_a_bad_file_is_one_error_naming_it(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(EdgetuneError, match="bad.safetensors: not a readable safetensors file"):
        load_tensors(path)


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "a.safetensors"
    save_tensors(path, ARRAYS)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(EdgetuneError, match="ends early|bytes for shape|past the end of the file"):
        load_tensors(path)


def test_writing_and_loading_add_no_second_copy_to_the_peak(tmp_path):
    """A 200 MB file: the process's VmHWM rises by about one copy on load (not two, as a
    mapped file's pages or a whole-file buffer would make it) and not at all on write."""
    script = f"""
import numpy as np
from edgetune.sensors.peak import peak_rss_bytes
from edgetune.tensorfile import load_tensors, save_tensors
a = {{f"t{{i}}": np.ones(5_000_000, np.float32) for i in range(10)}}   # 200 MB
before = peak_rss_bytes()
save_tensors({str(tmp_path / 'big.safetensors')!r}, a)
wrote = peak_rss_bytes() - before
del a
base = peak_rss_bytes()
b = load_tensors({str(tmp_path / 'big.safetensors')!r})
print(wrote, peak_rss_bytes() - base)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    wrote, loaded = map(int, out.stdout.split())
    assert wrote < 20e6, wrote                 # no copy of 200 MB while writing
    assert loaded < 1.2 * 200e6, loaded        # one copy (the arrays themselves), not two


def test_a_shape_that_does_not_match_the_live_array_is_refused(tmp_path):
    save_tensors(tmp_path / "a.safetensors", {"w": np.ones(3, np.float32)})
    with pytest.raises(EdgetuneError, match=r"w: shape \(3,\) in the file, \(4,\) expected"):
        load_tensors(tmp_path / "a.safetensors", into={"w": np.zeros(4, np.float32)})
