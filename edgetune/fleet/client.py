"""The fleet's Flower ``ClientApp`` (``edgetune.fleet.client:app``): a round of the device's own
Trainer (fleet/round.py), torch-free, under the SuperNode's ``--node-config``:

    flower-supernode --superlink HOST:PORT \\
        --node-config "data='train.npz' bundle='bundle/' device='jetson-nano' ram-cap='3GB'"

Only the trainable parameters travel, as one ArrayRecord in the bundle's order; the reply's
MetricRecord carries ``num-examples`` (FedAvg's weight) and what the round cost, its
ConfigRecord the bundle id, the client's name and the whole report (JSON).
"""

from __future__ import annotations

import json

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edgetune.bundle import Bundle
from edgetune.fleet.config import FleetConfig, NodeConfig, from_flower
from edgetune.fleet.round import client_round, evaluate_arrays
from edgetune.fleet.wire import BUNDLE_ID, FLEET_ID, ROUND, WEIGHT, arrays_of, fleet_settings

app = ClientApp()


def _node(context: Context) -> NodeConfig:
    return from_flower(NodeConfig, dict(context.node_config), "node config")


def _client_name(node: NodeConfig, context: Context) -> str:
    return node.name or f"node-{context.node_id}"


@app.train()
def train(msg: Message, context: Context) -> Message:
    node = _node(context)
    config = msg.content["config"]
    fleet = from_flower(FleetConfig, fleet_settings(config), "run config")
    arrays, report = client_round(node, fleet, arrays_of(msg.content["arrays"]), str(config[BUNDLE_ID]),
                                  run=str(config[FLEET_ID]), server_round=int(str(config[ROUND])))
    metrics = MetricRecord({WEIGHT: report.samples, "steps": report.steps, "loss": report.loss,
                            "joules": report.joules, "peak-rss-mb": report.peak_rss_mb,
                            "seconds": report.seconds})
    info = ConfigRecord({BUNDLE_ID: str(config[BUNDLE_ID]), "client": _client_name(node, context),
                         "report": json.dumps(report.to_dict())})
    reply = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                        "metrics": metrics, "info": info})
    return Message(reply, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the global state on the node's ``val`` data (every token)."""
    node = _node(context)
    if not node.val:
        raise ValueError(f"{_client_name(node, context)}: no val in its node config")
    config = msg.content["config"]
    fleet = from_flower(FleetConfig, fleet_settings(config), "run config")
    res = evaluate_arrays(Bundle.open(node.bundle), arrays_of(msg.content["arrays"]), node.val, fleet,
                          node.threads)
    metrics = MetricRecord({WEIGHT: int(res["count"]), "loss": float(res["loss"]),
                            "accuracy": float(res["accuracy"])})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)

