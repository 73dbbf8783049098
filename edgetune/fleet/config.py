"""A fleet's two configs, validated on construction: what the server decides for every client
(:class:`FleetConfig`, Flower's run config) and what each device says of itself
(:class:`NodeConfig`, its SuperNode's ``--node-config``). Flower's keys are kebab-case
(``local-steps``); :func:`from_flower` maps them onto the fields and refuses a typo."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgetune.caps.limits import Caps
from edgetune.config import check_choice, check_float, check_int, from_mapping
from edgetune.errors import UsageError
from edgetune.train.config import SCHEDULES

# the server's strategies: Flower's own, by name (fleet/server.py builds them)
STRATEGIES = ("fedavg", "fedavgm", "fedadam")


@dataclass
class FleetConfig:
    rounds: int = 3                 # federated rounds
    local_steps: int = 10           # optimizer steps each client runs per round
    batch_size: int = 16
    lr: float = 1e-3                # the clients' AdamW; cosine over rounds × local_steps
    warmup: int = 0
    schedule: str = "static"        # static: every layer, every token; alast: each client's own
    alast: str = ""                 # ALaST options, "key=value;key=value" (train --set's)
    reset_optimizer: bool = False   # restart AdamW's moments at each round's global state
    strategy: str = "fedavg"        # Flower's FedAvg (by samples), FedAvgM or FedAdam
    server_lr: float = 1.0          # FedAvgM's / FedAdam's server learning rate (eta)
    server_momentum: float = 0.9    # FedAvgM's momentum
    min_clients: int = 2            # clients a round waits for before it starts
    fraction: float = 1.0           # of the connected clients sampled each round
    timeout: float = 600.0          # seconds a round waits for replies (a dead client's never come)
    seed: int = 0
    labels: str = ""                # class names of string labels, comma-separated (every client
                                    #   must map them alike); "": the data's own integers

    def __post_init__(self) -> None:
        check_int(self, "rounds", lo=1)
        check_int(self, "local_steps", lo=1)
        check_int(self, "batch_size", lo=1)
        check_float(self, "lr", lo=0.0, lo_open=True)
        check_int(self, "warmup", lo=0)
        check_choice(self, "schedule", SCHEDULES)
        check_choice(self, "strategy", STRATEGIES)
        check_float(self, "server_lr", lo=0.0, lo_open=True)
        check_float(self, "server_momentum", lo=0.0, hi=1.0, hi_open=True)
        check_int(self, "min_clients", lo=1)
        check_float(self, "fraction", lo=0.0, hi=1.0, lo_open=True)
        check_float(self, "timeout", lo=0.0, lo_open=True)
        check_int(self, "seed", lo=0)
        if not isinstance(self.reset_optimizer, bool):
            raise UsageError(f"FleetConfig.reset_optimizer={self.reset_optimizer!r}: must be true or false")
        self.alast_settings()  # a typo fails here, on the server, not on every client

    @property
    def total_steps(self) -> int:
        """A client's whole run: the learning-rate schedule and the energy cap span it."""
        return self.rounds * self.local_steps

    def alast_settings(self) -> list[str]:
        from edgetune.config import from_strings
        from edgetune.schedule.alast import AlastConfig

        pairs = [p.strip() for p in self.alast.split(";") if p.strip()]
        from_strings(AlastConfig, pairs)
        return pairs

    def label_names(self) -> tuple[str, ...] | None:
        names = tuple(s.strip() for s in self.labels.split(",") if s.strip())
        return names or None


@dataclass
class NodeConfig:
    data: str                       # this device's training data (a file or folder)
    bundle: str                     # the bundle on this device (its id must be the server's)
    out: str = "fleet-client"       # state folder: one run folder per federation run
    val: str = ""                   # held-out data for federated evaluation ("": none)
    device: str = ""                # device profile ("": detected)
    ram_cap: str = ""               # e.g. "600MB" ("": none)
    energy_cap: str = ""            # the whole federation's, on this device, e.g. "5kJ"
    power_cap: str = ""
    threads: int = 0
    name: str = ""                  # how the server's log names this client ("": its node id)

    def __post_init__(self) -> None:
        for field in ("data", "bundle", "out"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise UsageError(f"NodeConfig.{field}={value!r}: must be a non-empty path")
        check_int(self, "threads", lo=0)
        self.caps()

    def caps(self) -> Caps:
        return Caps.parse(ram=self.ram_cap or None, energy=self.energy_cap or None,
                          power=self.power_cap or None)


@dataclass
class ServerConfig:
    bundle: str                 # the server's copy of the bundle (clients need the same id)
    out: str                    # the fleet folder (fleet/folder.py)
    val: str = ""               # central evaluation data after each round ("": none)
    threads: int = 0            # onnxruntime threads for central evaluation

    def __post_init__(self) -> None:
        for field in ("bundle", "out"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise UsageError(f"ServerConfig.{field}={value!r}: must be a non-empty path")
        check_int(self, "threads", lo=0)


def from_flower(cls: type, values: Mapping[str, Any], what: str) -> Any:
    """``cls`` from Flower's kebab-case keys (``local-steps`` → ``local_steps``); an unknown key
    is refused with a did-you-mean, a value of the wrong type names the key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        kind = fields[name].type if name in fields else None
        if kind in ("int", int) and isinstance(value, float) and value.is_integer():
            value = int(value)
        if kind in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind in ("str", str) and not isinstance(value, str):
            raise UsageError(f"{what} {key}={value!r}: must be a string")
        out[name] = value
    return from_mapping(cls, out, what)


def to_flower(cfg: Any) -> dict[str, Any]:
    """``cfg``'s fields with Flower's kebab-case keys (a run config, a node config)."""
    return {f.name.replace("_", "-"): getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def split_run_config(run_config: dict[str, Any]) -> tuple[FleetConfig, ServerConfig]:
    """Flower's run config: the FleetConfig keys and the ServerConfig ones; a key of neither
    is refused with a did-you-mean."""
    fleet = {k: v for k, v in run_config.items() if k.replace("-", "_") in FLEET_FIELDS}
    server = {k: v for k, v in run_config.items() if k.replace("-", "_") not in FLEET_FIELDS}
    return (from_flower(FleetConfig, fleet, "run config"),
            from_flower(ServerConfig, server, "run config"))


FLEET_FIELDS = frozenset(f.name for f in dataclasses.fields(FleetConfig))
