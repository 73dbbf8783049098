"""Board power from the Jetson INA3221 monitors in sysfs (three rails per chip).

Two layouts, by L4T release:

- R32 (Jetson Nano, TX2, Xavier on JetPack 4), the ``ina3221x`` IIO driver:
  ``/sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:device<N>/rail_name_<c>`` and
  ``in_power<c>_input`` in mW (or ``in_voltage<c>_input`` mV × ``in_current<c>_input`` mA);
- R34+ (Orin, JetPack 5/6), the upstream hwmon driver: ``/sys/class/hwmon/hwmon<N>/`` with
  ``name`` = ``ina3221``, ``in<c>_label``, ``in<c>_input`` (bus mV) and ``curr<c>_input`` (mA):
  P = mV · mA / 1e6 W.

Rails overlap: the board input rail (``*_IN``: ``POM_5V_IN``, ``VDD_IN``) includes the others,
so it is used alone when present; otherwise all rails are summed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edgetune.sensors.base import PowerMeter, pick_named

SYSFS = "/sys"


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


class Rail:
    """One INA3221 channel; :meth:`watts` reads it now."""

    def __init__(self, label: str, power_mw: Path | None = None,
                 voltage_mv: Path | None = None, current_ma: Path | None = None) -> None:
        self.label = label
        self.power_mw, self.voltage_mv, self.current_ma = power_mw, voltage_mv, current_ma

    def watts(self) -> float:
        if self.power_mw is not None and self.power_mw.exists():
            return _read_int(self.power_mw) / 1e3
        if self.voltage_mv is not None and self.current_ma is not None:
            return _read_int(self.voltage_mv) * _read_int(self.current_ma) / 1e6
        raise OSError(f"rail {self.label}: no power or voltage/current files")

    def __repr__(self) -> str:
        return f"Rail({self.label!r})"


def _iio_rails(dev: Path) -> list[Rail]:
    rails = []
    for name_file in sorted(dev.glob("rail_name_*")):
        c = name_file.name.rsplit("_", 1)[1]
        label = name_file.read_text().strip()
        power = dev / f"in_power{c}_input"
        rails.append(Rail(label, power_mw=power, voltage_mv=dev / f"in_voltage{c}_input",
                          current_ma=dev / f"in_current{c}_input"))
    return rails


def _hwmon_rails(dev: Path) -> list[Rail]:
    rails = []
    for curr in sorted(dev.glob("curr*_input")):
        c = re.sub(r"\D", "", curr.name)
        volt = dev / f"in{c}_input"
        if not volt.exists():
            continue
        label_file = dev / f"in{c}_label"
        label = label_file.read_text().strip() if label_file.exists() else f"{dev.name}/ch{c}"
        if label.upper() == "NC":  # not connected
            continue
        rails.append(Rail(label, voltage_mv=volt, current_ma=curr))
    return rails


def find_rails(root: str | Path = SYSFS) -> list[Rail]:
    """Every INA3221 rail under the sysfs ``root``, from both layouts, each chip once."""
    root = Path(root)
    seen: set[Path] = set()
    rails: list[Rail] = []
    for dev in sorted(root.glob("bus/i2c/drivers/ina3221x/*/iio:device*")):
        if dev.resolve() not in seen:
            seen.add(dev.resolve())
            rails += _iio_rails(dev)
    hwmons = list(root.glob("class/hwmon/hwmon*")) + list(
        root.glob("bus/i2c/drivers/ina3221/*/hwmon/hwmon*"))
    for dev in sorted(hwmons):
        try:
            is_ina = (dev / "name").read_text().strip() == "ina3221"
        except OSError:
            continue
        if is_ina and dev.resolve() not in seen:
            seen.add(dev.resolve())
            rails += _hwmon_rails(dev)
    return rails


def default_rails(rails: Sequence[Rail]) -> list[Rail]:
    """The board input rail(s) (``*_IN``) if any, else every rail."""
    inputs = [r for r in rails if r.label.upper().endswith("_IN")]
    return inputs or list(rails)


class Ina3221Meter(PowerMeter):
    """Integrates INA3221 rail power (W) over time; ``rails`` picks labels explicitly."""

    name = "ina3221"

    def __init__(self, root: str | Path = SYSFS, rails: Sequence[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.root = Path(root)
        self.rails = pick_named(find_rails(self.root), rails, lambda r: r.label,
                                default_rails, "INA3221 rail", self.root)

    def read_watts(self) -> float:
        return sum(r.watts() for r in self.rails)

    def why_unavailable(self) -> str | None:
        if not self.rails:
            return f"no INA3221 rails under {self.root}"
        try:
            self.read_watts()
        except (OSError, ValueError) as e:
            return str(e)
        return None

    def available(self) -> bool:
        return self.why_unavailable() is None

    def describe(self) -> str:
        return f"ina3221 ({' + '.join(r.label for r in self.rails) or 'no rails'})"
