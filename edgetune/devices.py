"""Device profiles: data in ``devices/*.toml``, one per machine kind, and a guess of this machine.

A profile gives the scheduler what it plans against: RAM, cores, peak GFLOP/s, a power model
(idle and active watts; energy per GFLOP = active_watts / peak_gflops unless given) and the
sensors that exist there. ``[detect]`` rules in each file let :func:`detect` pick the profile
for the running machine.
"""

from __future__ import annotations

import copy
import dataclasses
import platform
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgetune.config import check_choice, check_float, check_int, from_mapping
from edgetune.errors import EdgetuneError, UsageError
from edgetune.machine import Machine, read_machine
from edgetune.registry import Registry, unknown_name_message

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

SENSOR_KINDS = ("rapl", "ina3221", "nvml", "psutil")
ACCELERATORS = ("cpu", "cuda")
GIB = 1 << 30
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class DetectRules:
    """How :func:`detect` recognises the machine.

    ``model``: substrings of ``/proc/device-tree/model``; ``tegra_release``: L4T major releases
    (``R36`` in ``/etc/nv_tegra_release``); ``nvidia_gpu``: an NVIDIA driver or nvidia-smi is
    present; ``arch``: CPU architectures (``platform.machine()``, any case) for a generic
    profile when no board or GPU matched; ``fallback``: the profile used when nothing matches.
    """

    model: tuple = ()
    tegra_release: tuple = ()
    nvidia_gpu: bool = False
    arch: tuple = ()
    fallback: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.arch, str):
            object.__setattr__(self, "arch", (self.arch,))
        object.__setattr__(self, "arch", tuple(self.arch))
        if not all(isinstance(a, str) and a for a in self.arch):
            raise UsageError(f"DetectRules.arch={self.arch!r}: must be a list of non-empty strings")
        for name in ("model", "tegra_release"):
            v = getattr(self, name)
            if isinstance(v, (str, int)):
                v = (v,)
            object.__setattr__(self, name, tuple(v))
        if not all(isinstance(s, str) and s for s in self.model):
            raise UsageError(f"DetectRules.model={self.model!r}: must be a list of non-empty strings")
        if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0
                   for r in self.tegra_release):
            raise UsageError(
                f"DetectRules.tegra_release={self.tegra_release!r}: must be a list of integers >= 1")
        for name in ("nvidia_gpu", "fallback"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"DetectRules.{name}={getattr(self, name)!r}: must be true or false")


@dataclass
class DeviceProfile:
    """One machine kind. Watts are whole-board (or CPU package / GPU board, as the file says)."""

    name: str
    description: str
    ram_bytes: int
    cores: int
    peak_gflops: float
    idle_watts: float
    active_watts: float
    sensors: tuple = ("psutil",)
    joules_per_gflop: float | None = None
    cpu_peak_gflops: float | None = None
    accelerator: str = "cpu"
    accelerator_memory_bytes: int = 0
    unified_memory: bool = False
    detect: DetectRules = field(default_factory=DetectRules)
    path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise UsageError(
                f"DeviceProfile.name={self.name!r}: must be lowercase letters, digits, '-', '_', '.'")
        if not isinstance(self.description, str):
            raise UsageError(f"DeviceProfile.description={self.description!r}: must be a string")
        check_int(self, "ram_bytes", lo=1)
        check_int(self, "cores", lo=1)
        check_float(self, "peak_gflops", lo=0.0, lo_open=True)
        check_float(self, "idle_watts", lo=0.0)
        check_float(self, "active_watts", lo=0.0, lo_open=True)
        if self.active_watts < self.idle_watts:
            raise UsageError(
                f"DeviceProfile.active_watts={self.active_watts!r}: must be >= idle_watts="
                f"{self.idle_watts!r}")
        if self.joules_per_gflop is None:
            self.joules_per_gflop = self.active_watts / self.peak_gflops
        check_float(self, "joules_per_gflop", lo=0.0, lo_open=True)
        if self.cpu_peak_gflops is None:
            self.cpu_peak_gflops = self.peak_gflops
        check_float(self, "cpu_peak_gflops", lo=0.0, lo_open=True)
        check_choice(self, "accelerator", ACCELERATORS)
        check_int(self, "accelerator_memory_bytes", lo=0)
        if not isinstance(self.unified_memory, bool):
            raise UsageError(f"DeviceProfile.unified_memory={self.unified_memory!r}: must be true or false")
        sensors = (self.sensors,) if isinstance(self.sensors, str) else self.sensors
        if not isinstance(sensors, (list, tuple)):
            raise UsageError(f"DeviceProfile.sensors={self.sensors!r}: must be a list of "
                             f"{', '.join(SENSOR_KINDS)}")
        for s in sensors:
            if s not in SENSOR_KINDS:
                raise UsageError(
                    f"DeviceProfile.sensors: {s!r} must be one of {', '.join(SENSOR_KINDS)}")
        self.sensors = tuple(sensors)
        if isinstance(self.detect, dict):
            self.detect = from_mapping(DetectRules, self.detect, "[detect] key")

    @property
    def ram_gib(self) -> float:
        return self.ram_bytes / GIB

    def power_watts(self, utilisation: float) -> float:
        """Modelled power: P = idle + (active − idle)·u, u ∈ [0, 1] clipped."""
        u = min(max(float(utilisation), 0.0), 1.0)
        return self.idle_watts + (self.active_watts - self.idle_watts) * u

    def flops_joules(self, flops: float) -> float:
        """Modelled energy of ``flops`` FLOPs: E = FLOPs / 1e9 · J/GFLOP."""
        return float(flops) / 1e9 * float(self.joules_per_gflop)  # type: ignore[arg-type]


# ---- loading -------------------------------------------------------------------------------

def device_dirs() -> list[Path]:
    """Where profiles live: ``<repo>/devices`` in a checkout, ``edgetune/_devices`` if shipped."""
    here = Path(__file__).resolve().parent
    return [d for d in (here.parent / "devices", here / "_devices") if d.is_dir()]


def load_profile(path: str | Path) -> DeviceProfile:
    """Read one profile file; errors name the file and the field."""
    path = Path(path)
    if _toml is None:  # pragma: no cover
        raise EdgetuneError("reading device profiles needs Python 3.11+ (tomllib) or `pip install tomli`")
    try:
        data = _toml.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"device profile {str(path)!r}: no such file") from None
    except _toml.TOMLDecodeError as e:
        raise UsageError(f"device profile {str(path)!r}: invalid TOML: {e}") from None
    try:
        known = sorted({f.name for f in dataclasses.fields(DeviceProfile)} - {"path"}
                       | {"ram_gib", "accelerator_memory_gib"})
        for key in data:
            if key not in known:
                raise UsageError(unknown_name_message("DeviceProfile key", key, known))
        for unit in ("ram", "accelerator_memory"):
            if f"{unit}_gib" in data:
                if f"{unit}_bytes" in data:
                    raise UsageError(f"give {unit}_bytes or {unit}_gib, not both")
                gib = data.pop(f"{unit}_gib")
                if isinstance(gib, bool) or not isinstance(gib, (int, float)) or gib <= 0:
                    raise UsageError(f"DeviceProfile.{unit}_gib={gib!r}: must be a number > 0")
                data[f"{unit}_bytes"] = int(round(gib * GIB))
        missing = [f.name for f in dataclasses.fields(DeviceProfile)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise UsageError(f"missing required key(s): {', '.join(missing)}")
        profile = from_mapping(DeviceProfile, dict(data, path=str(path)), "key")
    except UsageError as e:
        raise UsageError(f"device profile {str(path)!r}: {e}") from None
    if profile.name != path.stem:
        raise UsageError(
            f"device profile {str(path)!r}: name={profile.name!r} must match the file name "
            f"{path.stem!r}")
    return profile


@lru_cache(maxsize=8)
def _registry(dirs: tuple[str, ...]) -> Registry[DeviceProfile]:
    reg: Registry[DeviceProfile] = Registry("device")
    for d in dirs:
        for f in sorted(Path(d).glob("*.toml")):
            if f.stem not in reg:  # the first folder wins (a checkout over a shipped copy)
                reg.add(f.stem, load_profile(f))
    return reg


def device_registry(dirs: Sequence[str | Path] | None = None) -> Registry[DeviceProfile]:
    """Every profile in ``dirs`` (default :func:`device_dirs`), loaded once and cached."""
    chosen = device_dirs() if dirs is None else [Path(d) for d in dirs]
    return _registry(tuple(str(Path(d).resolve()) for d in chosen))


def list_devices(dirs: Sequence[str | Path] | None = None) -> list[DeviceProfile]:
    """Every profile, by name; copies, so callers may edit them freely."""
    reg = device_registry(dirs)
    return [copy.copy(reg.get(n)) for n in reg.names()]


def get_device(name: str, dirs: Sequence[str | Path] | None = None) -> DeviceProfile:
    """A profile by name (did-you-mean on typos), or by the path of a ``.toml`` file."""
    if isinstance(name, (str, Path)) and str(name).endswith(".toml"):
        return load_profile(name)
    reg = device_registry(dirs)
    if not len(reg):
        looked = ", ".join(map(str, device_dirs() if dirs is None else dirs)) or "nothing found"
        raise EdgetuneError(f"no device profiles (*.toml) found; looked in: {looked}")
    return copy.copy(reg.get(name))


# ---- detection -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Detection:
    profile: DeviceProfile
    reason: str
    machine: str = ""  # what was read from the machine instead of the profile's file


def fit_to_machine(profile: DeviceProfile, machine: Machine) -> DeviceProfile:
    """``profile`` with this machine's RAM and cores; the CPU's peak FLOP/s scales with the
    cores (per-core peak as the file says), energy per GFLOP stays the file's."""
    changes: dict[str, Any] = {}
    if machine.ram_bytes:
        changes["ram_bytes"] = int(machine.ram_bytes)
    if machine.cores and machine.cores != profile.cores:
        scale = machine.cores / profile.cores
        changes["cores"] = int(machine.cores)
        changes["cpu_peak_gflops"] = float(profile.cpu_peak_gflops) * scale  # type: ignore[arg-type]
        if profile.accelerator == "cpu":
            changes["peak_gflops"] = profile.peak_gflops * scale
    return dataclasses.replace(profile, **changes) if changes else profile


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().replace(b"\x00", b"").decode("utf-8", "replace").strip()
    except OSError:
        return None


def _tegra_major(text: str) -> int | None:
    m = re.search(r"\bR(\d+)\b", text)
    return int(m.group(1)) if m else None


def detect(
    root: str | Path = "/", *, which: Callable[[str], str | None] | None = None,
    profiles: Iterable[DeviceProfile] | None = None, machine: Machine | None = None,
    arch: str | None = None,
) -> Detection:
    """Guess this machine's profile, in order: device-tree model (Jetson, Raspberry Pi), L4T
    release file (Jetson), an NVIDIA GPU (driver in /proc or nvidia-smi), a generic profile
    for the CPU architecture (``arch``, default ``platform.machine()``), the fallback profile;
    then give it this machine's RAM and cores (:func:`fit_to_machine`).

    ``root`` is the filesystem root (tests pass a fake tree); ``which`` finds executables
    (default :func:`shutil.which` when ``root`` is ``/``, else finds nothing); ``machine``
    what the machine has (default :func:`edgetune.machine.read_machine` under ``root``).
    """
    found = _match(Path(root), which, profiles, platform.machine() if arch is None else arch)
    machine = read_machine(root) if machine is None else machine
    return Detection(fit_to_machine(found.profile, machine), found.reason, machine.describe())


def _match(root: Path, which: Callable[[str], str | None] | None,
           profiles: Iterable[DeviceProfile] | None, arch: str) -> Detection:
    if which is None:
        which = shutil.which if root.resolve() == Path("/") else (lambda _name: None)
    profs = list_devices() if profiles is None else list(profiles)
    if not profs:
        raise EdgetuneError("no device profiles found (looked in: "
                            f"{', '.join(map(str, device_dirs())) or 'nothing'})")

    model = _read(root / "proc/device-tree/model") or _read(
        root / "sys/firmware/devicetree/base/model")
    if model:
        best: tuple[int, DeviceProfile] | None = None
        for p in profs:
            for pat in p.detect.model:
                if pat.lower() in model.lower() and (best is None or len(pat) > best[0]):
                    best = (len(pat), p)
        if best:
            return Detection(best[1], f"device-tree model {model!r}")

    release = _read(root / "etc/nv_tegra_release")
    if release:
        major = _tegra_major(release)
        for p in profs:
            if major is not None and major in p.detect.tegra_release:
                return Detection(p, f"/etc/nv_tegra_release R{major}")

    gpus = root / "proc/driver/nvidia/gpus"
    smi = which("nvidia-smi")
    has_gpu = (gpus.is_dir() and any(gpus.iterdir())) or smi is not None
    if has_gpu:
        for p in profs:
            if p.detect.nvidia_gpu:
                why = "NVIDIA driver in /proc/driver/nvidia/gpus" if gpus.is_dir() else f"{smi}"
                return Detection(p, why)

    hint = f" (device-tree model {model!r} has no profile)" if model else ""
    for p in profs:
        if arch.lower() in (a.lower() for a in p.detect.arch):
            return Detection(p, f"no known board or GPU found, a {arch} CPU{hint}")
    for p in profs:
        if p.detect.fallback:
            return Detection(p, "no known board or GPU found" + hint)
    raise EdgetuneError("no device profile matches this machine and none is marked fallback")


def detect_device(
    root: str | Path = "/", *, which: Callable[[str], str | None] | None = None,
    profiles: Iterable[DeviceProfile] | None = None, machine: Machine | None = None,
    arch: str | None = None,
) -> DeviceProfile:
    """The profile :func:`detect` picks for this machine, with its RAM and cores."""
    return detect(root, which=which, profiles=profiles, machine=machine, arch=arch).profile
