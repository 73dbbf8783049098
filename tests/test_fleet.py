"""The fleet (edgetune/fleet/): its configs and split without Flower; the server's checks on
hand-made replies (a bad peer is named and left out, the good ones averaged by Flower's own
FedAvg); and Flower's real SuperLink and SuperNodes as separate processes on 127.0.0.1 (the
loopback tests, in the device environment: no torch, stock onnxruntime): the aggregate is the
sample-weighted mean of what the clients sent, a SIGKILLed client does not stall the round
and rejoins from its last checkpoint, a restarted server resumes after its last round."""

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from bundles import micro_bundle
from test_train import synthetic_images

from edgetune.bundle import Bundle
from edgetune.errors import UsageError
from edgetune.fleet.config import FleetConfig, NodeConfig, from_flower, split_run_config, to_flower
from edgetune.fleet.split import split_indices

from conftest import has
from numerics import RTOL, assert_close_normwise

flower = pytest.mark.skipif(not has("flwr"), reason="needs flwr (pip install 'edgetune[fleet]')")
# Real processes take ~20-60 s a test: they run once, in the device environment (no torch),
# where a fleet's clients run.
loopback = pytest.mark.skipif(has("torch") or not has("flwr"),
                              reason="the loopback fleet runs in the device environment (make test)")


# ---- configs and split (no flwr) -------------------------------------------------------------

def test_configs_come_from_flowers_keys_and_refuse_typos():
    fleet = from_flower(FleetConfig, {"rounds": 4, "local-steps": 5, "lr": 1, "reset-optimizer": True},
                        "run config")
    assert (fleet.rounds, fleet.local_steps, fleet.lr, fleet.reset_optimizer) == (4, 5, 1.0, True)
    assert fleet.total_steps == 20
    assert from_flower(FleetConfig, to_flower(fleet), "run config") == fleet
    with pytest.raises(UsageError, match="run config 'local_step'; did you mean 'local_steps'"):
        from_flower(FleetConfig, {"local-step": 5}, "run config")
    with pytest.raises(UsageError, match=r"FleetConfig.strategy='fedsgd': must be one of fedavg"):
        FleetConfig(strategy="fedsgd")
    with pytest.raises(UsageError, match="unknown AlastConfig option"):
        FleetConfig(alast="token_budgett=0.5")
    with pytest.raises(UsageError, match="NodeConfig.data='': must be a non-empty path"):
        NodeConfig(data="", bundle="b")
    with pytest.raises(UsageError, match="ram"):
        NodeConfig(data="d", bundle="b", ram_cap="lots")
    fleet, server = split_run_config({**to_flower(FleetConfig(rounds=2)), "bundle": "/b", "out": "/o"})
    assert fleet.rounds == 2 and (server.bundle, server.out, server.val) == ("/b", "/o", "")
    with pytest.raises(UsageError, match="unknown ServerConfig run config 'bundel'"):
        split_run_config({"bundel": "/b", "out": "/o"})


def test_split_is_seeded_disjoint_and_dirichlet_skews_the_labels():
    labels = np.repeat(np.arange(10), 100)
    for alpha in (None, 0.5):
        parts = split_indices(labels, 8, alpha, seed=3, min_size=16)
        again = split_indices(labels, 8, alpha, seed=3, min_size=16)
        assert all(np.array_equal(a, b) for a, b in zip(parts, again))
        joined = np.concatenate(parts)
        assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
        assert min(len(p) for p in parts) >= 16
    iid = split_indices(labels, 8, None, seed=3)
    skew = split_indices(labels, 8, 0.5, seed=3)

    def top_share(parts):  # the largest class's share of each client's data, averaged
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])
    assert top_share(iid) < 0.2 < 0.3 < top_share(skew)  # 0.14 and 0.35 with this seed
    with pytest.raises(UsageError, match="cannot give 8 clients 200 each"):
        split_indices(labels, 8, None, min_size=200)


# ---- the server's checks, on hand-made replies ------------------------------------------------

@pytest.fixture(scope="module")
def lora():
    return Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2))


def reply(node, arrays, samples, bundle_id, name=None):
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    content = RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": samples}),
                          "info": ConfigRecord({"bundle-id": bundle_id, "client": name or f"c{node}",
                                                "report": json.dumps({"steps": 1})})})
    return SimpleNamespace(metadata=SimpleNamespace(src_node_id=node), content=content,
                           has_error=lambda: False)


@flower
def test_a_bad_update_is_named_and_left_out_and_the_good_ones_are_averaged(lora, tmp_path):
    from flwr.serverapp.strategy import FedAvg

    from edgetune.fleet.folder import FleetFolder
    from edgetune.fleet.schema import TrainableSchema, initial_arrays
    from edgetune.fleet.server import CheckedStrategy

    schema, base = TrainableSchema.of(lora), initial_arrays(lora)
    sid = schema.bundle_id
    name = list(base)[-1]
    rng = np.random.default_rng(0)
    good = [{k: (v + rng.normal(size=v.shape)).astype(np.float32) for k, v in base.items()} for _ in range(2)]
    nan = {**good[0], name: np.full_like(good[0][name], np.nan)}
    bad = [reply(3, {**good[0], name: good[0][name].astype(np.float64)}, 10, sid),   # dtype
           reply(4, {**good[0], name: good[0][name][..., :1]}, 10, sid),             # shape
           reply(5, {**good[0], "blocks.0.attn.qkv.weight": good[0][name]}, 10, sid),  # names
           reply(6, good[0], 10, "0" * 64),                                           # bundle id
           reply(7, nan, 10, sid),                                                    # non-finite
           reply(8, good[0], 0, sid)]                                                 # no samples
    lines = []
    folder = FleetFolder(tmp_path / "fleet")
    folder.start({"bundle_id": sid})
    strategy = CheckedStrategy(FedAvg(weighted_by_key="num-examples"), schema, folder, echo=lines.append)
    arrays, _ = strategy.aggregate_train(1, [reply(1, good[0], 30, sid), *bad, reply(2, good[1], 10, sid)])
    got = {k: v.numpy() for k, v in arrays.items()}
    for k in base:
        want = (30 * good[0][k].astype(np.float64) + 10 * good[1][k]) / 40
        assert_close_normwise(got[k], want, k)
    refused = {r["client"]: r["reason"] for r in folder.metrics() if r.get("status") == "refused"}
    assert sorted(refused) == ["c3", "c4", "c5", "c6", "c7", "c8"]
    assert f"'{name}': dtype float64; must be float32" in refused["c3"]
    assert f"'{name}': shape" in refused["c4"]
    assert "does not train" in refused["c5"] and "bundle id '0000000000000000'" in refused["c6"]
    assert "not finite" in refused["c7"] and "num-examples=0" in refused["c8"]
    assert all(any(f"refused c{i}:" in line for line in lines) for i in range(3, 9)), lines
    assert set(folder.arrays(1)) == set(base)                       # the aggregate is saved


# ---- Flower's own processes on 127.0.0.1 ------------------------------------------------------

STEPS = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from edgetune.fleet.split import split_file

    d = tmp_path_factory.mktemp("fleet-data")
    synthetic_images(d / "train.npz", n=3 * 48)
    synthetic_images(d / "val.npz", n=48, seed=1)
    return split_file(d / "train.npz", 3, d / "split"), d / "val.npz"


def nodes(lora, files, out, extra=None, devices=("jetson-nano", "jetson-orin-nano", "raspberry-pi-5")):
    """A NodeConfig per file; ``extra``: client index → more of its fields."""
    return [NodeConfig(data=str(f), bundle=str(lora.path), out=str(out / "clients" / f"c{i}"), device=d,
                       threads=1, name=f"c{i}", **(extra or {}).get(i, {}))
            for i, (f, d) in enumerate(zip(files, devices))]


def last_sent(client_out: Path) -> dict[str, np.ndarray]:
    """What a client sent in its last round: its run folder's last checkpoint."""
    from edgetune.train import RunFolder
    from edgetune.train.engines import AdaptiveEngine

    (run,) = [p for p in client_out.iterdir() if p.is_dir()]     # one fleet id
    return AdaptiveEngine.read_trained(RunFolder(run).checkpoint("last"))


@loopback
def test_a_loopback_fleet_averages_what_its_clients_sent_by_samples(lora, shards, tmp_path):
    """A SuperLink and three SuperNodes (a Jetson Nano, an Orin and a Pi 5 profile, the Nano
    under a RAM cap), two rounds: the last aggregate is the sample-weighted mean of the
    clients' last states (norm-wise: Flower sums float32 products in its own order), each
    client's report names its profile, and the central accuracy rose."""
    from edgetune.fleet.local import run_local

    files, val = shards
    out = tmp_path / "fleet"
    cfg = FleetConfig(rounds=2, local_steps=STEPS, batch_size=16, lr=5e-3, timeout=120)
    ns = nodes(lora, files, out, {0: {"ram_cap": "3GB"}})
    folder = run_local(lora.path, ns, cfg, out, val=val, time_limit=240, echo=lambda _: None)
    rows = folder.metrics()
    last = [r for r in rows if r["round"] == 2 and r.get("status") == "accepted"]
    assert sorted(r["client"] for r in last) == ["c0", "c1", "c2"]
    assert {r["client"]: r["device"] for r in last} == {"c0": "jetson-nano", "c1": "jetson-orin-nano",
                                                       "c2": "raspberry-pi-5"}
    assert all(r["steps"] == STEPS and r["run_steps"] == 2 * STEPS and r["joules"] > 0 for r in last)
    assert "ram <= 3000MB" in next(r["caps"] for r in last if r["client"] == "c0")
    sent = {r["client"]: (r["samples"], last_sent(out / "clients" / r["client"])) for r in last}
    total = sum(w for w, _ in sent.values())
    got = folder.arrays(2)
    for k in got:
        want = sum(w * s[k].astype(np.float64) for w, s in sent.values()) / total
        assert_close_normwise(got[k], want, k, rtol=RTOL)
    central = {r["round"]: r for r in rows if r.get("central")}
    assert sorted(central) == [0, 1, 2] and central[2]["accuracy"] > central[0]["accuracy"], central
    _eval_and_merge_the_aggregate(out, val, central[2])


def _eval_and_merge_the_aggregate(out, val, central):
    """``edgetune eval FLEET`` scores the last aggregate as the server's central evaluation did
    (the same arrays, every token: loss to float32 summation noise, the same hits), and
    ``edgetune merge FLEET`` writes an inference model that plain onnxruntime runs to the same
    predictions."""
    import onnxruntime as ort

    from edgetune.fleet.result import evaluate_fleet, merge_fleet
    from edgetune.train import load_data

    res = evaluate_fleet(out, val)
    assert res["source"].endswith("(round 2 aggregate)") and res["tokens"] == "all"
    assert res["count"] == central["count"]
    assert res["accuracy"] == pytest.approx(central["accuracy"], abs=1.5 / res["count"])
    assert res["loss"] == pytest.approx(central["loss"], rel=1e-4)
    merged = merge_fleet(out)
    info = json.loads((merged / "merged.json").read_text())
    assert info["checkpoint"] == "round-2" and info["tokens"] == "all"
    ds = load_data(Bundle.open(info["bundle"]), val)
    sess = ort.InferenceSession(str(merged / info["inference"]["file"]), providers=["CPUExecutionProvider"])
    batch = ds.batch(np.arange(len(ds)))
    logits = sess.run(None, {k: batch[k] for k in info["inference"]["inputs"]})[0]
    hits = float(np.mean(logits.argmax(-1) == batch["labels"]))
    assert hits == pytest.approx(res["accuracy"], abs=1.5 / res["count"])
    with pytest.raises(UsageError, match="no trained budgets"):
        evaluate_fleet(out, val, tokens="trained")
    with pytest.raises(UsageError, match="holds rounds 1..2"):
        evaluate_fleet(out, val, server_round=3)


@loopback
def test_a_killed_client_does_not_stall_the_round_and_rejoins_from_its_checkpoint(lora, shards, tmp_path):
    """c2 is SIGKILLed (its SuperNode and ClientApp) while it trains round 2: the round goes on
    with the others within its timeout, and a restarted c2 resumes its run folder at round 3
    (its run counts 2 rounds of steps, not 1: round 1's checkpoint, not a fresh start). A
    power cap slows c2's steps so that the kill lands mid-round."""
    from edgetune.fleet.local import run_local

    files, val = shards
    out = tmp_path / "fleet"
    cfg = FleetConfig(rounds=3, local_steps=STEPS, batch_size=16, lr=5e-3, timeout=25)
    ns = nodes(lora, files, out, {2: {"power_cap": "2.9W"}})   # the Pi 5 idles at 2.7 W
    killed = {}

    def kill_in_round_2(local):
        metrics = out / "clients" / "c2"
        end = time.monotonic() + 120
        while time.monotonic() < end:
            rows = [json.loads(line) for f in metrics.glob("*/metrics.jsonl")
                    for line in f.read_text().splitlines()]
            if any(r["step"] > STEPS for r in rows):                   # round 2 has begun on c2
                local.kill_node("c2")
                killed["at_step"] = max(r["step"] for r in rows)
                local.start_node("c2", local.node_configs["c2"])
                return
            time.sleep(0.02)

    t0 = time.monotonic()
    folder = run_local(lora.path, ns, cfg, out, time_limit=300, echo=lambda _: None, during=kill_in_round_2)
    assert killed and STEPS < killed["at_step"] < 2 * STEPS, killed
    rows = folder.metrics()
    accepted = {(r["round"], r["client"]): r for r in rows if r.get("status") == "accepted"}
    assert (2, "c2") not in accepted
    assert (2, "c0") in accepted and (2, "c1") in accepted             # round 2 went on without it
    summary = {r["round"]: r for r in rows if r.get("client") is None and "sent" in r}
    assert summary[2]["aggregated"] and summary[2]["accepted"] == 2
    assert (3, "c2") in accepted and accepted[(3, "c2")]["run_steps"] == 2 * STEPS
    assert time.monotonic() - t0 < 240


@loopback
def test_a_restarted_server_resumes_after_its_last_aggregated_round(lora, shards, tmp_path):
    """The SuperLink (and its ServerApp) is killed once round 1 is saved; the same command
    again resumes at round 2 with round 1's aggregate, and the clients resume their runs."""
    from edgetune.errors import EdgetuneError
    from edgetune.fleet.local import run_local

    files, _ = shards
    out = tmp_path / "fleet"
    cfg = FleetConfig(rounds=3, local_steps=STEPS, batch_size=16, lr=5e-3, timeout=60)
    ns = nodes(lora, files[:2], out)

    def kill_server_after_round_1(local):
        end = time.monotonic() + 120
        while time.monotonic() < end and not (out / "state.json").is_file():
            time.sleep(0.05)
        local.superlink.stop(9)
        for pid in local_pids(local):
            os.kill(pid, 9)

    with pytest.raises(EdgetuneError, match="stopped after round 1 of 3"):
        run_local(lora.path, ns, cfg, out, time_limit=120, echo=lambda _: None,
                  during=kill_server_after_round_1)
    first = folder_rounds(out)
    lines = []
    folder = run_local(lora.path, ns, cfg, out, time_limit=180, echo=lines.append)
    assert any("resuming" in line and "after round 1" in line for line in lines), lines[:20]
    rows = folder.metrics()
    assert first == [1] and [r["round"] for r in rows if r.get("client") is None and "sent" in r] == [1, 2, 3]
    assert {r["run_steps"] for r in rows if r.get("status") == "accepted" and r["round"] == 3} == {3 * STEPS}


def folder_rounds(out):
    return [json.loads(line)["round"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("client") is None and "sent" in json.loads(line)]


def local_pids(local):
    """The ServerApp's processes: Flower's SuperExec and what it runs, by the SuperLink's port."""
    from edgetune.fleet.local import _by_port

    return _by_port({str(local.port)})
