"""Quantities with units, as the CLI takes them: ``600MB``, ``1.5GiB``, ``5kJ``, ``0.2kWh``, ``7W``.

Bytes: SI prefixes are powers of 1000 (``MB`` = 10⁶ B), IEC ones powers of 1024 (``MiB`` = 2²⁰ B);
case does not matter (``600mb`` is 600 MB). Energy: J, kJ, MJ, Wh, kWh (1 Wh = 3600 J). Power:
mW, W, kW. ``m`` (milli) and ``M`` (mega) differ only by case, so those units are case-exact.
A number alone is refused: the unit says what was meant. Errors name the option and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from edgetune.errors import UsageError

_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")

BYTE_UNITS = {
    "B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
MB = BYTE_UNITS["MB"]     # every size the tool prints: decimal megabytes
MIB = BYTE_UNITS["MiB"]   # sizes fitted in binary units (caps/calibration.py, train/ram_guard.py)
ENERGY_UNITS = {"mJ": 1e-3, "J": 1.0, "kJ": 1e3, "MJ": 1e6, "Wh": 3600.0, "kWh": 3.6e6}
POWER_UNITS = {"mW": 1e-3, "W": 1.0, "kW": 1e3, "MW": 1e6}


def _lookup(unit: str, units: Mapping[str, float]) -> float | None:
    if unit in units:
        return units[unit]
    matches = {units[u] for u in units if u.lower() == unit.lower()}
    return matches.pop() if len(matches) == 1 else None  # "mw": milli or mega? refuse


def _parse(text: object, units: Mapping[str, float], what: str, examples: str) -> float:
    allowed = ", ".join(units)
    if not isinstance(text, str):
        raise UsageError(f"{what}={text!r}: must be a string with a unit, e.g. {examples}")
    m = _NUMBER.match(text)
    if not m:
        raise UsageError(f"{what}={text!r}: not a number with a unit; write e.g. {examples}")
    number, unit = float(m.group(1)), m.group(2)
    if not unit:
        raise UsageError(f"{what}={text!r}: needs a unit ({allowed}), e.g. {examples}")
    scale = _lookup(unit, units)
    if scale is None:
        raise UsageError(f"{what}={text!r}: unknown unit {unit!r}; use one of {allowed}")
    value = number * scale
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{what}={text!r}: must be > 0")
    return value


def parse_bytes(text: str, what: str = "--ram-cap") -> int:
    """``"600MB"`` → 600000000, ``"1.5GiB"`` → 1610612736 (rounded down to whole bytes)."""
    value = int(_parse(text, BYTE_UNITS, what, "600MB or 1.5GiB"))
    if value < 1:
        raise UsageError(f"{what}={text!r}: must be at least 1 byte")
    return value


def parse_joules(text: str, what: str = "--energy-cap") -> float:
    """``"5kJ"`` → 5000.0, ``"0.5Wh"`` → 1800.0."""
    return _parse(text, ENERGY_UNITS, what, "5kJ or 0.5Wh")


def parse_watts(text: str, what: str = "--power-cap") -> float:
    """``"7W"`` → 7.0, ``"500mW"`` → 0.5."""
    return _parse(text, POWER_UNITS, what, "7W or 500mW")


def format_bytes(n: float, round_up: bool = False) -> str:
    """Decimal megabytes, the unit ``--ram-cap`` reads back: ``612MB`` (``round_up`` for minima)."""
    mb = n / MB
    mb = math.ceil(mb) if round_up else round(mb)
    return f"{mb:d}MB"


def _sig(x: float, round_up: bool, digits: int = 3) -> float:
    """``x`` to ``digits`` significant digits, rounded up when ``round_up`` (for minima)."""
    if x <= 0:
        return 0.0
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    v = math.ceil(x * scale - 1e-9) if round_up else round(x * scale)
    return v / scale


def format_joules(j: float, round_up: bool = False) -> str:
    """``5.2kJ`` from 1 kJ up, else ``812J`` or ``0.0312J``; 3 significant digits."""
    if j >= 1e3:
        return f"{_sig(j / 1e3, round_up):g}kJ"
    return f"{_sig(j, round_up):g}J"


def format_watts(w: float, round_up: bool = False) -> str:
    return f"{_sig(w, round_up):g}W"
