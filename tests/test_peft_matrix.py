"""Every registered model × every PEFT method, through the same checks (peft-style matrix):
the micro classifiers and the micro language models (whose logits are per position, whose
blocks drop no tokens, and which have no task head of their own)."""

import copy

import pytest
import torch

from edgetune.errors import EdgetuneError, UsageError
from edgetune.export import apply_method, create_model, list_methods, merge_model
from edgetune.export.peft import adapter_modules, load_adapter, save_adapter, trainable_names

from conftest import MICRO_LMS, MICRO_MODELS
from numerics import assert_close_normwise, method_rtol

METHODS = [m.name for m in list_methods()]
MERGEABLE = [m.name for m in list_methods() if m.mergeable]
# Prefix and prompt tuning add attention tokens: by their papers' definition they change the
# output at init. Their math is checked against the formula in test_peft_formulas.py.
ADDS_TOKENS = {"prefix", "prompt"}

# What each method trains, besides the head.
OWN_PARAMS = {
    "full": lambda n: True,
    "bitfit": lambda n: n.endswith("bias"),
    "lora": lambda n: ".lora_A." in n or ".lora_B." in n,
    "adapter": lambda n: ".adapter_down." in n or ".adapter_up." in n,
    "ia3": lambda n: n.endswith(".ia3_l"),
    "propulsion": lambda n: n.endswith(".propulsion_z"),
    "prefix": lambda n: ".prefix." in n,
    "prompt": lambda n: n.startswith("prompt."),
}


MODELS = MICRO_MODELS + MICRO_LMS


def build(model_name: str, method: str):
    torch.manual_seed(0)
    lm = model_name in MICRO_LMS
    base = create_model(model_name, num_classes=None if lm else 3).eval()
    tuned = copy.deepcopy(base)
    if method == "bitfit" and not any(n.endswith("bias") for n, _ in base.named_parameters()):
        with pytest.raises(UsageError, match="no biases"):
            apply_method(tuned, method)
        pytest.skip(f"{model_name} has no biases for bitfit (refused, as checked)")
    apply_method(tuned, method)
    inputs = base.example_inputs(batch=3)
    return base, tuned, inputs


def labels_for(model, inputs):
    """Targets of the model's task: a class per sample, or a next token per position."""
    if model.task == "causal_lm":
        return torch.randint(0, model.vocab_size, inputs[0].shape)
    return torch.tensor([0, 1, 2])


def perturb(model, scale=0.05):
    """Move every trainable tensor away from its identity init, as training would."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * scale)


def test_every_method_is_in_the_matrix():
    assert sorted(OWN_PARAMS) == sorted(METHODS)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", MODELS)
def test_shapes_and_alast_outputs(model_name, method):
    _, tuned, inputs = build(model_name, method)
    out = tuned.forward_features(*inputs)
    assert len(out.cls_tokens) == tuned.num_layers + 1
    if tuned.task == "causal_lm":  # a next-token distribution per text position; no token dropped
        assert out.logits.shape == (*inputs[0].shape, tuned.vocab_size)
        assert out.cls_attn == [None] * tuned.num_layers
        return
    assert out.logits.shape == (3, 3)
    n = tuned.num_tokens(*inputs)
    for attn in out.cls_attn:
        assert attn.shape == (3, n)
        total = attn.sum(-1)  # over tokens; prefix keys take the rest of the mass
        if method == "prefix":
            assert bool((total < 1).all())
        else:
            torch.testing.assert_close(total, torch.ones(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", sorted(set(METHODS) - ADDS_TOKENS))
@pytest.mark.parametrize("model_name", MODELS)
def test_identity_at_init(model_name, method):
    base, tuned, inputs = build(model_name, method)
    with torch.no_grad():
        assert_close_normwise(tuned(*inputs), base(*inputs), f"{method} at init", rtol=method_rtol(method))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", MODELS)
def test_trainable_set_is_method_params_plus_head(model_name, method):
    _, tuned, _ = build(model_name, method)
    heads = tuple(h + "." for h in tuned.head_names)
    names = set(trainable_names(tuned))
    expected = {n for n, _ in tuned.named_parameters() if OWN_PARAMS[method](n) or n.startswith(heads)}
    assert names == expected
    assert any(not n.startswith(heads) for n in names), "the method trains nothing of its own"
    if method not in ("full", "bitfit"):
        assert adapter_modules(tuned), "no module was injected"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", MODELS)
def test_gradient_flows_only_where_it_should(model_name, method):
    _, tuned, inputs = build(model_name, method)
    perturb(tuned)
    tuned.loss(tuned(*inputs), labels_for(tuned, inputs)).backward()
    for name, p in tuned.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"


@pytest.mark.parametrize("method", MERGEABLE)
@pytest.mark.parametrize("model_name", MODELS)
def test_merged_equals_unmerged(model_name, method):
    _, tuned, inputs = build(model_name, method)
    perturb(tuned)
    with torch.no_grad():
        before = tuned(*inputs)
        merge_model(tuned)
        after = tuned(*inputs)
    assert not adapter_modules(tuned)
    assert_close_normwise(after, before, f"{method} merged", rtol=method_rtol(method))


@pytest.mark.parametrize("method", sorted(set(METHODS) - set(MERGEABLE)))
def test_unmergeable_methods_say_so(method):
    _, tuned, _ = build("vit-micro", method)
    with pytest.raises(UsageError, match=f"method '{method}' cannot be merged"):
        merge_model(tuned)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", MODELS)
def test_save_load_round_trip(model_name, method, tmp_path):
    base, tuned, inputs = build(model_name, method)
    perturb(tuned)
    save_adapter(tuned, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    restored = load_adapter(copy.deepcopy(base), tmp_path / "adapter")
    assert restored.peft_method == method
    with torch.no_grad():
        torch.testing.assert_close(restored(*inputs), tuned(*inputs), atol=0, rtol=0)


def test_save_refuses_to_overwrite_and_leaves_no_partial_folder(tmp_path):
    _, tuned, _ = build("vit-micro", "lora")
    save_adapter(tuned, tmp_path / "a")
    with pytest.raises(UsageError, match="exists"):
        save_adapter(tuned, tmp_path / "a")
    save_adapter(tuned, tmp_path / "a", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_load_rejects_an_adapter_for_another_model(tmp_path):
    _, tuned, _ = build("vit-micro", "lora")
    save_adapter(tuned, tmp_path / "a")
    other = create_model("bert-micro", 3)
    with pytest.raises(EdgetuneError) as e:
        load_adapter(other, tmp_path / "a")
    assert type(e.value) is EdgetuneError  # the adapter's fault, not a usage error or a crash
    lora = "lora_A.weight"
    assert str(e.value).startswith(
        f"{tmp_path / 'a'}: adapter does not fit this model (missing "
        f"['base_model.model.bert.encoder.layer.0.attention.self.query.{lora}', ")
    assert f"unexpected ['base_model.model.blocks.0.attn.qkv.{lora}', " in str(e.value)


def test_method_errors_are_one_line_and_name_the_choice():
    model = create_model("vit-micro", 3)
    with pytest.raises(UsageError, match=r"unknown method 'lroa'; did you mean 'lora'\?"):
        apply_method(model, "lroa")
    with pytest.raises(UsageError, match=r"LoraConfig.r=0: must be an integer in \[1, 4096\]"):
        apply_method(model, "lora", {"r": 0})
    with pytest.raises(UsageError, match=r"unknown LoraConfig option 'rank'"):
        apply_method(model, "lora", {"rank": 4})
    with pytest.raises(UsageError, match=r"target_modules=\['query'\] matched no Linear module.*qkv"):
        apply_method(model, "lora", ["target_modules=query"])
    apply_method(model, "lora", ["r=2"])
    with pytest.raises(UsageError, match="already has method 'lora'"):
        apply_method(model, "ia3")
