"""Our LLaMA-style decoder against transformers: tiny random LlamaForCausalLM / Qwen2ForCausalLM
models built here and saved with ``save_pretrained`` (nothing downloads), loaded by
``create_model(folder)``: logits, the loss over shifted labels with ignored positions, and every
parameter's gradient, norm-wise at the suite's fp32 bound (tests/numerics.py: micro models,
reductions ≤ 256, two blocks)."""

import json
import os

import pytest
import torch

from edgetune.errors import EdgetuneError, UsageError
from edgetune.export import create_model
from edgetune.export.models.causal_lm import IGNORE
from edgetune.export.models.gpt2 import CONV1D

from numerics import RTOL, assert_close_normwise

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers.logging.set_verbosity_error()

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def save_hf(tmp_path, kind="llama", shard=False, **over):
    """A random transformers model of ``kind`` saved to a folder; the model (eval mode)."""
    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**{**TINY, "tie_word_embeddings": True, **over})
        model = transformers.LlamaForCausalLM(cfg)
    elif kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=TINY["vocab_size"], n_positions=128, n_embd=64, n_layer=2,
                                      n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **over)
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.Qwen2Config(**{**TINY, "tie_word_embeddings": False, **over})
        model = transformers.Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # biases and norms away from their 0 / 1 initialisation
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path / kind
    model.save_pretrained(str(folder), max_shard_size="100KB" if shard else "5GB")
    return model.eval(), folder


def shifted(ids, lengths):
    """labels[:, t] = ids[:, t+1] where t+1 < length, −100 elsewhere (the data's convention)."""
    labels = torch.full_like(ids, IGNORE)
    for b, n in enumerate(lengths):
        labels[b, : n - 1] = ids[b, 1:n]
    return labels


def hf_labels(ids, lengths):
    """transformers' convention: labels = the inputs (it shifts), −100 on padding."""
    labels = ids.clone()
    for b, n in enumerate(lengths):
        labels[b, n:] = IGNORE
    return labels


@pytest.mark.parametrize("kind,over", [
    ("llama", {}),                                                       # GQA, tied head
    ("qwen2", {"rope_theta": 1e6}),                                      # q/k/v biases, untied head
    ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    ("gpt2", {}),                                                        # learned positions, Conv1D
])
def test_logits_loss_and_gradients_match_transformers(tmp_path, kind, over):
    ref, folder = save_hf(tmp_path, kind, **over)
    ours = create_model(folder).eval()
    assert ours.task == "causal_lm" and not ours.drops_tokens
    if kind == "llama" and not over:
        assert ours.lm_head.weight is ours.model.embed_tokens.weight
    torch.manual_seed(1)
    ids = torch.randint(0, TINY["vocab_size"], (3, 24))
    lengths = [24, 17, 9]   # right padding: later positions never reach earlier ones
    with torch.no_grad():
        want = ref(ids).logits
        got = ours(ids)
    assert_close_normwise(got, want, "logits")

    loss_ref = ref(ids, labels=hf_labels(ids, lengths)).loss
    loss_ref.backward()
    loss = ours.loss(ours(ids), shifted(ids, lengths))
    loss.backward()
    assert_close_normwise(loss.detach(), loss_ref.detach(), "loss")
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        want = ref_params[name].grad
        if kind == "gpt2" and name.endswith(CONV1D):  # Conv1D (in × out) vs our Linear
            want = want.t()
        assert_close_normwise(p.grad, want, name, rtol=RTOL)


def test_a_sharded_checkpoint_loads_as_one(tmp_path):
    ref, folder = save_hf(tmp_path, "qwen2", shard=True)
    assert (folder / "model.safetensors.index.json").is_file()
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    ids = torch.randint(0, TINY["vocab_size"], (2, 10))
    with torch.no_grad():
        assert_close_normwise(create_model(folder).eval()(ids), ref(ids).logits, "logits")


def test_what_a_language_model_refuses(tmp_path):
    _, folder = save_hf(tmp_path, "llama")
    with pytest.raises(UsageError, match="language model"):
        create_model(folder, 2)
    with pytest.raises(UsageError, match="a classifier.s classes"):
        create_model("bert-micro")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "mistral"}))
    with pytest.raises(EdgetuneError, match="supported are bert, vit, llama, qwen2"):
        create_model(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "hidden_act": "gelu"}))
    with pytest.raises(EdgetuneError, match="silu"):
        create_model(folder)


def test_the_micro_presets_build_and_predict_every_position():
    for name in ("llama-micro", "qwen2-micro", "gpt2-micro"):
        model = create_model(name).eval()
        (ids,) = model.example_inputs(2, 12)
        assert model(ids).shape == (2, 12, model.config.vocab_size)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_lora_gradients_match_peft(tmp_path, kind):
    """Our LoRA (PEFT's default targets: q_proj, v_proj; GPT-2's c_attn; r 8, α 16) against peft's on the same
    weights, A and B alike (B moved off zero so every gradient is generic)."""
    peft = pytest.importorskip("peft")
    from edgetune.export.peft import apply_method, trainable_names

    ref, folder = save_hf(tmp_path, kind)
    ours = create_model(folder).eval()
    apply_method(ours, "lora", None)
    gpt2 = kind == "gpt2"  # PEFT's default: the fused c_attn, its Conv1D weight in × out
    targets = ["c_attn"] if gpt2 else ["q_proj", "v_proj"]
    config = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets,
                             fan_in_fan_out=gpt2, task_type="CAUSAL_LM")
    theirs = peft.get_peft_model(ref, config).eval()
    named = dict(theirs.named_parameters())
    torch.manual_seed(2)
    with torch.no_grad():
        for name in trainable_names(ours):
            p = dict(ours.named_parameters())[name]
            p.copy_(torch.randn_like(p) * 0.1)
            named["base_model.model." + name.replace(".lora_A.weight", ".lora_A.default.weight")
                  .replace(".lora_B.weight", ".lora_B.default.weight")].copy_(p)
    ids = torch.randint(0, TINY["vocab_size"], (2, 16))
    lengths = [16, 11]
    theirs(ids, labels=hf_labels(ids, lengths)).loss.backward()
    ours.loss(ours(ids), shifted(ids, lengths)).backward()
    params = dict(ours.named_parameters())
    for name in trainable_names(ours):
        key = "base_model.model." + name.replace(".lora_A.weight", ".lora_A.default.weight") \
            .replace(".lora_B.weight", ".lora_B.default.weight")
        assert_close_normwise(params[name].grad, named[key].grad, name, rtol=RTOL)
