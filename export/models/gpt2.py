"""GPT-2 (Radford et al. 2019) as our model code, with Hugging Face's parameter names
(``transformer.wte``, ``transformer.h.{i}.attn.c_attn``, …, ``lm_head`` tied to ``wte``):

    x_0 = wte(ids) + wpe(positions)
    h   = x + c_proj(attn(ln_1(x)))          (causal multi-head attention, fused c_attn → q, k, v)
    x'  = h + c_proj(gelu_tanh(c_fc(ln_2(h))))
    logits = ln_f(x_L) · wteᵀ

Hugging Face stores the four projections as ``Conv1D`` (weight in × out); here they are
``nn.Linear`` (out × in), transposed on load, so PEFT's LoRA pairs keep their shapes (A r × in,
B out × r; its ``fan_in_fan_out`` flag only concerns the base weight). Positions start at a
prefix's length (prefix tuning) or a cache's (generation); prompt tuning's tokens come first
and take positions 0 … P−1, as PEFT feeds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgetune.config import check_int
from edgetune.errors import UsageError
from edgetune.export.models.causal_lm import CausalLM
from edgetune.export.models.layers.causal_attention import causal_attention

ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both: 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))


@dataclass
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: list[int] = field(default_factory=list)
    model_type: str = "gpt2"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            check_int(self, name, lo=1)
        if self.n_embd % self.n_head:
            raise UsageError(f"GPT2Config.n_embd={self.n_embd}: must be a multiple of n_head={self.n_head}")

    # the names the rest of edgetune reads (LlamaConfig's)
    @property
    def hidden_size(self) -> int:
        return self.n_embd

    @property
    def num_attention_heads(self) -> int:
        return self.n_head

    @property
    def num_key_value_heads(self) -> int:
        return self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def intermediate_size(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @property
    def max_position_embeddings(self) -> int:
        return self.n_positions

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer


def gpt2_config_from_hf(cfg: dict) -> GPT2Config:
    act = cfg.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise UsageError(f"config.json activation_function={act!r}: GPT-2 models here use "
                         f"{' or '.join(ACTIVATIONS)}")
    if not cfg.get("scale_attn_weights", True) or cfg.get("scale_attn_by_inverse_layer_idx", False) \
            or cfg.get("reorder_and_upcast_attn", False) or cfg.get("add_cross_attention", False):
        raise UsageError("config.json: a GPT-2 variant with other attention scaling or cross-attention "
                         "is not supported")
    eos = cfg.get("eos_token_id")
    fields = {k: cfg[k] for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head",
                                  "n_inner", "layer_norm_epsilon") if k in cfg}
    return GPT2Config(**fields, tie_word_embeddings=cfg.get("tie_word_embeddings", True),
                      bos_token_id=cfg.get("bos_token_id"),
                      eos_token_id=[] if eos is None else [eos] if isinstance(eos, int) else list(eos))


class GPT2Attention(nn.Module):
    """``prefix`` is prefix tuning's slot (None unless the method fills it)."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        d = cfg.n_embd
        self.num_heads, self.head_dim = cfg.n_head, cfg.head_dim
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.prefix = None

    @property
    def kv_dim(self) -> int:
        return self.num_heads * self.head_dim

    def _qkv(self, x: Tensor) -> list[Tensor]:
        b = x.shape[0]
        return [t.reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
                for t in self.c_attn(x).split(self.kv_dim, dim=-1)]

    def _out(self, q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None = None) -> Tensor:
        context = causal_attention(q, k, v, key_bias)
        return self.c_proj(context.transpose(1, 2).reshape(q.shape[0], -1, self.kv_dim))

    def prefix_past(self, batch: int) -> tuple[Tensor, Tensor]:
        assert self.prefix is not None
        return tuple(t.reshape(1, -1, self.num_heads, self.head_dim).transpose(1, 2)
                     .expand(batch, -1, -1, -1) for t in (self.prefix.key, self.prefix.value))

    def forward(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        q, k, v = self._qkv(x)
        if self.prefix is not None:
            pk, pv = self.prefix_past(x.shape[0])
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        return self._out(q, k, v, key_bias)

    def decode(self, x: Tensor, past_k: Tensor, past_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self._qkv(x)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        return self._out(q, k, v), k, v


class GPT2MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.intermediate_size)
        self.c_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPT2Block(nn.Module):
    """``block(x, key_bias, keep) -> (x, key_bias, None)``; ``keep`` must be None."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x: Tensor, key_bias: Tensor | None, keep: Tensor | None):
        if keep is not None:
            raise UsageError("a language model's blocks keep every token (keep must be None)")
        h = x + self.attn(self.ln_1(x), key_bias)
        return h + self.mlp(self.ln_2(h)), key_bias, None

    def decode(self, x: Tensor, past_k: Tensor, past_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attn.decode(self.ln_1(x), past_k, past_v)
        h = x + a
        return h + self.mlp(self.ln_2(h)), k, v


class GPT2Model(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.h = nn.ModuleList([GPT2Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)


class GPT2LMHeadModel(CausalLM):
    """``transformer.*`` + ``lm_head``, as Hugging Face's GPT2LMHeadModel."""

    input_names = ("input_ids",)
    family = "gpt2"

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.config = cfg
        self.transformer = GPT2Model(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.prompt = None
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.h

    @property
    def hidden_size(self) -> int:
        return self.config.n_embd

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return self.config.vocab_size

    def _positions(self, n: int | Tensor, offset: int | Tensor = 0) -> Tensor:
        return self.transformer.wpe(torch.arange(n, device=self.transformer.wpe.weight.device) + offset)

    def embed(self, input_ids: Tensor) -> tuple[Tensor, None]:
        """Token + position embeddings; prompt tuning's P tokens first (positions 0 … P−1),
        prefix tuning's P keys before every token (positions from P)."""
        x = self.transformer.wte(input_ids)
        if self.prompt is not None:
            p = self.prompt.embeddings
            x = torch.cat([p.unsqueeze(0).expand(x.shape[0], -1, -1), x], dim=1)
        prefix = self.blocks[0].attn.prefix
        return x + self._positions(x.shape[1], 0 if prefix is None else prefix.key.shape[0]), None

    def classify(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        if self.prompt is not None:
            x = x[:, self.prompt.embeddings.shape[0]:]
        return self.lm_head(self.transformer.ln_f(x))

    def decode(self, input_ids: Tensor, past: list[tuple[Tensor, Tensor]]
               ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """As :meth:`LlamaForCausalLM.decode`: positions from the cache's length."""
        if self.prompt is not None:
            raise UsageError("generation with prompt tuning is not supported yet (its virtual "
                             "tokens are no input ids); use another method")
        x = self.transformer.wte(input_ids) + self._positions(input_ids.shape[1], past[0][0].shape[2])
        presents = []
        for block, (pk, pv) in zip(self.blocks, past):
            x, k, v = block.decode(x, pk, pv)
            presents.append((k, v))
        return self.lm_head(self.transformer.ln_f(x)), presents

    def example_inputs(self, batch: int, tokens: int | None = None) -> tuple[Tensor, ...]:
        n = tokens or min(16, self.config.n_positions)
        return (torch.randint(0, self.config.vocab_size, (batch, n)),)


CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def conv1d_to_linear(name: str, value: Tensor) -> Tensor:
    """Hugging Face's Conv1D weight (in × out) as our Linear's (out × in); other tensors as they are."""
    return value.t().contiguous() if name.endswith(CONV1D) and value.ndim == 2 else value
