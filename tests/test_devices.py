"""Device profiles (devices/*.toml) and guessing the machine from fake filesystem roots."""

import shutil

import pytest

from edgetune.devices import (
    DeviceProfile,
    detect,
    detect_device,
    device_registry,
    get_device,
    list_devices,
    load_profile,
)
from edgetune.errors import EdgetuneError, UsageError

NAMES = ["cuda-gpu", "generic-arm64", "generic-x86", "jetson-nano", "jetson-orin-nano", "raspberry-pi-5"]
GIB = 1 << 30


def test_all_six_profiles_load():
    assert [p.name for p in list_devices()] == NAMES


def test_profile_figures():
    orin = get_device("jetson-orin-nano")
    assert (orin.ram_bytes, orin.cores, orin.peak_gflops) == (8 * GIB, 6, 1280.0)
    assert orin.joules_per_gflop == pytest.approx(15.0 / 1280.0)   # derived: active / peak
    assert orin.sensors == ("ina3221", "psutil") and orin.accelerator == "cuda"
    pi = get_device("raspberry-pi-5")
    assert pi.peak_gflops == pytest.approx(4 * 2.4 * 16)              # cores · GHz · FLOP/cycle
    assert pi.cpu_peak_gflops == pi.peak_gflops                       # defaults to peak
    assert pi.sensors == ("psutil",)
    gpu = get_device("cuda-gpu")
    assert gpu.accelerator_memory_bytes == 24 * GIB and "nvml" in gpu.sensors
    assert "rapl" in get_device("generic-x86").sensors
    for p in list_devices():
        assert 0 <= p.idle_watts < p.active_watts and p.ram_bytes > GIB and p.cores >= 4


def test_power_and_energy_models():
    pi = get_device("raspberry-pi-5")                 # 2.7 W idle, 8.0 W active
    assert pi.power_watts(0.5) == pytest.approx(2.7 + 0.5 * 5.3)
    assert pi.power_watts(2.0) == pytest.approx(8.0)  # utilisation clipped to 1
    orin = get_device("jetson-orin-nano")
    assert orin.flops_joules(1.28e12) == pytest.approx(15.0)   # 1280 GFLOP at 15/1280 J/GFLOP


def test_unknown_name_suggests_the_close_one():
    with pytest.raises(UsageError, match="unknown device 'raspbery-pi-5'; did you mean 'raspberry-pi-5'"):
        get_device("raspbery-pi-5")


GOOD = """
name = "{name}"
description = "test board"
ram_gib = 2
cores = 4
peak_gflops = 100.0
idle_watts = 1.0
active_watts = 5.0
sensors = ["psutil"]
"""


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_profile_by_path_and_custom_folder(tmp_path):
    path = write(tmp_path, "my-board", GOOD.format(name="my-board"))
    p = get_device(str(path))
    assert (p.ram_bytes, p.joules_per_gflop, p.path) == (2 * GIB, 0.05, str(path))
    assert device_registry([tmp_path]).names() == ["my-board"]
    with pytest.raises(EdgetuneError, match="no device profiles"):
        get_device("my-board", dirs=[tmp_path / "empty"])


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("cores = 4", "cores = 0"), "DeviceProfile.cores=0: must be an integer >= 1"),
    (lambda t: t.replace("ram_gib", "ram_gb"), "unknown DeviceProfile key 'ram_gb'"),
    (lambda t: t.replace("peak_gflops = 100.0\n", ""), "missing required key(s): peak_gflops"),
    (lambda t: t.replace('["psutil"]', '["rapll"]'), "'rapll' must be one of rapl, ina3221, nvml, psutil"),
    (lambda t: t.replace("active_watts = 5.0", "active_watts = 0.5"),
     "active_watts=0.5: must be >= idle_watts=1.0"),
    (lambda t: t.replace('name = "my-board"', 'name = "other"'),
     "name='other' must match the file name 'my-board'"),
    (lambda t: t + "\n[detect]\nmodle = ['x']\n",
     "unknown DetectRules [detect] key 'modle'; did you mean 'model'"),
    (lambda t: t + "ram_bytes = 5\n", "give ram_bytes or ram_gib, not both"),
    (lambda t: t + "= broken", "invalid TOML"),
])
def test_bad_profiles_name_file_field_and_allowed_values(tmp_path, edit, message):
    path = write(tmp_path, "my-board", edit(GOOD.format(name="my-board")))
    with pytest.raises(UsageError) as e:
        load_profile(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


# ---- detection on fake roots -----------------------------------------------------------------

def no_which(_name):
    return None


def fake_root(tmp_path, files):
    for rel, content in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            p.mkdir()
        else:
            p.write_bytes(content)
    return tmp_path


@pytest.mark.parametrize("files,expected", [
    ({"proc/device-tree/model": b"NVIDIA Jetson Orin Nano Developer Kit\x00"}, "jetson-orin-nano"),
    ({"proc/device-tree/model": b"NVIDIA Jetson Nano Developer Kit\x00"}, "jetson-nano"),
    ({"sys/firmware/devicetree/base/model": b"Raspberry Pi 5 Model B Rev 1.0\x00"}, "raspberry-pi-5"),
    ({"etc/nv_tegra_release": b"# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref\n"},
     "jetson-nano"),
    ({"etc/nv_tegra_release": b"# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic\n"},
     "jetson-orin-nano"),
    ({"proc/driver/nvidia/gpus/0000:01:00.0/information": b"Model: NVIDIA GeForce RTX 4090\n"},
     "cuda-gpu"),
    ({}, "generic-arm64"),
    ({"proc/device-tree/model": b"Raspberry Pi 4 Model B Rev 1.4\x00"}, "generic-arm64"),
])
def test_detect_from_fake_root(tmp_path, files, expected):
    # an aarch64 CPU, so that falling through every rule (to the fallback, generic-x86) fails
    assert detect_device(fake_root(tmp_path, files), which=no_which, arch="aarch64").name == expected


def test_detect_explains_itself_and_uses_nvidia_smi(tmp_path):
    d = detect(tmp_path, which=lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert (d.profile.name, d.reason) == ("cuda-gpu", "/usr/bin/nvidia-smi")
    d = detect(fake_root(tmp_path, {"proc/device-tree/model": b"Raspberry Pi 4 Model B\x00"}),
               which=no_which, arch="x86_64")  # the architecture given: the test runs on any CPU
    assert d.profile.name == "generic-x86" and "Raspberry Pi 4 Model B" in d.reason


def test_detect_on_a_fake_root_ignores_the_real_path(tmp_path, monkeypatch):
    """With a non-/ root and no ``which``, nothing on this machine's PATH leaks in. An
    nvidia-smi on PATH would make it a cuda-gpu, and the architecture picks arm64 (not the
    fallback), so a leak, or detection falling through to the fallback, fails here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    root = tmp_path / "root"
    root.mkdir()
    assert detect(root, which=shutil.which, arch="aarch64").profile.name == "cuda-gpu"  # what a leak gives
    d = detect(root, arch="aarch64")
    assert (d.profile.name, d.reason) == ("generic-arm64", "no known board or GPU found, a aarch64 CPU")


def test_detect_the_real_machine_returns_a_known_profile():
    assert detect_device().name in NAMES


def test_profiles_validate_when_built_in_code():
    with pytest.raises(UsageError, match="DeviceProfile.accelerator='tpu': must be one of cpu, cuda"):
        DeviceProfile("x", "", 1, 1, 1.0, 0.0, 1.0, accelerator="tpu")


# ---- this machine's RAM and cores -----------------------------------------------------------

MEMINFO_24G = b"MemTotal:       24683584 kB\nMemFree:        24000000 kB\n"
CPUINFO_2 = b"processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n"


def test_a_detected_generic_profile_takes_the_machines_ram_and_cores(tmp_path):
    root = fake_root(tmp_path, {"proc/meminfo": MEMINFO_24G, "proc/cpuinfo": CPUINFO_2})
    d = detect(root, which=no_which, arch="x86_64")
    generic = get_device("generic-x86")
    assert d.profile.name == "generic-x86"
    assert (d.profile.ram_bytes, d.profile.cores) == (24683584 * 1024, 2)
    assert d.profile.peak_gflops == pytest.approx(generic.peak_gflops * 2 / generic.cores)
    assert d.profile.joules_per_gflop == generic.joules_per_gflop     # energy per FLOP: the file's
    assert "RAM 23.5 GiB and 2 cores read from this machine" == d.machine


def test_cgroup_limits_cap_what_the_machine_reports(tmp_path):
    root = fake_root(tmp_path, {"proc/meminfo": MEMINFO_24G, "proc/cpuinfo": CPUINFO_2 * 4,
                                "sys/fs/cgroup/memory.max": b"2147483648\n",
                                "sys/fs/cgroup/cpu.max": b"150000 100000\n"})
    p = detect_device(root, which=no_which)
    assert (p.ram_bytes, p.cores) == (2 * GIB, 2)
    root2 = fake_root(tmp_path / "b", {"proc/meminfo": MEMINFO_24G, "sys/fs/cgroup/memory.max": b"max\n"})
    assert detect_device(root2, which=no_which).ram_bytes == 24683584 * 1024


def test_a_gpu_profile_scales_only_its_cpu_peak(tmp_path):
    root = fake_root(tmp_path, {"proc/driver/nvidia/gpus/0/information": b"Model: X\n",
                                "proc/cpuinfo": CPUINFO_2})
    gpu, file = detect_device(root, which=no_which), get_device("cuda-gpu")
    assert gpu.peak_gflops == file.peak_gflops                        # the GPU's, untouched
    assert gpu.cpu_peak_gflops == pytest.approx(file.cpu_peak_gflops * 2 / file.cores)
    assert gpu.ram_bytes == file.ram_bytes                            # no meminfo: the file's


def test_the_real_machine_is_planned_with_its_own_ram_and_cores():
    import math
    import os
    from pathlib import Path

    import psutil

    from edgetune.machine import cgroup_cpu_limit, cgroup_memory_limit

    p = detect_device()
    assert p.ram_bytes == min(psutil.virtual_memory().total, cgroup_memory_limit(Path("/")) or math.inf)
    assert p.cores == min(len(os.sched_getaffinity(0)), cgroup_cpu_limit(Path("/")) or math.inf)


def test_a_generic_profile_by_cpu_architecture_when_no_board_matches(tmp_path):
    assert detect_device(tmp_path, which=no_which, arch="aarch64").name == "generic-arm64"
    assert detect_device(tmp_path, which=no_which, arch="x86_64").name == "generic-x86"
    assert detect_device(tmp_path, which=no_which, arch="riscv64").name == "generic-x86"   # fallback
    pi = fake_root(tmp_path / "pi", {"proc/device-tree/model": b"Raspberry Pi 5 Model B Rev 1.0\x00"})
    assert detect_device(pi, which=no_which, arch="aarch64").name == "raspberry-pi-5"    # the board wins
    d = detect(tmp_path, which=no_which, arch="aarch64")
    assert "aarch64 CPU" in d.reason
