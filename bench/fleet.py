"""A fleet against one machine: federated LoRA (and ALaST + LoRA) on non-IID clients vs
centralised training at the same total steps, bytes on the wire, and a mixed-profile round.

Tasks (bench/methods.py's, same bundles, same learning rates):

- ``vit``: the project's pretrained ViT (``--vit``, bench/pretrain_vit.py) at 56 px → MNIST
  (bench/mnist.py's splits);
- ``text``: all-MiniLM-L6-v2 → Rotten Tomatoes (split by movie, as ``make demo``).

Per task and row (LoRA static, LoRA + ALaST):

- **federated**: ``edgetune fleet local`` — a real ``flower-superlink``, ``--clients``
  ``flower-supernode`` processes on 127.0.0.1, Flower's FedAvg weighted by samples — on a
  Dirichlet(``--alpha``) label split of the train set (seeded), ``--rounds`` rounds of
  ``--local-steps`` steps per client, then the last aggregate's test accuracy
  (``edgetune eval FLEET``, every token);
- **centralised**: ``edgetune train`` on the whole train set for rounds × clients × local steps
  steps (the fleet's total), same batch, learning rate and schedule, last checkpoint, every token;
- bytes each client receives and sends per round (the trainable tensors' payload, float32;
  Flower's framing not counted) against the full model's parameters, and wall seconds per round
  (the server's, median over rounds; every client shares this machine's cores, so a round here
  is slower than on a fleet of devices).

Then, per task, the LoRA fleet again with ``--reset-optimizer`` (AdamW's moments restarted each
round) against the default (each client keeps its own), and a **mixed-profile round** on the
vit task (``--mixed``): three clients with the
``jetson-nano``, ``jetson-orin-nano`` and ``raspberry-pi-5`` profiles under their own RAM caps;
each client process's VmHWM is polled from outside (/proc, every 0.1 s) and set against its cap,
with the client's own joules and plan (tokens kept, layers trained, micro-batch).

Every process has ``import torch`` blocked (as on a device) and runs on ``--python`` (default:
the device environment, stock onnxruntime, when it exists).

    .venv/bin/python bench/fleet.py --vit runs/vit-fmnist --out runs/bench-fleet
    .venv/bin/python bench/fleet.py --quick --out /tmp/fleet          # micro models: a smoke test

Writes OUT/results.json, OUT/table.md and OUT/fleet-TASK.png (central accuracy per round).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import methods  # noqa: E402
from common import DEFAULT_VIT, json_default, last_error, no_torch_env, pyplot, say  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"
ROWS = (("lora", "static"), ("lora", "alast"))
# targets: accuracy within this many points of centralised; bytes ≥ this many times fewer
ACC_TARGET = {"vit": 1.0, "text": 1.5}
BYTES_TARGET = 50.0
MIXED = (("jetson-nano", "450MB"), ("jetson-orin-nano", ""), ("raspberry-pi-5", "600MB"))


def cli(python: str) -> list[str]:
    return [python, "-m", "edgetune.cli"]


def run_cli(python: str, args: list[str], env: dict[str, str], log: Path | None = None) -> tuple[str, float]:
    """``edgetune ARGS`` in a fresh process: stdout and wall seconds; exits naming the failure."""
    say(f"$ edgetune {' '.join(args)}")
    t = time.perf_counter()
    proc = subprocess.run([*cli(python), *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"edgetune {args[0]} failed (exit {proc.returncode}): {last_error(proc)}")
    return proc.stdout, wall


def eval_json(python: str, source: Path, data: Path, env: dict[str, str], *extra: str) -> dict:
    args = ["eval", str(source), "--data", str(data), "--json", "--tokens", "all", *extra]
    out, _ = run_cli(python, args, env)
    return json.loads(out.strip().splitlines()[-1])


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


def full_model_bytes(bundle: Path) -> int:
    m = json.loads((bundle / "manifest.json").read_text())
    return int(m["params"]["total"]) * 4


# ---- RSS from outside -------------------------------------------------------------------------
class ClientWatch:
    """Polls /proc every ``period`` s for ClientApp processes (``flwr-clientapp`` in the command
    line) and keeps each one's VmHWM by the client name its SuperNode's ``--node-config`` gives."""

    def __init__(self, period: float = 0.1):
        self.period, self.peak_kb, self._stop = period, {}, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ClientWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _read(path: str) -> str:
        try:
            with open(path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _name(self, pid: str) -> str | None:
        """The client name in the nearest ancestor's ``--node-config`` (``name='client-1'``)."""
        for _ in range(4):
            status = self._read(f"/proc/{pid}/status")
            ppid = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")), None)
            if ppid is None or ppid == "0":
                return None
            cmd = self._read(f"/proc/{ppid}/cmdline").replace("\0", " ")
            if "name=" in cmd:
                return cmd.split("name=", 1)[1].split()[0].strip("'\"")
            pid = ppid
        return None

    def _loop(self) -> None:
        names: dict[str, str | None] = {}
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                if "flwr-clientapp" not in self._read(f"/proc/{pid}/cmdline"):
                    continue
                if pid not in names:
                    names[pid] = self._name(pid)
                name = names[pid]
                hwm = next((int(ln.split()[1]) for ln in self._read(f"/proc/{pid}/status").splitlines()
                            if ln.startswith("VmHWM:")), None)
                if name is not None and hwm is not None:
                    self.peak_kb[name] = max(self.peak_kb.get(name, 0), hwm)
            self._stop.wait(self.period)


# ---- rows -------------------------------------------------------------------------------------
def federated(a, task, bundle: Path, schedule: str, out: Path, env: dict, extra: list[str],
              tag: str = "") -> dict:
    folder = out / "fed" / f"{task.name}-lora-{schedule}{tag}"
    if folder.exists():
        shutil.rmtree(folder)
    args = ["fleet", "local", str(bundle), "--data", str(task.data["train"]), "--clients", str(a.clients),
            "--alpha", str(a.alpha), "--val", str(task.data["val"]), "--rounds", str(a.rounds),
            "--local-steps", str(a.local_steps), "--batch-size", str(task.batch_size),
            "--lr", f"{task.lr(a.settings, 'lora'):g}", "--warmup", str(a.warmup), "--schedule", schedule,
            "--min-clients", str(a.clients), "--threads", "1", "--seed", str(a.seed),
            "--out", str(folder), *extra]
    for kv in a.settings.alast_set if schedule == "alast" else ():
        args += ["--set", kv]
    _, wall = run_cli(a.python, args, env, log=folder.parent / f"{folder.name}.log")
    rows = metrics(folder)
    rounds = [r for r in rows if r.get("client") is None and "sent" in r]
    central = [r for r in rows if r.get("central")]
    test = eval_json(a.python, folder, task.data["test"], env, "--threads", str(a.threads))
    payload = rounds[-1]["bytes_per_client"]
    return {"wall_s": wall, "test_accuracy": test["accuracy"], "round_s": [r["seconds"] for r in rounds],
            "accepted": [r["accepted"] for r in rounds],
            "central": [(r["round"], r["accuracy"]) for r in central],
            "bytes_per_client": payload, "folder": str(folder),
            "clients": [r for r in rows if r.get("client") and r.get("status") == "accepted"]}


def centralised(a, task, bundle: Path, schedule: str, out: Path, env: dict) -> dict:
    run = out / "central" / f"{task.name}-lora-{schedule}"
    if run.exists():
        shutil.rmtree(run)
    steps = a.rounds * a.clients * a.local_steps
    args = ["train", str(bundle), "--data", str(task.data["train"]), "--val", str(task.data["val"]),
            "--steps", str(steps), "--batch-size", str(task.batch_size),
            "--lr", f"{task.lr(a.settings, 'lora'):g}", "--warmup", str(a.warmup), "--schedule", schedule,
            "--seed", str(a.seed), "--threads", str(a.threads), "--eval-every", str(steps), "--quiet",
            "--out", str(run)]
    for kv in a.settings.alast_set if schedule == "alast" else ():
        args += ["--set", kv]
    _, wall = run_cli(a.python, args, env)
    test = eval_json(a.python, run, task.data["test"], env, "--checkpoint", "last",
                     "--threads", str(a.threads))
    vals = [r["val_accuracy"] for r in metrics(run) if "val_accuracy" in r]  # every token
    return {"wall_s": wall, "steps": steps, "test_accuracy": test["accuracy"], "run": str(run),
            "val_accuracy": vals[-1] if vals else None}


def mixed_round(a, task, bundle: Path, out: Path, env: dict) -> list[dict]:
    """One fleet of three profiles, two rounds, each client's VmHWM from outside."""
    folder = out / "fed" / f"{task.name}-mixed"
    if folder.exists():
        shutil.rmtree(folder)
    devices = ",".join(d for d, _ in MIXED)
    caps = ",".join(c for _, c in MIXED)
    args = ["fleet", "local", str(bundle), "--data", str(task.data["train"]), "--clients", str(len(MIXED)),
            "--alpha", str(a.alpha), "--rounds", "2", "--local-steps", str(a.local_steps),
            "--batch-size", str(task.batch_size), "--lr", f"{task.lr(a.settings, 'lora'):g}",
            "--schedule", "alast", "--device", devices, "--ram-cap", caps, "--min-clients", str(len(MIXED)),
            "--threads", "1", "--seed", str(a.seed), "--out", str(folder)]
    with ClientWatch() as watch:
        run_cli(a.python, args, env, log=folder.parent / f"{folder.name}.log")
    rows = [r for r in metrics(folder) if r.get("client") and r.get("status") == "accepted"]
    out_rows = []
    for (device, cap), i in zip(MIXED, range(len(MIXED))):
        name = f"client-{i}"
        mine = [r for r in rows if r["client"] == name]
        cap_mb = None if not cap else float(cap.removesuffix("MB"))
        hwm = watch.peak_kb.get(name)
        out_rows.append({
            "client": name, "device": device, "ram_cap_mb": cap_mb,
            "outside_peak_mb": None if hwm is None else hwm * 1024 / 1e6,
            "reported_peak_mb": max((r["peak_rss_mb"] for r in mine), default=None),
            "joules": sum(r["joules"] for r in mine), "steps": sum(r["steps"] for r in mine),
            "tokens_kept": mine[-1]["tokens_kept"] if mine else None,
            "layers_trained": mine[-1]["layers_trained"] if mine else None,
            "micro_batch": mine[-1]["micro_batch"] if mine else None,
            "rounds": len(mine)})
    return out_rows


# ---- report -----------------------------------------------------------------------------------
def table(results: dict, a) -> list[str]:
    lines = [f"{a.clients} clients, Dirichlet α = {a.alpha} (seed {a.seed}), {a.rounds} rounds × "
             f"{a.local_steps} local steps; centralised: {a.rounds * a.clients * a.local_steps} steps "
             "on the whole train set; test accuracy of the last aggregate / checkpoint, every token.", "",
             "| task | row | federated | centralised | Δ (pt) | target | bytes/round/client | full model | "
             "fewer | s/round (median) |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for key, r in results["rows"].items():
        task, schedule = key.split(":")
        fed, cen = r["federated"], r["centralised"]
        delta = 100 * (fed["test_accuracy"] - cen["test_accuracy"])
        ok = delta >= -ACC_TARGET[task]
        fewer = r["full_bytes"] / fed["bytes_per_client"]
        lines.append(
            f"| {task} | LoRA{' + ALaST' if schedule == 'alast' else ''} | {fed['test_accuracy']:.2%} | "
            f"{cen['test_accuracy']:.2%} | {delta:+.1f} | "
            f"≥ −{ACC_TARGET[task]:g}: {'met' if ok else 'missed'} | "
            f"{2 * fed['bytes_per_client'] / 1e3:.0f} kB | {2 * r['full_bytes'] / 1e6:.1f} MB | "
            f"{fewer:.0f}× ({'met' if fewer >= BYTES_TARGET else 'missed'}) | "
            f"{float(np.median(fed['round_s'])):.1f} |")
    if results.get("reset"):
        lines += ["", "AdamW across rounds (LoRA, static; test accuracy of the last aggregate):", "",
                  "| task | kept (default) | reset every round |", "|---|---:|---:|"]
        for task, r in results["reset"].items():
            lines.append(f"| {task} | {r['kept']:.2%} | {r['reset']:.2%} |")
    if results.get("mixed"):
        lines += ["", "Mixed-profile fleet (vit, ALaST + LoRA, 2 rounds): VmHWM of each ClientApp "
                  "process polled from outside.", "",
                  "| client | profile | RAM cap | peak RSS (outside) | within cap | joules | tokens kept "
                  "(mean per layer) | layers trained | micro-batch |",
                  "|---|---|---:|---:|---|---:|---|---:|---:|"]
        for m in results["mixed"]:
            cap = "none" if m["ram_cap_mb"] is None else f"{m['ram_cap_mb']:.0f} MB"
            peak = m["outside_peak_mb"]
            within = "n/a" if m["ram_cap_mb"] is None or peak is None else (
                "met" if peak <= m["ram_cap_mb"] else "missed")
            kept = "-" if not m["tokens_kept"] else "/".join(f"{k:.0f}" for k in m["tokens_kept"])
            lines.append(f"| {m['client']} | {m['device']} | {cap} | "
                         f"{'?' if peak is None else f'{peak:.0f} MB'} | {within} | {m['joules']:.0f} J | "
                         f"{kept} | {m['layers_trained']} | {m['micro_batch']} |")
    return lines


def plot(out: Path, task: str, results: dict) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, r in results["rows"].items():
        if not key.startswith(task + ":"):
            continue
        label = "LoRA + ALaST" if key.endswith("alast") else "LoRA"
        pts = r["federated"]["central"]
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=f"federated {label} (val)")
        if r["centralised"]["val_accuracy"] is not None:
            ax.axhline(r["centralised"]["val_accuracy"], color=line.get_color(), ls="--",
                       label=f"centralised {label}, {r['centralised']['steps']} steps (val)")
    ax.set_xlabel("round")
    ax.set_ylabel("validation accuracy, every token")
    ax.set_title(f"{task}: federated vs centralised")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"fleet-{task}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="micro models, synthetic data: a smoke test")
    ap.add_argument("--tasks", nargs="+", choices=["vit", "text"], default=["vit", "text"])
    ap.add_argument("--vit", type=Path, default=DEFAULT_VIT,
                    help="pretrained ViT folder (bench/pretrain_vit.py; default bench/backbones/vit-fmnist)")
    ap.add_argument("--mnist", type=Path, default=None, help="bench/mnist.py's splits (default: made in OUT)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of the label split")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="threads of centralised training and evaluation")
    ap.add_argument("--no-mixed", dest="mixed", action="store_false", help="skip the mixed-profile round")
    ap.add_argument("--no-reset", dest="reset", action="store_false",
                    help="skip the LoRA fleet that resets AdamW every round (the default keeps it)")
    ap.add_argument("--python", default=None, help="interpreter of the runs (default: .venv-device's)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    a.out = (a.out or ROOT / ("runs/bench-fleet" + ("-quick" if a.quick else ""))).resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    a.python = a.python or (str(DEVICE_PYTHON) if DEVICE_PYTHON.exists() else sys.executable)
    if a.quick:
        a.clients, a.rounds, a.local_steps = min(a.clients, 3), min(a.rounds, 2), min(a.local_steps, 2)
    a.settings = methods.Settings(out=a.out, seeds=1, threads=a.threads, warmup=a.warmup, eval_batch=64,
                                  baseline_mode="static", lr={}, alast_set=(), quick=a.quick,
                                  bundle_cache=a.out / "bundles")
    targs = argparse.Namespace(tasks=a.tasks, vit=a.vit, mnist=a.mnist, per_class=None, image_size=56,
                               steps=None, batch_size=None)
    env = {**no_torch_env(a.out), "PYTHONHASHSEED": "0"}
    results: dict = {"settings": {k: v for k, v in vars(a).items() if k != "settings"}, "rows": {}}
    for task in methods.make_tasks(targs, a.settings):
        say(f"== {task.title}")
        bundle = methods.bundle_for(a.settings, task, "lora")
        for _, schedule in ROWS:
            say(f"-- LoRA {schedule}: federated")
            fed = federated(a, task, bundle, schedule, a.out, env, [])
            say(f"   test {fed['test_accuracy']:.2%}, {fed['wall_s']:.0f} s")
            say(f"-- LoRA {schedule}: centralised")
            cen = centralised(a, task, bundle, schedule, a.out, env)
            say(f"   test {cen['test_accuracy']:.2%}, {cen['wall_s']:.0f} s")
            results["rows"][f"{task.name}:{schedule}"] = {"federated": fed, "centralised": cen,
                                                          "full_bytes": full_model_bytes(bundle)}
        if a.reset:
            say("-- LoRA static, optimizer reset every round: federated")
            fed = federated(a, task, bundle, "static", a.out, env, ["--reset-optimizer"], tag="-reset")
            say(f"   test {fed['test_accuracy']:.2%}, {fed['wall_s']:.0f} s")
            results.setdefault("reset", {})[task.name] = {
                "kept": results["rows"][f"{task.name}:static"]["federated"]["test_accuracy"],
                "reset": fed["test_accuracy"], "central": fed["central"]}
        if task.name == "vit" and a.mixed:
            say("-- mixed-profile fleet")
            results["mixed"] = mixed_round(a, task, bundle, a.out, env)
        plot(a.out, task.name, results)
    lines = table(results, a)
    (a.out / "table.md").write_text("\n".join(lines) + "\n")
    (a.out / "results.json").write_text(json.dumps(results, indent=1, default=json_default))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
