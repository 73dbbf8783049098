"""LLaMA-style decoder with Hugging Face's parameter names (Touvron et al. 2023): pre-norm
blocks with RMSNorm, rotary positions, grouped-query attention and a SwiGLU MLP,

    h = x + W_o · attn(rope(W_q · n₁(x)), rope(W_k · n₁(x)), W_v · n₁(x))
    y = h + W_down · (silu(W_gate · n₂(h)) ⊙ W_up · n₂(h))

then a final RMSNorm and the LM head (tied to the token embedding or not). The same code
covers the layouts of SmolLM2 and Llama 3.2 (``model_type: llama``; Llama 3's ``llama3``
rope scaling) and Qwen2.5 (``model_type: qwen2``: biases on q, k, v). Loads a checkpoint
folder: ``config.json`` and ``model.safetensors`` or a sharded ``model.safetensors.index.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgetune.config import check_float, check_int
from edgetune.errors import EdgetuneError, UsageError
from edgetune.export.models.causal_lm import CausalLM
from edgetune.export.models.layers.causal_attention import causal_attention
from edgetune.export.models.layers.rms_norm import RMSNorm
from edgetune.export.models.layers.rotary import Rotary, apply_rotary

MODEL_TYPES = ("llama", "qwen2")


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    head_dim: int = 0                    # 0: hidden_size / num_attention_heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None     # None, or {"rope_type": "llama3", "factor", ...}
    qkv_bias: bool = False               # Qwen2: True
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: list[int] = field(default_factory=list)
    model_type: str = "llama"

    def __post_init__(self) -> None:
        for f in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            check_int(self, f, lo=1)
        check_int(self, "head_dim", lo=0)
        check_float(self, "rms_norm_eps", lo=0.0, lo_open=True)
        check_float(self, "rope_theta", lo=0.0, lo_open=True)
        if self.model_type not in MODEL_TYPES:
            raise UsageError(f"LlamaConfig.model_type={self.model_type!r}: must be one of "
                             f"{', '.join(MODEL_TYPES)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise UsageError(f"LlamaConfig.num_key_value_heads={self.num_key_value_heads}: must divide "
                             f"num_attention_heads={self.num_attention_heads}")
        if not self.head_dim:
            if self.hidden_size % self.num_attention_heads:
                raise UsageError(f"LlamaConfig.num_attention_heads={self.num_attention_heads}: must divide "
                                 f"hidden_size={self.hidden_size} (or give head_dim)")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim % 2:
            raise UsageError(f"LlamaConfig.head_dim={self.head_dim}: must be even (rotary pairs)")


def llama_config_from_hf(cfg: dict) -> LlamaConfig:
    """Our config from a Hugging Face ``config.json`` (LlamaForCausalLM, Qwen2ForCausalLM); the
    rope settings as the hub writes them (``rope_theta``, ``rope_scaling``) or as transformers 5
    does (``rope_parameters``). What the code cannot run is refused, naming the key."""
    kind = cfg.get("model_type")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise EdgetuneError(f"config.json hidden_act={act!r}: LLaMA-style models must use silu")
    if cfg.get("use_sliding_window"):
        raise EdgetuneError("config.json use_sliding_window=true: sliding-window attention is not supported")
    rope = dict(cfg.get("rope_parameters") or {})
    theta = rope.pop("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    eos = cfg.get("eos_token_id")
    heads = int(cfg["num_attention_heads"])
    fields = dict(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads, num_key_value_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or 0, rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta), rope_scaling=scaling,
        qkv_bias=bool(cfg.get("attention_bias", kind == "qwen2")),
        o_bias=bool(cfg.get("attention_bias", False)), mlp_bias=bool(cfg.get("mlp_bias", False)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        max_position_embeddings=cfg.get("max_position_embeddings", 2048),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=[] if eos is None else [eos] if isinstance(eos, int) else list(eos),
        model_type=kind)
    return LlamaConfig(**fields)


class LlamaAttention(nn.Module):
    """``prefix`` is prefix tuning's slot (None unless the method fills it)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        d, h, kv, dh = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = h, kv, dh
        self.q_proj = nn.Linear(d, h * dh, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(d, kv * dh, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(d, kv * dh, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(h * dh, d, bias=cfg.o_bias)
        self.prefix = None

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and values): H_kv·d_h, what a prefix holds per token."""
        return self.num_kv_heads * self.head_dim

    def _qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries (B, H, N, d_h) and keys, values (B, H_kv, N, d_h), q and k rotated."""
        b = x.shape[0]
        q = self.q_proj(x).reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).reshape(b, -1, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).reshape(b, -1, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def _out(self, q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None = None) -> Tensor:
        context = causal_attention(q, k, v, key_bias)
        return self.o_proj(context.transpose(1, 2).reshape(q.shape[0], -1, self.num_heads * self.head_dim))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, key_bias: Tensor | None = None) -> Tensor:
        """cos, sin: the rotary tables of x's positions (after a prefix's, if any)."""
        q, k, v = self._qkv(x, cos, sin)
        if self.prefix is not None:  # a past of P keys/values, as PEFT's prefix tuning: unrotated
            pk, pv = self.prefix_past(x.shape[0])
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        return self._out(q, k, v, key_bias)

    def prefix_past(self, batch: int) -> tuple[Tensor, Tensor]:
        """Prefix tuning's keys and values as a past (B, H_kv, P, d_h) each."""
        assert self.prefix is not None
        return tuple(t.reshape(1, -1, self.num_kv_heads, self.head_dim).transpose(1, 2)
                     .expand(batch, -1, -1, -1) for t in (self.prefix.key, self.prefix.value))

    def decode(self, x: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor, past_v: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """With a key/value cache: x (B, S, D) after ``past`` (B, H_kv, P, d_h) → the output and
        the present keys and values (B, H_kv, P + S, d_h)."""
        q, k, v = self._qkv(x, cos, sin)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        return self._out(q, k, v), k, v


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(d, f, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(f, d, bias=cfg.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    """``block(x, key_bias, keep) -> (x, key_bias, None)``: the block protocol; ``keep`` must be
    None (a language model drops no tokens)."""

    def __init__(self, cfg: LlamaConfig, rotary: Rotary):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)
        self._rotary = [rotary]  # shared, not a submodule (its table is no parameter)

    def forward(self, x: Tensor, key_bias: Tensor | None, keep: Tensor | None):
        if keep is not None:
            raise UsageError("a language model's blocks keep every token (keep must be None)")
        prefix = self.self_attn.prefix  # its P keys come first: these tokens sit at P, P+1, …
        cos, sin = self._rotary[0](x.shape[1], 0 if prefix is None else prefix.key.shape[0])
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, key_bias)
        return h + self.mlp(self.post_attention_layernorm(h)), key_bias, None

    def decode(self, x: Tensor, past_k: Tensor, past_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The layer over x after a cache of P positions (x's positions start at P)."""
        cos, sin = self._rotary[0](x.shape[1], past_k.shape[2])
        a, k, v = self.self_attn.decode(self.input_layernorm(x), cos, sin, past_k, past_v)
        h = x + a
        return h + self.mlp(self.post_attention_layernorm(h)), k, v


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg, self.rotary)
                                     for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(CausalLM):
    """``model.*`` + ``lm_head``, as Hugging Face's LlamaForCausalLM / Qwen2ForCausalLM."""

    input_names = ("input_ids",)
    family = "llama"

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.prompt = None
        _init_weights(self)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return self.config.vocab_size

    def embed(self, input_ids: Tensor) -> tuple[Tensor, None]:
        """Token embeddings; prompt tuning's P tokens go first (PEFT's causal-LM layout: the
        text's positions start at P)."""
        x = self.model.embed_tokens(input_ids)
        if self.prompt is not None:
            p = self.prompt.embeddings
            x = torch.cat([p.unsqueeze(0).expand(x.shape[0], -1, -1), x], dim=1)
        return x, None

    def classify(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        """Logits of the text's positions (prompt tokens predict nothing)."""
        if self.prompt is not None:
            x = x[:, self.prompt.embeddings.shape[0]:]
        return self.lm_head(self.model.norm(x))

    def decode(self, input_ids: Tensor, past: list[tuple[Tensor, Tensor]]
               ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Generation's step: ``input_ids`` (B, S) after ``past`` (per layer, keys and values
        (B, H_kv, P, d_h)) → logits (B, S, V) and the presents (P + S positions). Prefix tuning's
        keys are a past the caller starts from (edgetune.generate.initial_past)."""
        if self.prompt is not None:
            raise UsageError("generation with prompt tuning is not supported yet (its virtual "
                             "tokens are no input ids); use another method")
        x = self.model.embed_tokens(input_ids)
        presents = []
        for layer, (pk, pv) in zip(self.model.layers, past):
            x, k, v = layer.decode(x, pk, pv)
            presents.append((k, v))
        return self.lm_head(self.model.norm(x)), presents

    def example_inputs(self, batch: int, tokens: int | None = None) -> tuple[Tensor, ...]:
        n = tokens or min(16, self.config.max_position_embeddings)
        return (torch.randint(0, self.config.vocab_size, (batch, n)),)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
