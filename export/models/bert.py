"""BERT-style text encoder with Hugging Face's parameter names (Devlin et al. 2019).

Post-norm layers: h = LN(x + Attn(x)), out = LN(h + FFN(h)). Classification, by ``pooling``:
``"cls"`` as ``BertForSequenceClassification`` (pooler: dense + tanh on the class token, then
``classifier``), or ``"mean"`` as sentence-transformers (``classifier`` on the mean of the
non-padding tokens, no pooler) — the pooling a sentence-embedding checkpoint was trained with.
Loads a checkpoint folder (``config.json`` + ``model.safetensors``, keys with or without the
``bert.`` prefix). Single-segment inputs: token type 0 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from edgetune.config import check_float, check_int
from edgetune.errors import UsageError
from edgetune.export.models.base import EncoderClassifier
from edgetune.export.models.layers import keep_top_tokens, multi_head_attention, prepend_prefix

POOLINGS = ("cls", "mean")


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    num_classes: int = 2
    pooling: str = "cls"

    def __post_init__(self) -> None:
        for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_classes"):
            check_int(self, f, lo=1)
        check_float(self, "layer_norm_eps", lo=0.0, lo_open=True)
        if self.pooling not in POOLINGS:
            raise UsageError(f"BertConfig.pooling={self.pooling!r}: must be one of {', '.join(POOLINGS)}")
        if self.hidden_size % self.num_attention_heads:
            raise UsageError(
                f"BertConfig.num_attention_heads={self.num_attention_heads}: "
                f"must divide hidden_size={self.hidden_size}")


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    """``prefix`` is prefix tuning's slot (None unless the method fills it)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.prefix = None

    def forward(self, x: Tensor, key_bias: Tensor | None) -> tuple[Tensor, Tensor]:
        k, v, key_bias, n_prefix = prepend_prefix(self.prefix, self.key(x), self.value(x), key_bias)
        context, cls_attn = multi_head_attention(self.query(x), k, v, self.num_heads, key_bias)
        return context, cls_attn[:, n_prefix:]


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(h) + x)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(h) + x)


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, x: Tensor, key_bias: Tensor | None, keep: Tensor | None):
        context, cls_attn = self.attention.self(x, key_bias)
        h = self.attention.output(context, x)
        if keep is not None:
            h, key_bias = keep_top_tokens(h, cls_attn, keep, key_bias)
        return self.output(self.intermediate(h), h), key_bias, cls_attn


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(cfg) for _ in range(cfg.num_hidden_layers)])


class BertPooler(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, cls: Tensor) -> Tensor:
        return torch.tanh(self.dense(cls))


class BertModel(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg) if cfg.pooling == "cls" else None


class BertClassifier(EncoderClassifier):
    """``bert.*`` + ``classifier``, as Hugging Face's BertForSequenceClassification."""

    input_names = ("input_ids", "attention_mask")
    family = "bert"
    head_names = ("classifier",)

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_classes)
        self.prompt = None
        _init_weights(self)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.bert.encoder.layer

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        x = self.bert.embeddings(input_ids)
        key_bias = (1.0 - attention_mask.to(x.dtype)) * torch.finfo(x.dtype).min
        if self.prompt is not None:
            x, key_bias = self.prompt(x, key_bias)
        return x, key_bias

    def set_pooling(self, pooling: str) -> None:
        """Switch to ``"cls"`` (adds a freshly initialised pooler) or ``"mean"`` (drops it)."""
        if pooling not in POOLINGS:
            raise UsageError(f"pooling={pooling!r}: must be one of {', '.join(POOLINGS)}")
        if pooling == self.config.pooling:
            return
        self.config = replace(self.config, pooling=pooling)
        self.bert.pooler = BertPooler(self.config) if pooling == "cls" else None
        if self.bert.pooler is not None:
            _init_weights(self.bert.pooler)

    @property
    def pools_with_mask(self) -> bool:
        return self.config.pooling == "mean"

    def classify(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        if self.config.pooling == "cls":
            return self.classifier(self.bert.pooler(x[:, 0]))
        return self.classifier(mean_pool(x, key_bias))

    def example_inputs(self, batch: int, tokens: int | None = None) -> tuple[Tensor, ...]:
        n = tokens or min(16, self.config.max_position_embeddings)
        ids = torch.randint(1, self.config.vocab_size, (batch, n))
        mask = torch.ones(batch, n, dtype=torch.int64)
        lengths = torch.randint(max(1, n // 2), n + 1, (batch,))
        mask[torch.arange(n)[None, :] >= lengths[:, None]] = 0
        ids = ids * mask
        return ids, mask


def mean_pool(x: Tensor, key_bias: Tensor | None) -> Tensor:
    """Mean of the tokens (B, N, D) whose key bias is 0 (padding carries a large negative bias)."""
    if key_bias is None:
        return x.mean(1)
    w = (key_bias == 0).to(x.dtype)
    return (x * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1.0)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
