"""The Hugging Face side of ``bench/lm.py`` (imported by its child, never by the parent):
transformers + PEFT LoRA on the same checkpoint folder and the very batches edgetune's loader
makes from the same JSONL, or transformers' ``generate`` on the same prompt.

Equal work: no dropout, the loss over the same pre-shifted next-token targets (cross-entropy,
mean over targets, as the exported graph's), AdamW on the LoRA parameters, eager PyTorch.
Timed per step: forward, loss, backward, optimizer step (the batch already a tensor)."""

from __future__ import annotations

import statistics
import time

import numpy as np


def run(spec: dict, result: dict, status) -> None:
    import torch
    import torch.nn.functional as F
    import transformers

    torch.set_num_threads(spec["threads"])
    transformers.logging.set_verbosity_error()
    result["rss"]["imported"] = status("VmRSS")
    model = transformers.AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    model.config.use_cache = spec["task"] == "generate"
    if spec["task"] == "generate":
        model.eval()
        ids = torch.tensor([spec["prompt"]])
        times = []
        for _ in range(spec["repeats"]):
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(ids, do_sample=False, max_new_tokens=spec["new_tokens"],
                                     min_new_tokens=spec["new_tokens"], pad_token_id=0)
            times.append(time.perf_counter() - t)
        result["tokens"] = out[0, len(spec["prompt"]):].tolist()
        result["seconds"] = statistics.median(times)
        return
    import peft

    from edgetune.data import LMSpec, load_dataset

    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                       target_modules=["q_proj", "v_proj"],
                                                       task_type="CAUSAL_LM"))
    model.train()
    ds = load_dataset(spec["data"], LMSpec(tokenizer_path=spec["tokenizer"], max_length=spec["tokens"],
                                           eos_id=spec["eos_id"]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    result["rss"]["open"] = status("VmRSS")
    times, losses = [], []
    for step in range(spec["steps"]):
        batch = ds.batch(rng.choice(len(ds), spec["batch"], replace=False))
        ids, labels = torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["labels"])
        t = time.perf_counter()
        logits = model(input_ids=ids).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        losses.append(float(loss))
        if step == 0:
            result["rss"]["step1"] = status("VmRSS")
    result["step_s"] = statistics.median(times[1:] if len(times) > 2 else times)
    result["losses"] = losses
