"""Prompt tuning: trainable input tokens (Lester et al. 2021, arXiv 2104.08691).

    X ← [x_cls; P; x_1 … x_n],   P ∈ R^{p×d},

inserted after the embeddings (after position embeddings and, in BERT, the embedding LN),
right behind the class token. Not mergeable. Saved as Hugging Face PEFT's
``prompt_embeddings`` (p, d).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgetune.config import check_float, check_int
from edgetune.export.models.layers import PromptTokens
from edgetune.export.peft.base import register_method
from edgetune.export.peft.prefix import prompt_learning_fields


@dataclass
class PromptConfig:
    num_virtual_tokens: int = 10
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_int(self, "num_virtual_tokens", lo=1, hi=512)
        check_float(self, "init_std", lo=0.0)


def hf_config(model, cfg: PromptConfig) -> dict:
    return {**prompt_learning_fields(model, cfg), "prompt_tuning_init": "RANDOM"}


@register_method("prompt", PromptConfig, "trainable prompt tokens after the class token",
                 mergeable=False, hf_peft_type="PROMPT_TUNING", hf_config=hf_config,
                 adapter_keys=lambda model: {"prompt_embeddings": ["prompt.embeddings"]},
                 prompt_learning=True)
def inject(model, cfg: PromptConfig) -> None:
    d = model.hidden_size
    model.prompt = PromptTokens(cfg.num_virtual_tokens, d, cfg.init_std)
