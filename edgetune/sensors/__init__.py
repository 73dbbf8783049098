"""Readers for memory (psutil) and energy (RAPL, Jetson INA3221, NVML, or a modelled fallback).

Every energy reader is an :class:`EnergyMeter` (``available()``, ``start()``,
``read_joules()``); :func:`make_energy_meter` picks the best one for a device profile. All
sysfs paths hang off an injectable root so tests run them on fake trees.
"""

from edgetune.sensors.base import CounterMeter, EnergyMeter, PowerMeter, counter_delta
from edgetune.sensors.factory import ENERGY_READERS, SensorEnv, SensorStatus, make_energy_meter, probe_sensors
from edgetune.sensors.ina3221 import Ina3221Meter, find_rails
from edgetune.sensors.memory import available_memory_bytes, process_rss_bytes, total_memory_bytes
from edgetune.sensors.modelled import ModelledMeter
from edgetune.sensors.nvml import NvmlMeter
from edgetune.sensors.rapl import RaplMeter, find_domains

__all__ = [
    "ENERGY_READERS", "CounterMeter", "EnergyMeter", "Ina3221Meter", "ModelledMeter",
    "NvmlMeter", "PowerMeter", "RaplMeter", "SensorEnv",
    "SensorStatus", "available_memory_bytes", "counter_delta", "find_domains", "find_rails",
    "make_energy_meter", "probe_sensors", "process_rss_bytes", "total_memory_bytes",
]
