"""What crosses between the fleet's server and clients, one owner for the names: the keys of
the round's ConfigRecord and of the replies, and arrays to and from Flower's records (duck
typed: no flwr import, so the server's checks are testable without it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgetune.fleet.config import FLEET_FIELDS

WEIGHT = "num-examples"   # FedAvg's weight: samples the client trained on this round
BUNDLE_ID = "bundle-id"   # sha256 of the bundle's manifest (TrainableSchema.bundle_id)
FLEET_ID = "fleet-id"     # the server's run: each client keeps one run folder per fleet id
ROUND = "server-round"    # set by Flower's strategies


def fleet_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The FleetConfig part of a round's ConfigRecord (the rest: ids and Flower's round)."""
    return {k: v for k, v in config.items() if k.replace("-", "_") in FLEET_FIELDS}


def arrays_of(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """name → numpy array of an ArrayRecord, in its order."""
    return {str(k): v.numpy() for k, v in record.items()}
