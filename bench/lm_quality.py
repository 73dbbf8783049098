"""A language model's quality run: the project's own small LM (bench/pretrain_lm.py, pretrained
on movie reviews) fine-tuned on the device on a different text — Python's documentation
(``pydoc_data.topics``, which ships with Python) — LoRA against full fine-tuning against
ALaST + LoRA: held-out perplexity before and after, time, peak RSS, and generated samples.

    .venv/bin/python bench/pretrain_lm.py --out runs/lm-reviews
    .venv/bin/python bench/lm_quality.py --model runs/lm-reviews --out runs/lm-quality
    .venv/bin/python bench/lm_quality.py --model /tmp/lm-quick --quick --out /tmp/lmq   # smoke

Data: every documentation topic cut into paragraphs, paragraphs grouped into rows of at most
``--chars`` characters; topics split 90 / 10 (seeded) into train and held-out, so held-out
text is from topics training never saw. Each row trains in a fresh ``edgetune train`` process
on the device environment (stock onnxruntime, ``import torch`` blocked); perplexity is
``edgetune eval`` on the held-out rows (every target token), before (the bundle's initial
weights) and after (the run's last checkpoint; the held-out file is also the run's --val, for
its progress records only).
Writes OUT/results.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from common import CLI, evaluate, no_torch_env, say, train  # noqa: E402

DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"
ROWS = (  # name, method, schedule, learning rate
    ("LoRA", "lora", "static", 3e-3),
    ("ALaST + LoRA", "lora", "alast", 3e-3),
    ("full fine-tuning", "full", "static", 3e-4),
)
PROMPTS = ("The assert statement", "A function definition")


def doc_rows(chars: int, seed: int = 0) -> tuple[list[str], list[str]]:
    import pydoc_data.topics as topics

    names = sorted(topics.topics)
    order = np.random.default_rng(seed).permutation(len(names))
    held = {names[i] for i in order[: max(1, len(names) // 10)]}
    train, val = [], []
    for name in names:
        rows, cur = [], ""
        for para in (p.strip() for p in topics.topics[name].split("\n\n")):
            if not para:
                continue
            if cur and len(cur) + len(para) + 2 > chars:
                rows.append(cur)
                cur = ""
            cur = f"{cur}\n\n{para}" if cur else para[:chars]
        if cur:
            rows.append(cur)
        (val if name in held else train).extend(rows)
    return train, val


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def export(model: Path, method: str, out: Path, tokens: int) -> Path:
    if not (out / "manifest.json").is_file():
        cmd = [*CLI, "export", str(model), "--method", method, "--max-tokens", str(tokens), "--out", str(out),
               "--overwrite"]
        say("$ edgetune " + " ".join(cmd[3:]))
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def generate(python: str, source: Path, prompt: str, env: dict, *extra: str) -> str:
    cmd = [python, "-m", "edgetune.cli", "generate", str(source), "--prompt", prompt,
           "--max-new-tokens", "48", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"edgetune generate failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout.rstrip("\n")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="bench/pretrain_lm.py's folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--chars", type=int, default=480)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.steps = 10
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    python = str(DEVICE_PYTHON if DEVICE_PYTHON.is_file() else sys.executable)
    env = {**no_torch_env(a.out)}
    train_texts, val_texts = doc_rows(a.chars)
    data = {"train": write_jsonl(a.out / "docs-train.jsonl", train_texts),
            "val": write_jsonl(a.out / "docs-val.jsonl", val_texts)}
    say(f"{len(train_texts)} training rows, {len(val_texts)} held-out rows (held-out topics)")
    pretrained = a.model / "results.json"
    results: dict = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                     "pretrained": json.loads(pretrained.read_text()) if pretrained.is_file() else None,
                     "rows": {}}
    bundles = {m: export(a.model, m, a.out / f"bundle-{m}", a.tokens) for m in {r[1] for r in ROWS}}
    before = evaluate(bundles["lora"], data["val"], env)
    results["before"] = before
    results["samples_before"] = {q: generate(python, bundles["lora"], q, env) for q in PROMPTS}
    for name, method, schedule, lr in ROWS:
        run = a.out / "runs" / f"{method}-{schedule}"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        proc = train([str(bundles[method]), "--data", str(data["train"]), "--val", str(data["val"]),
                      "--steps", str(a.steps), "--batch-size", str(a.batch), "--lr", f"{lr:g}",
                      "--warmup", str(max(1, a.steps // 20)), "--schedule", schedule,
                      "--eval-every", str(max(1, a.steps // 5)), "--threads", str(a.threads), "--quiet"],
                     run, env, python)
        if proc.returncode:
            raise SystemExit(f"{name}: edgetune train failed: {proc.error}")
        after = evaluate(run, data["val"], env, "--checkpoint", "last")
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        steps = [m for m in metrics if "step_time" in m]
        results["rows"][name] = {
            "method": method, "schedule": schedule, "lr": lr, "after": after, "wall_s": proc.wall_s,
            "peak_rss_mb": proc.peak_rss_mb, "step_s": float(np.median([m["step_time"] for m in steps[1:]])),
            "trainable": json.loads((bundles[method] / "manifest.json").read_text())["params"]["trainable"],
            "layers_trained_mean": float(np.mean([len(m["layers_trained"]) for m in steps])),
            "samples": {q: generate(python, run, q, env, "--checkpoint", "last") for q in PROMPTS},
            "sampled": generate(python, run, PROMPTS[0], env, "--checkpoint", "last", "--temperature", "0.8",
                                "--top-p", "0.9", "--seed", "0"),
        }
    (a.out / "results.json").write_text(json.dumps(results, indent=1))
    table = render(results, a)
    (a.out / "table.md").write_text(table)
    print(table)
    return results


def render(r: dict, a) -> str:
    pre = r["pretrained"] or {}
    lines = [f"Pretrained on movie reviews ({pre.get('params', 0):,} parameters, held-out review "
             f"perplexity {pre.get('val_perplexity', float('nan')):.1f}); fine-tuned on the device on "
             f"Python's documentation, {a.steps} steps × {a.batch} rows of ≤ {a.tokens} tokens; "
             "perplexity on held-out topics.", "",
             "| row | trainable | perplexity before | after | s/step | peak RSS | layers trained |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in r["rows"].items():
        lines.append(f"| {name} | {row['trainable']:,} | {r['before']['perplexity']:.1f} | "
                     f"{row['after']['perplexity']:.1f} | {row['step_s']:.3f} | "
                     f"{row['peak_rss_mb']:.0f} MiB | {row['layers_trained_mean']:.1f} |")
    lines += ["", "Greedy samples (48 new tokens):", ""]
    for q, text in r["samples_before"].items():
        lines.append(f"- before, `{q}`: {json.dumps(text)}")
    for name, row in r["rows"].items():
        for q, text in row["samples"].items():
            lines.append(f"- {name}, `{q}`: {json.dumps(text)}")
    lines.append(f"- LoRA, sampled (T 0.8, top-p 0.9, seed 0): {json.dumps(r['rows']['LoRA']['sampled'])}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
