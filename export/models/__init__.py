"""Our model code (ViT, BERT) and its registry."""

from edgetune.export.models.base import EncoderClassifier, EncoderOutput
from edgetune.export.models.bert import BertClassifier, BertConfig
from edgetune.export.models.registry import ModelSpec, create_model, list_models, register_model
from edgetune.export.models.vit import VisionTransformer, ViTConfig

__all__ = [
    "BertClassifier", "BertConfig", "EncoderClassifier", "EncoderOutput", "ModelSpec",
    "ViTConfig", "VisionTransformer", "create_model", "list_models", "register_model",
]
