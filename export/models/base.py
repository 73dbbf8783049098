"""What every model offers the rest of edgetune: stem → blocks → head, with ALaST's signals.

A model is a ``TransformerModel``: ``embed`` turns raw inputs into tokens and a key bias,
``blocks`` are the transformer layers, ``classify`` turns the last tokens into logits, and
``loss`` scores them against the labels. PEFT methods, the ONNX splitter and ALaST only use
these pieces. Two tasks:

- ``classification`` (``EncoderClassifier``: ViT, BERT): the class token first; ``classify``
  pools (the class token, or the mean of the tokens the key bias leaves visible) into (B, C)
  logits; ALaST drops tokens ranked by the class token's attention (``drops_tokens``);
- ``causal_lm`` (export/models/causal_lm.py: LLaMA, GPT-2): logits (B, N, V) for every
  position; no token is dropped (every position is a next-token target).

``summary(x)`` is the per-layer signal ALaST's importance reads: the class token, or for a
language model the mean of the tokens after the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgetune.export.models.layers.token_keep import budget_keep


@dataclass
class EncoderOutput:
    """logits: (B, classes) or (B, N, vocabulary); cls_tokens: L+1 tensors (B, D), the summary
    (class token) before layer 1 and after each layer; cls_attn: L tensors (B, N_l), the class
    token's attention in each layer (None for a model that drops no tokens)."""

    logits: Tensor
    cls_tokens: list[Tensor]
    cls_attn: list[Tensor | None]


class TransformerModel(nn.Module):
    """Base of our models: subclasses set ``input_names`` and implement the three pieces."""

    task: str = "classification"
    drops_tokens: bool = True  # whether blocks take a keep count and return the class token's attention
    input_names: tuple[str, ...] = ()
    family: str = ""
    blocks: nn.ModuleList  # the transformer layers, in order (an attribute or a property)
    head_names: tuple[str, ...] = ()  # the task head's modules, trained by every method
    hidden_size: int
    pools_with_mask: bool = False  # whether classify reads the key bias (mean pooling)

    def embed(self, *inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """Raw inputs → tokens (B, N, D) with the class token at 0, and a key bias (B, N) or None."""
        raise NotImplementedError

    def classify(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        """Tokens after the last block (and their key bias, padding < 0) → logits."""
        raise NotImplementedError

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The training loss: cross-entropy of (B, C) logits against (B,) labels."""
        return F.cross_entropy(logits, labels)

    def summary(self, x: Tensor) -> Tensor:
        """(B, N, D) → (B, D): what ALaST measures each layer's change of (the class token)."""
        return x[:, 0]

    def example_inputs(self, batch: int, tokens: int | None = None) -> tuple[Tensor, ...]:
        """Random valid inputs, for tests and for tracing."""
        raise NotImplementedError

    def forward(self, *inputs: Tensor, keep: Tensor | None = None) -> Tensor:
        return self.forward_features(*inputs, keep=keep).logits

    def forward_features(self, *inputs: Tensor, keep: Tensor | None = None,
                         budgets: Tensor | None = None) -> EncoderOutput:
        """keep: None (keep every token) or an int64 tensor (L,): tokens kept after layer l.
        budgets: instead of keep, per-layer budgets (L,) turned into counts for these inputs'
        tokens (``budget_keep``), as a merged inference graph drops them."""
        x, bias = self.embed(*inputs)
        if not self.drops_tokens:  # a language model keeps every token: budgets are all 1
            keep = budgets = None
        if budgets is not None:
            keep = budget_keep(budgets, x)
        cls_tokens, cls_attn = [self.summary(x)], []
        for i, block in enumerate(self.blocks):
            x, bias, attn = block(x, bias, None if keep is None else keep[i])
            cls_tokens.append(self.summary(x))
            cls_attn.append(attn)
        return EncoderOutput(self.classify(x, bias), cls_tokens, cls_attn)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def num_tokens(self, *inputs: Tensor) -> int:
        """Tokens entering the first block for these inputs (prompts included)."""
        with torch.no_grad():
            return self.embed(*inputs)[0].shape[1]


class EncoderClassifier(TransformerModel):
    """An encoder that classifies: the class token first (ViT, BERT)."""
