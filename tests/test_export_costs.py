"""The manifest's per-layer cost fits (export/costs.py) against a direct count at another N."""

from __future__ import annotations

import pytest

from edgetune.export.costs import _block_costs, layer_costs, per_token
from edgetune.export.exporter import _stem_trainable

from export_cases import build


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fits_predict_a_third_token_count_and_first_skips_the_input_gradient(method):
    model = build("bert-micro", method)
    costs = layer_costs(model, 16)
    n = 11  # neither of the fitted counts (8, 16)
    for block, entry in zip(model.blocks, costs):
        for variant, trained, dx in (("train", True, True), ("frozen", False, True), ("first", True, False)):
            fwd, bwd, saved = _block_costs(block, n, model.hidden_size, True, trained, dx)
            assert n * per_token(entry["forward_flops"], n) == pytest.approx(fwd, rel=1e-9)
            assert n * per_token(entry[f"backward_flops_{variant}"], n) == pytest.approx(bwd, rel=1e-9)
            assert n * per_token(entry[f"saved_bytes_{variant}"], n) == pytest.approx(saved, rel=0.05)
        # no input gradient: strictly less backward work than ``train``, still some (the params')
        assert 0 < entry["backward_flops_first"][0] < entry["backward_flops_train"][0]


def test_stem_trainable_follows_the_method():
    assert _stem_trainable(build("bert-micro", "full")) is True
    assert _stem_trainable(build("bert-micro", "lora")) is False
    assert _stem_trainable(build("vit-micro", "prompt")) is True   # prompts join at the stem
