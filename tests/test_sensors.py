"""Energy and memory readers, run on fake sysfs trees built here; numbers worked out by hand."""

import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from edgetune.devices import get_device
from edgetune.errors import EdgetuneError, UsageError
from edgetune.sensors import (
    Ina3221Meter,
    ModelledMeter,
    NvmlMeter,
    RaplMeter,
    SensorEnv,
    available_memory_bytes,
    counter_delta,
    find_rails,
    make_energy_meter,
    probe_sensors,
    process_rss_bytes,
    total_memory_bytes,
)
from edgetune.sensors import nvml as nvml_module

MAX_UJ = 262143328850  # a real package max_energy_range_uj


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def put(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


# ---- RAPL ------------------------------------------------------------------------------------

def rapl_domain(root, dirname, name, energy, max_range=MAX_UJ):
    d = root / dirname
    put(d / "name", name)
    put(d / "energy_uj", energy)
    put(d / "max_energy_range_uj", max_range)
    return d


@pytest.fixture
def powercap(tmp_path):
    root = tmp_path / "sys/class/powercap"
    rapl_domain(root, "intel-rapl:0", "package-0", 1_000_000)
    rapl_domain(root, "intel-rapl:0/intel-rapl:0:0", "core", 500_000)      # inside the package
    rapl_domain(root, "intel-rapl:0:0", "core", 500_000)
    rapl_domain(root, "intel-rapl:0:1", "uncore", 100_000)
    rapl_domain(root, "intel-rapl:0:2", "dram", 2_000_000)
    rapl_domain(root, "intel-rapl:1", "package-1", MAX_UJ - 1_000_000)      # about to wrap
    rapl_domain(root, "intel-rapl-mmio:0", "package-0", 9)                  # duplicate: ignored
    return root


def test_counter_delta_handles_wraparound():
    assert counter_delta(100, 250, 1000) == 150
    assert counter_delta(900, 100, 1000) == 200   # 1000 − 900 + 100


def test_rapl_sums_packages_and_dram_across_a_wrap(powercap):
    meter = RaplMeter(powercap)
    assert [d.name for d in meter.domains] == ["package-0", "dram", "package-1"]
    assert meter.available()
    meter.start()
    put(powercap / "intel-rapl:0/energy_uj", 3_500_000)       # +2.5 J
    put(powercap / "intel-rapl:0:2/energy_uj", 2_500_000)     # +0.5 J
    put(powercap / "intel-rapl:1/energy_uj", 2_000_000)       # wrapped: 1 J + 2 J = +3 J
    put(powercap / "intel-rapl:0:0/energy_uj", 9_000_000)     # core: not counted
    assert meter.read_joules() == pytest.approx(6.0)
    assert meter.read_joules() == pytest.approx(6.0)          # nothing moved
    put(powercap / "intel-rapl:1/energy_uj", 3_000_000)       # +1 J
    assert meter.read_joules() == pytest.approx(7.0)
    assert meter.describe() == "rapl (package-0, dram, package-1)"


def test_rapl_prefers_psys_and_takes_explicit_domains(powercap):
    rapl_domain(powercap, "intel-rapl:2", "psys", 0)
    assert [d.name for d in RaplMeter(powercap).domains] == ["psys"]
    assert [d.name for d in RaplMeter(powercap, domains=["dram"]).domains] == ["dram"]
    with pytest.raises(UsageError, match="RAPL domain 'gpu': not under .* \\(found: core, dram, "):
        RaplMeter(powercap, domains=["gpu"])


def test_rapl_unavailable_without_domains_or_readable_counters(tmp_path, powercap):
    assert not RaplMeter(tmp_path / "nothing").available()
    (powercap / "intel-rapl:0/energy_uj").unlink()
    (powercap / "intel-rapl:0/energy_uj").mkdir()                # reading it fails (even as root)
    meter = RaplMeter(powercap)
    assert not meter.available() and "energy_uj" in meter.why_unavailable()


def test_reading_before_start_is_an_error(powercap):
    with pytest.raises(EdgetuneError, match="call start\\(\\) before read_joules\\(\\)"):
        RaplMeter(powercap).read_joules()


# ---- Jetson INA3221 --------------------------------------------------------------------------

@pytest.fixture
def nano_sysfs(tmp_path):
    """L4T R32 (Jetson Nano): the ina3221x IIO driver, power in mW."""
    dev = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for c, (rail, mw) in enumerate([("POM_5V_IN", 3500), ("POM_5V_GPU", 500), ("POM_5V_CPU", 1000)]):
        put(dev / f"rail_name_{c}", rail)
        put(dev / f"in_power{c}_input", mw)
    return tmp_path / "sys"


@pytest.fixture
def orin_sysfs(tmp_path):
    """JetPack 5/6 (Orin): hwmon driver, bus mV × mA, reachable through two symlinks."""
    sys = tmp_path / "sys"
    real = sys / "devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon1"
    put(real / "name", "ina3221")
    for c, (label, mv, ma) in enumerate(
            [("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 400), ("VDD_SOC", 5000, 300)], start=1):
        put(real / f"in{c}_label", label)
        put(real / f"in{c}_input", mv)
        put(real / f"curr{c}_input", ma)
        put(real / f"in{c + 3}_input", 12)        # shunt voltages: not rails
    thermal = sys / "devices/virtual/thermal/hwmon0"
    put(thermal / "name", "thermal")
    put(thermal / "temp1_input", 45000)
    for link, target in [("class/hwmon/hwmon1", real), ("class/hwmon/hwmon0", thermal),
                         ("bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1", real)]:
        (sys / link).parent.mkdir(parents=True, exist_ok=True)
        (sys / link).symlink_to(target)
    return sys


def test_ina3221_iio_uses_the_input_rail_alone(nano_sysfs):
    assert [r.label for r in find_rails(nano_sysfs)] == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
    meter = Ina3221Meter(nano_sysfs)
    assert meter.available() and meter.read_watts() == pytest.approx(3.5)
    assert Ina3221Meter(nano_sysfs, rails=["POM_5V_GPU", "POM_5V_CPU"]).read_watts() == pytest.approx(1.5)


def test_ina3221_integrates_power_by_trapezoids(nano_sysfs):
    clock = Clock()
    meter = Ina3221Meter(nano_sysfs, clock=clock)
    meter.start()                                           # t=0, 3.5 W
    clock.t = 2.0
    put(nano_sysfs / "bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power0_input", 4500)
    assert meter.read_joules() == pytest.approx(8.0)        # (3.5 + 4.5)/2 · 2 s
    clock.t = 3.0
    assert meter.read_joules() == pytest.approx(12.5)       # + 4.5 W · 1 s


def test_ina3221_hwmon_multiplies_millivolts_by_milliamps_once_per_chip(orin_sysfs):
    rails = find_rails(orin_sysfs)
    assert [r.label for r in rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]  # not twice
    meter = Ina3221Meter(orin_sysfs)
    assert meter.read_watts() == pytest.approx(6.0)         # 5000 mV · 1200 mA
    assert meter.describe() == "ina3221 (VDD_IN)"
    both = Ina3221Meter(orin_sysfs, rails=["VDD_CPU_GPU_CV", "VDD_SOC"])
    assert both.read_watts() == pytest.approx(3.5)          # 5 V · (0.4 + 0.3) A


def test_ina3221_without_an_input_rail_sums_all_and_skips_unconnected(tmp_path):
    dev = tmp_path / "sys/class/hwmon/hwmon2"
    put(dev / "name", "ina3221")
    for c, (label, mv, ma) in enumerate([("GPU", 1000, 2000), ("CPU", 1000, 1000), ("NC", 1000, 9)], 1):
        put(dev / f"in{c}_label", label)
        put(dev / f"in{c}_input", mv)
        put(dev / f"curr{c}_input", ma)
    assert Ina3221Meter(tmp_path / "sys").read_watts() == pytest.approx(3.0)


def test_ina3221_unavailable_and_unknown_rail(tmp_path, nano_sysfs):
    assert not Ina3221Meter(tmp_path / "empty").available()
    with pytest.raises(UsageError, match="INA3221 rail 'VDD_IN': not under"):
        Ina3221Meter(nano_sysfs, rails=["VDD_IN"])


# ---- NVML ------------------------------------------------------------------------------------

class FakeNvml:
    """pynvml's surface as NvmlMeter uses it; energy in mJ, power in mW."""

    def __init__(self, energy=None, power=None):
        self.energy, self.power = list(energy or []), list(power or [])

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        if index != 0:
            raise RuntimeError("Invalid Argument")
        return "gpu0"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.energy:
            raise RuntimeError("Not Supported")
        return self.energy.pop(0) if len(self.energy) > 1 else self.energy[0]

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.power.pop(0) if len(self.power) > 1 else (self.power or [50_000])[0]


def test_nvml_energy_counter():
    # the probe reads power; start() reads the counter twice (support check, then start)
    meter = NvmlMeter(nvml=FakeNvml(energy=[1000, 1000, 4000]))
    assert meter.available()
    meter.start()
    assert meter.read_joules() == pytest.approx(3.0)        # 3000 mJ
    assert meter.describe() == "nvml (GPU 0, energy counter)"


def test_nvml_power_fallback_on_old_gpus():
    clock = Clock()
    meter = NvmlMeter(nvml=FakeNvml(power=[100_000, 200_000]), clock=clock)
    meter.start()                                           # 100 W at t=0
    clock.t = 2.0
    assert meter.read_joules() == pytest.approx(300.0)      # (100 + 200)/2 · 2 s
    assert meter.mode == "power"


def test_nvml_unavailable(monkeypatch):
    assert not NvmlMeter(index=1, nvml=FakeNvml()).available()

    def missing():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(nvml_module, "_load_pynvml", missing)
    meter = NvmlMeter()
    assert not meter.available() and meter.why_unavailable() == "pynvml is not installed"


# ---- modelled ----------------------------------------------------------------------------------

def test_modelled_power_from_profile():
    pi, clock = get_device("raspberry-pi-5"), Clock()      # 2.7 W idle, 8.0 W active
    meter = ModelledMeter(pi, utilisation=0.5, clock=clock)
    meter.start()
    clock.t = 10.0
    assert meter.read_joules() == pytest.approx(53.5)       # (2.7 + 5.3·0.5) W · 10 s
    us = iter([0.0, 0.0, 1.0])                              # start, then interval means
    meter = ModelledMeter(pi, utilisation=lambda: next(us), clock=clock)
    meter.start()
    clock.t = 12.0
    meter.sample()                                          # 2 s idle: 5.4 J
    clock.t = 13.0
    assert meter.read_joules() == pytest.approx(5.4 + 8.0)  # + 1 s busy


def test_modelled_cpu_share_is_this_process_s_own():
    """Another process's load does not count: u stays near 0 while a child burns a core, and
    rises while this process does."""
    share = ModelledMeter(get_device("generic-x86")).utilisation
    share()
    burn = "import time\nt = time.time()\nwhile time.time() - t < 0.5: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    idle = share()
    t, wall = time.process_time(), time.monotonic()
    while time.process_time() - t < 0.3:
        pass
    busy = share()
    cpu, wall = time.process_time() - t, time.monotonic() - wall
    cores = len(psutil.Process().cpu_affinity()) or 1
    # what this process ran over its wall time (a VM's steal lowers both), less 10 ms ticks
    assert idle < 0.2 / cores and busy > 0.8 * cpu / (wall * cores) - 0.02 / wall, (idle, busy, cpu, wall)


def test_modelled_gpu_device_assumes_busy():
    gpu = get_device("cuda-gpu")
    assert ModelledMeter(gpu).utilisation == 1.0


# ---- choosing a reader -----------------------------------------------------------------------

def test_factory_picks_the_profile_sensor_that_works(tmp_path, orin_sysfs, powercap):
    orin = get_device("jetson-orin-nano")
    assert isinstance(make_energy_meter(orin, env=SensorEnv(orin_sysfs)), Ina3221Meter)
    x86 = get_device("generic-x86")
    assert isinstance(make_energy_meter(x86, env=SensorEnv(powercap.parents[1])), RaplMeter)
    gpu = get_device("cuda-gpu")
    assert isinstance(make_energy_meter(gpu, env=SensorEnv(tmp_path, nvml=FakeNvml())), NvmlMeter)


def test_factory_falls_back_to_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(nvml_module, "_load_pynvml", lambda: (_ for _ in ()).throw(ImportError()))
    env = SensorEnv(tmp_path / "empty")
    for name in ["jetson-nano", "generic-x86", "cuda-gpu", "raspberry-pi-5"]:
        assert isinstance(make_energy_meter(get_device(name), env=env), ModelledMeter)
    status = probe_sensors(get_device("jetson-nano"), env)
    assert [(s.name, s.available) for s in status] == [("ina3221", False), ("model", True)]
    assert "no INA3221 rails" in status[0].detail


def test_factory_prefer(tmp_path):
    env = SensorEnv(tmp_path)
    with pytest.raises(EdgetuneError, match="energy sensor 'rapl' is not available here: no RAPL"):
        make_energy_meter(get_device("generic-x86"), prefer="rapl", env=env)
    with pytest.raises(UsageError, match="unknown energy sensor 'rapll'; did you mean 'rapl'"):
        make_energy_meter(get_device("generic-x86"), prefer="rapll", env=env)
    assert isinstance(make_energy_meter(get_device("generic-x86"), prefer="model", env=env), ModelledMeter)


# ---- memory ----------------------------------------------------------------------------------

def test_memory_readings():
    total, avail = total_memory_bytes(), available_memory_bytes()
    assert 0 < avail <= total
    first = process_rss_bytes()
    assert 0 < first < total
    block = np.empty(256 << 17)                               # 256 MiB, fresh pages
    block[::512] = 1.0                                        # touch every 4 KiB page
    assert process_rss_bytes() - first >= 128 << 20
    del block


def test_vm_hwm_is_read_from_a_status_file(tmp_path):
    from edgetune.sensors.peak import peak_rss_bytes, vm_hwm_bytes

    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t  900 kB\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
    assert vm_hwm_bytes(status) == 2048 * 1024
    assert vm_hwm_bytes(tmp_path / "missing") is None
    assert peak_rss_bytes() >= 1
