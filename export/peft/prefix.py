"""Prefix tuning: trainable keys and values in front of every attention layer's
(Li & Liang 2021, arXiv 2101.00190).

    Attn(Q, [P_K; K], [P_V; V]),   P_K, P_V ∈ R^{p×d} per layer.

Not mergeable. Saved as Hugging Face PEFT's ``prompt_embeddings`` (p, L·2·d), laid out
[layer][key, value][d] (no reparametrisation, ``prefix_projection=False``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgetune.config import check_float, check_int
from edgetune.errors import UsageError
from edgetune.export.models.layers import PrefixKV
from edgetune.export.peft.base import register_method


@dataclass
class PrefixConfig:
    num_virtual_tokens: int = 10
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_int(self, "num_virtual_tokens", lo=1, hi=512)
        check_float(self, "init_std", lo=0.0)


def attention_of(block):
    """The attention module that holds the ``prefix`` slot."""
    for path in ("attn", "self_attn", "attention.self"):
        try:
            return block.get_submodule(path)
        except AttributeError:
            continue
    raise UsageError(f"prefix tuning: {type(block).__name__} has no attention module "
                     "(attn, self_attn or attention.self)")


def prompt_learning_fields(model, cfg) -> dict:
    """The fields of PEFT's prompt-learning configs (prefix and prompt tuning)."""
    heads = model.blocks[0].attn.num_heads if model.family == "vit" else model.config.num_attention_heads
    return dict(num_virtual_tokens=cfg.num_virtual_tokens, token_dim=model.hidden_size,
                num_layers=model.num_layers, num_attention_heads=heads, num_transformer_submodules=1)


def hf_config(model, cfg: PrefixConfig) -> dict:
    return {**prompt_learning_fields(model, cfg), "encoder_hidden_size": model.hidden_size,
            "prefix_projection": False}


def adapter_keys(model) -> dict[str, list[str]]:
    """PEFT's one ``prompt_embeddings`` (p, L·2·d): [layer][key, value][d]."""
    paths = {id(m): n for n, m in model.named_modules()}
    return {"prompt_embeddings": [f"{paths[id(attention_of(block))]}.prefix.{kv}"
                                  for block in model.blocks for kv in ("key", "value")]}


@register_method("prefix", PrefixConfig, "trainable key/value prefixes in every attention layer",
                 mergeable=False, hf_peft_type="PREFIX_TUNING", hf_config=hf_config,
                 adapter_keys=adapter_keys, prompt_learning=True)
def inject(model, cfg: PrefixConfig) -> None:
    for block in model.blocks:
        attention = attention_of(block)  # keys and values as wide as its kv heads (GQA)
        d = getattr(attention, "kv_dim", model.hidden_size)
        attention.prefix = PrefixKV(cfg.num_virtual_tokens, d, cfg.init_std)
