"""``edgetune fleet``: federated fine-tuning on Flower (``local``: a SuperLink and N SuperNodes
on this machine; ``project``: the folder ``flwr run`` submits to real devices; ``split``: one
data file into a file per client). Imports no flwr until a command runs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from edgetune.fleet.config import STRATEGIES


def fleet_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The FleetConfig options, shared by ``local`` and ``project``."""
    options = [
        click.option("--rounds", type=int, default=3, show_default=True, help="Federated rounds."),
        click.option("--local-steps", type=int, default=10, show_default=True,
                     help="Optimizer steps each client runs per round."),
        click.option("--batch-size", type=int, default=16, show_default=True),
        click.option("--lr", type=float, default=1e-3, show_default=True,
                     help="The clients' AdamW; cosine over rounds x local steps."),
        click.option("--warmup", type=int, default=0, show_default=True),
        click.option("--schedule", type=click.Choice(["static", "alast"]), default="static",
                     show_default=True, help="alast: each client plans its own layers and tokens."),
        click.option("--set", "alast_settings", multiple=True, metavar="KEY=VALUE", help="ALaST option."),
        click.option("--reset-optimizer", is_flag=True,
                     help="Restart AdamW's moments at each round (default: each client keeps its own)."),
        click.option("--strategy", type=click.Choice(STRATEGIES), default="fedavg", show_default=True,
                     help="Flower's strategy: FedAvg (weighted by samples), FedAvgM, FedAdam."),
        click.option("--server-lr", type=float, default=1.0, show_default=True,
                     help="FedAvgM's / FedAdam's server learning rate."),
        click.option("--min-clients", type=int, default=2, show_default=True,
                     help="Clients a round waits for."),
        click.option("--round-timeout", type=float, default=600.0, show_default=True,
                     help="Seconds a round waits for replies; a client that has not answered is left out."),
        click.option("--labels", default="", help="Class names of string labels, comma-separated "
                                                   "(every client must map them alike)."),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(options), f)


def _fleet_config(kw: dict[str, Any]):
    from edgetune.fleet.config import FleetConfig

    return FleetConfig(rounds=kw["rounds"], local_steps=kw["local_steps"], batch_size=kw["batch_size"],
                       lr=kw["lr"], warmup=kw["warmup"], schedule=kw["schedule"],
                       alast=";".join(kw["alast_settings"]), reset_optimizer=kw["reset_optimizer"],
                       strategy=kw["strategy"], server_lr=kw["server_lr"], min_clients=kw["min_clients"],
                       timeout=kw["round_timeout"], labels=kw["labels"], seed=kw["seed"])


def _per_client(value: str | None, n: int, flag: str) -> list[str]:
    """``a,b``: one value per client, cycled; empty: none."""
    from edgetune.errors import UsageError

    parts = [p.strip() for p in (value or "").split(",")]
    if len(parts) > n:
        raise UsageError(f"{flag} {value!r}: {len(parts)} values for {n} clients")
    return [parts[i % len(parts)] for i in range(n)]


@click.group()
def fleet() -> None:
    """Federated fine-tuning on Flower: each device under its own profile and caps."""


@fleet.command("local")
@click.argument("bundle", type=click.Path())
@click.option("--data", type=click.Path(), default=None,
              help="One training file split across --clients (.npz, .jsonl, .csv, .tsv).")
@click.option("--client-data", type=click.Path(), multiple=True,
              help="A client's own training file; repeat once per client (instead of --data).")
@click.option("--clients", type=int, default=2, show_default=True, help="Clients to split --data across.")
@click.option("--alpha", type=float, default=None,
              help="Non-IID split: Dirichlet(alpha) label shares per client (default: IID).")
@click.option("--val", type=click.Path(), default=None, help="Central evaluation after every round.")
@click.option("--device", "devices", default=None,
              help="Device profiles per client, comma-separated, cycled (jetson-nano,jetson-orin-nano).")
@click.option("--ram-cap", default=None, help="Peak RSS caps per client, comma-separated (3GB,6GB).")
@click.option("--energy-cap", default=None, help="Energy caps per client for the whole run (5kJ,10kJ).")
@click.option("--threads", type=int, default=0, help="ONNX Runtime threads per client (0: all cores).")
@click.option("--out", type=click.Path(), required=True, help="Fleet folder (server and clients).")
@click.option("--time-limit", type=float, default=3600.0, show_default=True,
              help="Seconds before the whole fleet is stopped.")
@fleet_options
def local(bundle, data, client_data, clients, alpha, val, devices, ram_cap, energy_cap, threads, out,
          time_limit, **kw):
    """Run a fleet of Flower SuperNodes on this machine (a SuperLink, one SuperNode per client,
    `flwr run`), then print each round's clients: plan, joules, peak RSS."""
    from pathlib import Path

    from edgetune.errors import UsageError
    from edgetune.fleet.config import NodeConfig
    from edgetune.fleet.local import run_local
    from edgetune.fleet.report import round_table
    from edgetune.fleet.split import split_file

    cfg = _fleet_config(kw)
    out = Path(out)
    if (out / "fleet.json").exists():
        click.echo(f"{out} holds a fleet run: resuming after its last aggregated round", err=True)
    if bool(data) == bool(client_data):
        raise UsageError("give --data (split across --clients) or --client-data once per client")
    files = [Path(f) for f in client_data] or split_file(
        data, clients, out / "data", alpha=alpha, seed=cfg.seed, min_size=cfg.batch_size)
    n = len(files)
    if n < cfg.min_clients:
        raise UsageError(f"--min-clients {cfg.min_clients}: only {n} clients")
    names = [f"client-{i}" for i in range(n)]
    profiles, rams, energies = (_per_client(v, n, flag) for v, flag in
                                ((devices, "--device"), (ram_cap, "--ram-cap"), (energy_cap, "--energy-cap")))
    nodes = [NodeConfig(data=str(f), bundle=str(bundle), out=str(out / "clients" / name), device=d,
                        ram_cap=r, energy_cap=e, threads=threads, name=name)
             for f, name, d, r, e in zip(files, names, profiles, rams, energies)]
    folder = run_local(bundle, nodes, cfg, out, names=names, val=val, time_limit=time_limit,
                       echo=lambda line: click.echo(line, err=True))
    from edgetune.fleet.plot import plot_rounds

    click.echo(round_table(folder))
    click.echo(plot_rounds(folder))


@fleet.command("project")
@click.argument("folder", type=click.Path())
@click.option("--bundle", type=click.Path(), required=True, help="The server's copy of the bundle.")
@click.option("--out", type=click.Path(), required=True, help="The server's fleet folder.")
@click.option("--val", type=click.Path(), default=None, help="Central evaluation after every round.")
@fleet_options
def project(folder, bundle, out, val, **kw):
    """Write the Flower project folder for real devices and print how to start the fleet."""
    from edgetune.bundle import Bundle
    from edgetune.fleet.project import write_project

    b = Bundle.open(bundle)
    path = write_project(folder, _fleet_config(kw), bundle, out, val)
    click.echo(f"""{path / 'pyproject.toml'}: edgetune's ServerApp and ClientApp, bundle {b.sha256[:16]}
workstation:  pip install 'edgetune[fleet,cpu]'
              flower-superlink --port 8000 --disable-runtime-dependency-installation \\
                --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key
              (--insecure in place of the three TLS files on a trusted network only)
each device:  pip install 'edgetune[fleet,cpu]'   (and a copy of the bundle folder)
              flower-supernode --superlink WORKSTATION:8000 --root-certificates ca.crt \\
                --node-config "data='/data/train.npz' bundle='/opt/bundle' device='jetson-nano' ram-cap='3GB'"
submit:       in ~/.flwr/config.toml:  [superlink.fleet]  address = "WORKSTATION:8000"
                                       root-certificates = "/abs/ca.crt"
              flwr run {path} fleet --stream
Node authentication, the node-config keys and the metrics: docs/fleet.md.""")


@fleet.command("split")
@click.argument("data", type=click.Path())
@click.option("--clients", type=int, required=True)
@click.option("--alpha", type=float, default=None, help="Dirichlet(alpha) label shares (default: IID).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--out", type=click.Path(), required=True)
def split(data, clients, alpha, seed, label_column, out):
    """Split one data file into a file per client (IID, or non-IID by label)."""
    from edgetune.fleet.split import split_file

    for path in split_file(data, clients, out, alpha=alpha, seed=seed, label_column=label_column):
        click.echo(path)
