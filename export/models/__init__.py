"""Our model code (ViT, BERT; LLaMA-style decoders) and its registry."""

from edgetune.export.models.base import EncoderClassifier, EncoderOutput, TransformerModel
from edgetune.export.models.bert import BertClassifier, BertConfig
from edgetune.export.models.causal_lm import CausalLM
from edgetune.export.models.llama import LlamaConfig, LlamaForCausalLM
from edgetune.export.models.registry import ModelSpec, create_model, list_models, register_model
from edgetune.export.models.vit import VisionTransformer, ViTConfig

__all__ = [
    "BertClassifier", "BertConfig", "CausalLM", "EncoderClassifier", "EncoderOutput", "LlamaConfig",
    "LlamaForCausalLM", "ModelSpec", "TransformerModel",
    "ViTConfig", "VisionTransformer", "create_model", "list_models", "register_model",
]
