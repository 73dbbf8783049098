"""A ViT checkpoint fine-tuned at another resolution: ``image_size=`` (``--image-size``) keeps the
patch size and resamples the position embedding's grid (class token kept, grid bicubic)."""

import json

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from edgetune.errors import UsageError  # noqa: E402
from edgetune.export.models.registry import create_model  # noqa: E402
from edgetune.export.models.vit import VisionTransformer, ViTConfig, resample_pos_embed  # noqa: E402

CFG = {"image_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**CFG, num_classes=10))
    with torch.no_grad():  # a grid constant per channel: bicubic resampling must keep it
        model.pos_embed[:, 1:] = torch.linspace(-1, 1, 32)
        model.pos_embed[:, 0] = 3.0
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    stats = {"image_mean": 0.25, "image_std": 0.4}  # what it was "pretrained" with
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", **CFG, **stats}))
    return tmp_path, model


def test_a_checkpoint_loads_at_another_resolution(folder):
    path, source = folder
    model = create_model(path, 3, image_size=32)          # 4×4 patches → 8×8
    assert model.config.image_size == 32 and model.config.patch_size == 4
    pos = model.pos_embed.detach()
    assert pos.shape == (1, 65, 32)
    assert torch.equal(pos[:, 0], source.pos_embed[:, 0].detach())          # the class token
    assert torch.allclose(pos[:, 1:], torch.linspace(-1, 1, 32).expand(64, 32), atol=1e-6)
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
    same = create_model(path, 3)                            # no override: as saved
    assert same.pos_embed.shape == (1, 17, 32)


def test_resampling_a_grid_follows_it():
    """A smooth grid resampled up keeps its values at matching positions to within the
    interpolation's error; the corner cells agree closely (bicubic, align_corners=False)."""
    g = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)
    pos = torch.cat([torch.zeros(1, 1, 1), g.reshape(1, 16, 1)], dim=1)
    up = resample_pos_embed(pos, 64)[:, 1:].reshape(8, 8)
    assert up.shape == (8, 8) and float(up.min()) < 1.0 and float(up.max()) > 14.0
    assert torch.all(up[:, 1:] >= up[:, :-1] - 1e-5) and torch.all(up[1:] >= up[:-1] - 1e-5)
    with pytest.raises(UsageError, match="square grids"):
        resample_pos_embed(pos, 60)


def test_image_size_is_for_vision_models():
    with pytest.raises(UsageError, match="image_size=64: only ViT models take it"):
        create_model("bert-micro", 2, image_size=64)
    assert create_model("vit-micro", 2, image_size=64).config.num_patches == 64


def test_the_export_normalises_as_the_checkpoint_was_pretrained(folder, tmp_path):
    from edgetune.export import export_bundle

    path, _ = folder
    out = export_bundle(path, "lora", tmp_path / "b", num_classes=3, image_size=32, mode="adaptive")
    spec = json.loads((out / "manifest.json").read_text())["inputs"]
    assert (spec["image_size"], spec["mean"], spec["std"]) == (32, [0.25], [0.4])
    out = export_bundle(path, "lora", tmp_path / "c", num_classes=3, mode="adaptive", image_mean=0.5)
    assert json.loads((out / "manifest.json").read_text())["inputs"]["mean"] == [0.5]  # asked for
