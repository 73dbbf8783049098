"""Building blocks shared by the models, one concept per file."""

from edgetune.export.models.layers.attention import multi_head_attention
from edgetune.export.models.layers.extensions import PrefixKV, PromptTokens, prepend_prefix
from edgetune.export.models.layers.token_keep import budget_keep, keep_top_tokens

__all__ = ["PrefixKV", "PromptTokens", "budget_keep", "keep_top_tokens", "multi_head_attention",
           "prepend_prefix"]
