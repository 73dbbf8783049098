"""The fleet's Flower ``ServerApp`` (``edgetune.fleet.server:app``): Flower's own strategy
(FedAvg weighted by samples, FedAvgM, FedAdam) behind :class:`CheckedStrategy`, which adds
what a fleet of other people's devices needs and aggregates nothing itself:

- every reply is checked against the bundle's trainable schema (fleet/schema.py: bundle id,
  names, shapes, float32, finite) before the strategy sees it; a refused one is named in the
  log with the field, and the others are still averaged (Flower alone would skip the round
  when one reply's keys differ);
- a client that failed or never answered within the round's timeout is left out;
- each aggregate is saved (fleet/folder.py), so a restarted server resumes after it;
- each client's report (steps, samples, joules, peak RSS, plan) goes to ``metrics.jsonl``.

Needs no torch and no training build: the schema and round 0 come from the bundle's files;
central evaluation (``val`` in the run config) needs a stock onnxruntime.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, Strategy

from edgetune.bundle import Bundle
from edgetune.errors import EdgetuneError, UsageError
from edgetune.fleet.config import FleetConfig, ServerConfig, split_run_config, to_flower
from edgetune.fleet.folder import FleetFolder
from edgetune.fleet.schema import TrainableSchema, initial_arrays
from edgetune.fleet.wire import BUNDLE_ID, FLEET_ID, WEIGHT, arrays_of

app = ServerApp()


def make_strategy(fleet: FleetConfig, initial: ArrayRecord | None = None) -> Strategy:
    """Flower's strategy by name, sampling ``fraction`` of the clients (never fewer than
    ``min_clients``), weighting by ``num-examples``; no federated evaluation (the server's
    own, with ``val``, is central)."""
    common: dict[str, Any] = dict(fraction_train=fleet.fraction, fraction_evaluate=0.0,
                                  min_train_nodes=fleet.min_clients, min_available_nodes=fleet.min_clients,
                                  weighted_by_key=WEIGHT)
    if fleet.strategy == "fedavg":
        return FedAvg(**common)
    if fleet.strategy == "fedavgm":
        return FedAvgM(server_learning_rate=fleet.server_lr, server_momentum=fleet.server_momentum, **common)
    return FedAdam(eta=fleet.server_lr, **common)


class CheckedStrategy(Strategy):
    """``inner``'s rounds, numbered from ``offset`` + 1 (a restarted server), with every reply
    checked against ``schema`` before ``inner`` aggregates it."""

    def __init__(self, inner: Strategy, schema: TrainableSchema, folder: FleetFolder, offset: int = 0,
                 echo: Any = print):
        self.inner, self.schema, self.folder, self.offset, self.echo = inner, schema, folder, offset, echo
        self._started = 0.0
        self._sent = 0
        self._names: dict[int, str] = {}  # node id → the name its replies gave

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._started = time.monotonic()
        messages = list(self.inner.configure_train(server_round + self.offset, arrays, config, grid))
        self._sent = len(messages)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        r = server_round + self.offset
        accepted: list[Message] = []
        rows: list[dict[str, Any]] = []
        for msg in replies:
            row = self._check(msg)
            rows.append({"round": r, **row})
            if row["status"] == "accepted":
                accepted.append(msg)
            else:
                self.echo(f"round {r}: {row['status']} {row['client']}: {row['reason']}")
        for row in rows:
            self.folder.log(row)
        arrays, metrics = self.inner.aggregate_train(r, accepted) if accepted else (None, None)
        if arrays is not None:
            self.folder.save_round(r, arrays_of(arrays))
        samples = sum(int(row.get("samples", 0)) for row in rows if row["status"] == "accepted")
        summary = {"round": r, "client": None, "sent": self._sent, "replies": len(rows),
                   "accepted": len(accepted), "missing": self._sent - len(rows), "samples": samples,
                   "seconds": time.monotonic() - self._started,
                   "bytes_per_client": self.schema.nbytes, "aggregated": arrays is not None}
        self.folder.log(summary)
        self.echo(f"round {r}: {len(accepted)} of {self._sent} clients averaged ({samples} samples), "
                  f"{summary['missing']} missing, {summary['seconds']:.1f} s")
        return arrays, metrics

    def _check(self, msg: Message) -> dict[str, Any]:
        node = msg.metadata.src_node_id
        if msg.has_error():
            return {"client": self._names.get(node, f"node-{node}"), "node": node, "status": "failed",
                    "reason": error_reason(msg.error.reason)}
        content = msg.content
        info = content.config_records.get("info") or ConfigRecord()
        name = self._names[node] = str(info.get("client", f"node-{node}"))
        row: dict[str, Any] = {"client": name, "node": node}
        try:
            records = list(content.array_records.values())
            if len(records) != 1:
                raise UsageError(f"{len(records)} array records; expected 1")
            metrics = list(content.metric_records.values())
            if len(metrics) != 1 or WEIGHT not in metrics[0]:
                raise UsageError(f"no metric record with {WEIGHT!r}")
            samples = metrics[0][WEIGHT]
            if isinstance(samples, bool) or not isinstance(samples, (int, float)) or not samples > 0:
                raise UsageError(f"{WEIGHT}={samples!r}: must be > 0")
            self.schema.check(arrays_of(records[0]), info.get(BUNDLE_ID))
        except UsageError as e:
            return {**row, "status": "refused", "reason": str(e)}
        report = json.loads(str(info.get("report", "{}")))
        return {**row, "status": "accepted", **report, "samples": int(samples)}

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round + self.offset, replies)


def error_reason(reason: object) -> str:
    """A ClientApp's exception as Flower reports it (``<class 'X'>:<'message'>``), as a line."""
    import re

    text = str(reason).strip()
    m = re.fullmatch(r"<class '(?:[\w.]+\.)?(\w+)'>:<(['\"])(.*)\2>", text, re.S)
    if m:  # a user error's message says it all; any other names its kind
        user = m.group(1) in ("EdgetuneError", "UsageError", "DataError")
        text = m.group(3) if user else f"{m.group(1)}: {m.group(3)}"
    return " ".join(text.split())[:400]


def serve(grid: Grid, fleet: FleetConfig, server: ServerConfig, echo: Any = print) -> FleetFolder:
    """Run (or resume) the fleet: rounds after the last aggregated one, up to ``fleet.rounds``."""
    bundle = Bundle.open(server.bundle)
    schema = TrainableSchema.of(bundle)
    folder = FleetFolder(server.out)
    fleet_id, done, saved = folder.start({"bundle_id": schema.bundle_id, "fleet": to_flower(fleet)},
                                         bundle=server.bundle)
    if done:
        echo(f"resuming {folder.path} after round {done} of {fleet.rounds}")
    if done >= fleet.rounds:
        return folder
    state = saved if saved is not None else initial_arrays(bundle)
    arrays = ArrayRecord({k: Array(v) for k, v in schema.check(state, schema.bundle_id).items()})
    echo(f"fleet {fleet_id}: {fleet.rounds} rounds of {fleet.local_steps} steps, {fleet.strategy}, "
         f"{len(schema.shapes)} trainable tensors ({schema.nbytes / 1e3:.1f} kB a client each way)")
    strategy = CheckedStrategy(make_strategy(fleet), schema, folder, offset=done, echo=echo)
    config = ConfigRecord({**to_flower(fleet), BUNDLE_ID: schema.bundle_id, FLEET_ID: fleet_id})
    evaluate_fn = _central(bundle, fleet, server, folder, done, echo) if server.val else None
    strategy.start(grid=grid, initial_arrays=arrays, num_rounds=fleet.rounds - done,
                   timeout=fleet.timeout, train_config=config, evaluate_fn=evaluate_fn)
    return folder


def _central(bundle: Bundle, fleet: FleetConfig, server: ServerConfig, folder: FleetFolder, offset: int,
             echo: Any):
    from edgetune.fleet.round import evaluate_arrays

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        r = server_round + offset
        res = evaluate_arrays(bundle, arrays_of(arrays), server.val, fleet, server.threads)
        folder.log({"round": r, "client": None, "central": True, "loss": res["loss"],
                    "accuracy": res["accuracy"], "count": res["count"]})
        echo(f"round {r}: central accuracy {res['accuracy']:.4f}, loss {res['loss']:.4f}")
        return MetricRecord({"loss": float(res["loss"]), "accuracy": float(res["accuracy"])})
    return evaluate


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        fleet, server = split_run_config(dict(context.run_config))
        folder = serve(grid, fleet, server)
    except EdgetuneError as e:  # one line in the run's log, not a traceback
        print(f"edgetune fleet: {e}", flush=True)
        raise SystemExit(2) from None
    from edgetune.fleet.plot import plot_rounds

    print(plot_rounds(folder), flush=True)
