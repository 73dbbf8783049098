"""What every model offers the rest of edgetune: stem → blocks → head, with ALaST's signals.

A model is an ``EncoderClassifier``: ``embed`` turns raw inputs into tokens (class token first)
and a key bias, ``blocks`` are the transformer layers, ``classify`` pools the last tokens (the
class token, or the mean of the tokens the key bias leaves visible) into logits. PEFT
methods, the ONNX splitter and ALaST only use these three pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgetune.export.models.layers.token_keep import budget_keep


@dataclass
class EncoderOutput:
    """logits: (B, classes); cls_tokens: L+1 tensors (B, D), the class token before layer 1 and
    after each layer; cls_attn: L tensors (B, N_l), the class token's attention in each layer."""

    logits: Tensor
    cls_tokens: list[Tensor]
    cls_attn: list[Tensor]


class EncoderClassifier(nn.Module):
    """Base of our models: subclasses set ``input_names`` and implement the three pieces."""

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
        if budgets is not None:
            keep = budget_keep(budgets, x)
        cls_tokens, cls_attn = [x[:, 0]], []
        for i, block in enumerate(self.blocks):
            x, bias, attn = block(x, bias, None if keep is None else keep[i])
            cls_tokens.append(x[:, 0])
            cls_attn.append(attn)
        return EncoderOutput(self.classify(x, bias), cls_tokens, cls_attn)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def num_tokens(self, *inputs: Tensor) -> int:
        """Tokens entering the first block for these inputs (prompts included)."""
        with torch.no_grad():
            return self.embed(*inputs)[0].shape[1]
