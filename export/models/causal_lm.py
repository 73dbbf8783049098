"""The language-model side of :class:`TransformerModel`: a decoder that predicts the next token
at every position (LLaMA, GPT-2).

- ``classify(x)`` → logits (B, N, V) from the last hidden states (final norm, then the LM head,
  often tied to the token embedding);
- ``loss(logits, labels)``: labels (B, N) are the next tokens, already shifted by the data
  (``labels[:, t]`` is the token after position t), −100 where there is no target (padding,
  a prompt whose completion alone is scored). The mean over targets, as Hugging Face's
  ``ForCausalLMLoss``:

      L = −(1/T) Σ_{(b,t): y_bt ≠ −100} log softmax(z_bt)[y_bt]

- no token dropping (``drops_tokens = False``): every position is a target and every later
  token attends to it; ALaST's budgets for a language model choose which layers train;
- ``summary(x)``: the mean of the tokens after the first (the first token is an attention sink
  whose state barely moves), what ALaST measures a layer's change of.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgetune.export.models.base import TransformerModel
from edgetune.targets import IGNORE


class CausalLM(TransformerModel):
    task = "causal_lm"
    drops_tokens = False
    head_names: tuple[str, ...] = ()  # the LM head (often tied to the embedding) trains only in full FT
    vocab_size: int

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=IGNORE)

    def summary(self, x: Tensor) -> Tensor:
        return x[:, 1:].mean(1) if x.shape[1] > 1 else x[:, 0]
