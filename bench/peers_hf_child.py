"""The Hugging Face side of ``bench/peers.py`` (imported by its child, never by the parent):
transformers + PEFT trained in eager PyTorch on the very batches edgetune's loader makes from
the same file, so both engines see the same token ids (or pixels), the same batch and length.

Equal work: dropout 0 (edgetune's graphs have none), cross-entropy on the logits, AdamW
(torch's default implementation) on the trainable parameters, ``zero_grad(set_to_none=True)``.
Timed per step: forward, loss, backward and the optimizer step, with the batch already a tensor
(edgetune's ``step_time`` likewise times its engine's step, not the loader)."""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import numpy as np

# our ViT's linear layers → their names in transformers' ViT (fused qkv: three there), as
# transformers 5 names them, then as 4.x did
HF_VIT_TARGETS = {"qkv": (("q_proj", "k_proj", "v_proj"), ("query", "key", "value")),
                  "proj": (("o_proj",), ("attention.output.dense",)),
                  "fc1": (("mlp.fc1",), ("intermediate.dense",)),
                  "fc2": (("mlp.fc2",), ("output.dense",))}


def vit_targets(model, ours: list[str]) -> list[str]:
    """transformers' names of our ViT linear layers ``ours``, in the naming ``model`` uses."""
    names = [n for n, _ in model.named_modules()]
    out = []
    for t in ours:
        found = next((alt for alt in HF_VIT_TARGETS[t]
                      if all(any(n.endswith(a) for n in names) for a in alt)), None)
        if found is None:
            raise SystemExit(f"transformers' ViT has none of {HF_VIT_TARGETS[t]} (for our {t})")
        out += found
    return out


def build(spec: dict):
    """The peer model: the BERT checkpoint folder edgetune exported (minilm-l6), else a model of
    the manifest's shape with random weights (the same work)."""
    import transformers

    c = spec["config"]
    if spec["family"] == "bert":
        if spec["hf_folder"]:
            return transformers.BertForSequenceClassification.from_pretrained(
                spec["hf_folder"], num_labels=spec["num_classes"], hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
        cfg = transformers.BertConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
            num_hidden_layers=c["num_hidden_layers"],
            num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
            max_position_embeddings=c["max_position_embeddings"], type_vocab_size=c["type_vocab_size"],
            layer_norm_eps=c["layer_norm_eps"], num_labels=spec["num_classes"], hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
        return transformers.BertForSequenceClassification(cfg)
    cfg = transformers.ViTConfig(hidden_size=c["embed_dim"], num_hidden_layers=c["depth"],
                                 num_attention_heads=c["num_heads"],
                                 intermediate_size=int(c["mlp_ratio"] * c["embed_dim"]),
                                 image_size=c["image_size"], patch_size=c["patch_size"],
                                 num_channels=c["in_chans"], num_labels=spec["num_classes"],
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                 layer_norm_eps=c["layer_norm_eps"])
    return transformers.ViTForImageClassification(cfg)


def with_lora(model, spec: dict):
    import peft

    targets = list(spec["targets"])
    if spec["family"] == "vit":
        targets = vit_targets(model, targets)
    cfg = peft.LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=0.0, bias="none",
                          target_modules=targets, modules_to_save=["classifier"])
    return peft.get_peft_model(model, cfg)


class SavedBytes:
    """Bytes autograd saves for backward in one step (each storage counted once)."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, t):
        s = t.untyped_storage()
        self.storages[s.data_ptr()] = s.nbytes()
        return t

    @staticmethod
    def unpack(t):
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def run(spec: dict, result: dict, status) -> None:
    import peft  # noqa: F401
    import torch
    import torch.nn.functional as F
    import transformers  # noqa: F401

    from edgetune.bundle import Bundle
    from edgetune.train.inputs import load_data

    result["rss"]["imported"] = status("VmRSS")  # torch, transformers, peft (and edgetune's loader)
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = build(spec)
    if spec["method"] == "lora":
        model = with_lora(model, spec)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.0)
    if spec.get("compile"):  # inductor, default mode: the first step compiles (not timed)
        model = torch.compile(model)
    result["rss"]["engine_open"] = status("VmRSS")
    p_all = sum(p.numel() * p.element_size() for p in model.parameters())
    p_train = sum(p.numel() * p.element_size() for p in trainable)
    memory = {"params_all": p_all, "params_trainable": p_train, "adamw_moments": 2 * p_train,
              "gradients": p_train}
    data = load_data(Bundle.open(spec["bundle"], verify=False), spec["data"])
    names = {"input_ids", "attention_mask", "pixel_values"}
    bs, n = spec["batch"], len(data)
    times, shapes = [], set()

    def step(i: int, hooks=None) -> float:
        batch = data.batch(np.arange(i * bs, (i + 1) * bs) % n)
        inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items() if k in names}
        if "attention_mask" in inputs and not bool(inputs["attention_mask"].all()):
            raise SystemExit("a text was padded: every text must fill the positions (equal work)")
        shapes.add(tuple(next(iter(inputs.values())).shape))
        labels = torch.from_numpy(batch["labels"].astype(np.int64))
        t0 = time.perf_counter()
        with (torch.autograd.graph.saved_tensors_hooks(hooks.pack, hooks.unpack) if hooks else nullcontext()):
            loss = F.cross_entropy(model(**inputs).logits, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for i in range(spec["steps"]):
        times.append(step(i))
        if i == 0:
            result["rss"]["after_step1"] = status("VmRSS")
    result["rss"]["peak_steps"] = status("VmHWM")  # before the extra step below
    if spec.get("compile"):  # hooks would send dynamo back to eager: not the compiled graph's
        memory["saved_for_backward"] = None
    else:
        saved = SavedBytes()
        step(spec["steps"], saved)  # one more, untimed: what autograd saves
        memory["saved_for_backward"] = saved.total
    timed = times[1:] or times
    result.update(s_per_step=statistics.median(timed), step_times=times, memory=memory,
                  steps=len(times), mode="torch", input_shapes=sorted(shapes), breakdown={},
                  torch=torch.__version__, trainable_params=sum(p.numel() for p in trainable))
    result["rss"]["end"] = status("VmRSS")
