"""Vision Transformer with timm's parameter names (Dosovitskiy et al. 2021, arXiv 2010.11929).

Pre-norm blocks: x + Attn(LN(x)), then x + MLP(LN(x)); the class token, after a final LN, goes
to a linear head. Loads timm-layout safetensors checkpoints (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``, ``head``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgetune.config import check_float, check_int
from edgetune.errors import UsageError
from edgetune.export.models.base import EncoderClassifier
from edgetune.export.models.layers import keep_top_tokens, multi_head_attention, prepend_prefix


@dataclass
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for f in ("image_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "num_classes"):
            check_int(self, f, lo=1)
        check_float(self, "mlp_ratio", lo=0.0, lo_open=True)
        check_float(self, "layer_norm_eps", lo=0.0, lo_open=True)
        if self.image_size % self.patch_size:
            raise UsageError(f"ViTConfig.patch_size={self.patch_size}: "
                             f"must divide image_size={self.image_size}")
        if self.embed_dim % self.num_heads:
            raise UsageError(f"ViTConfig.num_heads={self.num_heads}: must divide embed_dim={self.embed_dim}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Fused qkv projection, laid out [q | k | v] as in timm; ``prefix`` is prefix tuning's slot."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.prefix = None

    def forward(self, x: Tensor, key_bias: Tensor | None) -> tuple[Tensor, Tensor]:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k, v, key_bias, n_prefix = prepend_prefix(self.prefix, k, v, key_bias)
        context, cls_attn = multi_head_attention(q, k, v, self.num_heads, key_bias)
        return self.proj(context), cls_attn[:, n_prefix:]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attn = Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))

    def forward(self, x: Tensor, key_bias: Tensor | None, keep: Tensor | None):
        a, cls_attn = self.attn(self.norm1(x), key_bias)
        x = x + a
        if keep is not None:
            x, key_bias = keep_top_tokens(x, cls_attn, keep, key_bias)
        x = x + self.mlp(self.norm2(x))
        return x, key_bias, cls_attn


class VisionTransformer(EncoderClassifier):
    input_names = ("pixel_values",)
    family = "vit"
    head_names = ("head",)

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.config = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_patches + 1, d) * 0.02)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(d, cfg.num_classes)
        self.prompt = None
        _init_weights(self)

    @property
    def hidden_size(self) -> int:
        return self.config.embed_dim

    def embed(self, pixel_values: Tensor) -> tuple[Tensor, None]:
        x = self.patch_embed(pixel_values)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        if self.prompt is not None:
            x, _ = self.prompt(x, None)
        return x, None

    def classify(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        return self.head(self.norm(x[:, 0]))

    def example_inputs(self, batch: int, tokens: int | None = None) -> tuple[Tensor, ...]:
        c = self.config
        return (torch.randn(batch, c.in_chans, c.image_size, c.image_size),)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


def resample_pos_embed(pos: Tensor, num_patches: int) -> Tensor:
    """A (1, 1 + g², D) position embedding for ``num_patches`` = G² patches: the class token's
    row kept, the g × g grid resized to G × G bicubically (timm's ``resample_abs_pos_embed``;
    the usual low-resolution pretrain, high-resolution fine-tune, Dosovitskiy et al. §3.2)."""
    import torch.nn.functional as F

    old, new = math.isqrt(pos.shape[1] - 1), math.isqrt(num_patches)
    if old * old != pos.shape[1] - 1 or new * new != num_patches:
        raise UsageError(f"pos_embed with {pos.shape[1] - 1} patches cannot be resized to "
                         f"{num_patches}: both must be square grids")
    cls, grid = pos[:, :1], pos[:, 1:]
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)
