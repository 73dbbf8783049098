"""What a PEFT method costs per step: full fine-tuning vs static LoRA vs ALaST+LoRA, per engine.

    python bench/peft_cost.py [--quick] [--model M] [--image-size S] [--batch-size B]
                              [--steps N] [--rounds R] [--configs a,b] [--bundles DIR] [--out DIR]

Default: the 6-layer, 192-wide ViT of ``bench/pretrain_vit.py`` (``bench/backbones/vit-fmnist``; another
checkpoint folder or model name with ``--model``) at 56 px (197 tokens), batch 32;
LoRA r 16 on every linear layer (qkv, proj, fc1, fc2; the head trains too).

Each configuration x engine trains in its own fresh process (the :class:`~edgetune.train.Trainer`
the CLI drives, ``import torch`` blocked as on a device), for ``--steps`` steps on random
28x28 uint8 images (the loader resizes them). ``--rounds`` repeats the whole set of processes,
alternating configurations, so a slow spell of a busy machine hits every row alike; the table
reports medians over the rounds.

- s/step: the median ``step_time`` of the Trainer's records (the engine's train step: forward,
  backward, optimizer), the first step left out;
- peak RSS: the process's VmHWM, read by an exit hook (the high-water mark of the address space
  exec made: nothing of this parent counts);
- breakdown: seconds per step in each ORT session run (adaptive: per graph kind, summed over the
  blocks; static: ORT's training graph and its optimizer graph), median over the timed steps;
- memory: parameters (all, and trainable), AdamW state (two moments; plus the gradients),
  RSS after the engine opened (parameters + sessions), after the first step (the arena grown
  to one step's peak), and at the end. Adaptive: the activations the forward graphs save for
  backward, measured (bytes of the saved tensors of one step);
- ``--profile``: one more process per row with ORT's profiler on (not timed): kernel time per
  step, forward and backward, and the top op types. Static: the training graph profiled as a
  plain session on the step's own inputs, and the bytes forward nodes hand to gradient nodes
  (an upper bound: a node's outputs are counted whole); ORT keeps those inside its graph.

``--quick``: vit-micro at its own size, batch 4, 3 steps, 1 round: a smoke test (seconds), not a
measurement. Writes ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_VIT, child_script, run_child  # noqa: E402

VIT_LINEARS = ("qkv", "proj", "fc1", "fc2")  # every nn.Linear of a ViT block (export/models/vit.py)
LORA_SET = ("r=16", f"target_modules={','.join(VIT_LINEARS)}")
# name → (label, method, schedule, engines)
CONFIGS = {
    "full": ("full fine-tuning", "full", "static", ("static", "adaptive")),
    "lora": ("static LoRA r16", "lora", "static", ("static", "adaptive")),
    "alast-lora": ("ALaST + LoRA r16", "lora", "alast", ("adaptive",)),
}

CHILD = child_script("peft_cost_child", block_torch=True)


def export_bundles(model: str, image_size: int | None, out: Path, quick: bool) -> dict[str, Path]:
    """One bundle per method (both modes), exported unless already there."""
    from edgetune.export import export_bundle

    bundles = {}
    for method in sorted({c[1] for c in CONFIGS.values()}):
        path = out / f"{Path(model).name}-{method}"
        if not (path / "manifest.json").is_file():
            cfg = list(LORA_SET) if method == "lora" else []
            if quick and method == "lora":
                cfg = ["r=4", f"target_modules={','.join(VIT_LINEARS)}"]
            export_bundle(model, method, path, method_config=cfg, num_classes=10, mode="both",
                          image_size=image_size, overwrite=True)
        bundles[method] = path
    return bundles


def write_data(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
             y=rng.integers(0, 10, n).astype(np.int64))


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(runs: list[dict]) -> dict:
    """Medians over the rounds of each process's own medians."""
    out = {"s_per_step": median([r["s_per_step"] for r in runs]),
           "peak_rss_mb": median([r["peak_rss"] / 2**20 for r in runs]),
           "rounds": len(runs)}
    keys = sorted({k for r in runs for k in r["breakdown"]})
    out["breakdown"] = {k: median([r["breakdown"].get(k, 0.0) for r in runs]) for k in keys}
    first = runs[0]
    out["memory_mb"] = {k: v / 2**20 for k, v in first["memory"].items()}
    out["rss_mb"] = {k: median([r["rss"][k] / 2**20 for r in runs]) for k in first["rss"]}
    out["mode"] = first["mode"]
    if "profile" in first:
        out["profile"] = first["profile"]
    return out


def table(results: dict[str, dict], baseline: str) -> str:
    base = results.get(baseline)
    head = f"{'configuration':<34}{'s/step':>8}{'x full':>8}{'peak MiB':>10}{'x full':>8}"
    lines = [head, "-" * len(head)]
    for r in results.values():
        rt = r["s_per_step"] / base["s_per_step"] if base else float("nan")
        rm = r["peak_rss_mb"] / base["peak_rss_mb"] if base else float("nan")
        lines.append(f"{r['label']:<34}{r['s_per_step']:>8.3f}{rt:>8.2f}{r['peak_rss_mb']:>10.0f}{rm:>8.2f}")
    lines.append("")
    for r in results.values():
        parts = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["breakdown"].items(), key=lambda kv: -kv[1]))
        mem = ", ".join(f"{k} {v:.1f}" for k, v in r["memory_mb"].items())
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r["rss_mb"].items())
        lines.append(f"{r['label']}:\n  s/step by graph: {parts}\n  memory MiB: {mem}\n  RSS MiB: {rss}")
        if "profile" in r:
            p = r["profile"]
            ops = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in p["top_ops"])
            lines.append(f"  profile (ms/step): forward {p['forward_s'] * 1e3:.0f}, "
                         f"backward {p['backward_s'] * 1e3:.0f}; saved for backward ≤ "
                         f"{p['saved_bytes'] / 2**20:.0f} MiB; top ops: {ops}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--configs", default="")
    p.add_argument("--profile", action="store_true",
                   help="one more process per row, ORT's profiler on")
    p.add_argument("--bundles", type=Path, default=None, help="where bundles are exported (reused)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-peft-cost"))
    a = p.parse_args(argv)
    if a.quick:
        model, image_size, batch, steps, rounds = a.model or "vit-micro", a.image_size, 4, 3, 1
    else:
        if a.model is None and not DEFAULT_VIT.is_dir():
            p.error(f"{DEFAULT_VIT} is missing (bench/pretrain_vit.py writes it): pass --model")
        model = a.model or str(DEFAULT_VIT)
        image_size = a.image_size or 56
        batch, steps, rounds = a.batch_size, a.steps, a.rounds
    a.out.mkdir(parents=True, exist_ok=True)
    bundles_dir = a.bundles or a.out / "bundles"
    bundles_dir.mkdir(parents=True, exist_ok=True)
    bundles = export_bundles(model, image_size, bundles_dir, a.quick)
    data = a.out / "data.npz"
    write_data(data, max(batch * (steps + 2), 64))
    wanted = [c for c in (a.configs.split(",") if a.configs else CONFIGS)]
    rows = [(f"{c}/{e}", c, e) for c in wanted for e in CONFIGS[c][3]]
    runs: dict[str, list[dict]] = {tag: [] for tag, _, _ in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(rounds):
            order = rows if rnd % 2 == 0 else rows[::-1]  # alternate, so drift hits every row
            for tag, cfg, engine in order:
                label, method, schedule, _ = CONFIGS[cfg]
                spec = {"tag": tag.replace("/", "-"), "bundle": str(bundles[method]),
                        "data": str(data), "mode": engine, "schedule": schedule, "batch": batch,
                        "steps": steps, "threads": a.threads}
                runs[tag].append(run_child(CHILD, spec, Path(tmp)))
                print(f"round {rnd + 1}/{rounds} {tag}: {runs[tag][-1]['s_per_step']:.3f} s/step, "
                      f"peak {runs[tag][-1]['peak_rss'] / 2**20:.0f} MiB", file=sys.stderr)
        results = {}
        for tag, cfg, engine in rows:
            results[tag] = summarize(runs[tag])
            results[tag]["label"] = f"{CONFIGS[cfg][0]} [{engine}]"
        if a.profile:
            prof_dir = a.out / "profiles"
            prof_dir.mkdir(exist_ok=True)
            for old in prof_dir.glob("*.json"):
                old.unlink()
            for tag, cfg, engine in rows:
                label, method, schedule, _ = CONFIGS[cfg]
                spec = {"tag": "prof-" + tag.replace("/", "-"), "bundle": str(bundles[method]),
                        "data": str(data), "mode": engine, "schedule": schedule, "batch": batch,
                        "steps": min(steps, 3), "threads": a.threads,
                        "profile": str(prof_dir / tag.replace("/", "-"))}
                results[tag]["profile"] = run_child(CHILD, spec, Path(tmp))["profile"]
    report = {"model": model, "image_size": image_size, "batch": batch, "steps": steps,
              "rounds": rounds, "lora": list(LORA_SET), "results": results}
    text = table(results, "full/static" if "full/static" in results else next(iter(results)))
    print(text)
    (a.out / "results.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
