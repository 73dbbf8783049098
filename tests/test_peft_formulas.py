"""Each PEFT module against its paper's formula, written out by hand."""

import torch
from torch import nn

from edgetune.export.models.layers import PrefixKV, PromptTokens
from edgetune.export.models.layers.attention import multi_head_attention
from edgetune.export.models.vit import Attention
from edgetune.export.peft.adapter import BottleneckAdapter
from edgetune.export.peft.ia3 import IA3Linear
from edgetune.export.peft.lora import LoraLinear
from edgetune.export.peft.propulsion import PropulsionScale

from numerics import assert_close_normwise, propulsion_rtol


def randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module


def test_lora_is_w_plus_scaled_ba():
    base = nn.Linear(6, 5)
    lora = randomize(LoraLinear(base, r=2, alpha=6.0))
    x = torch.randn(4, 6)
    W, b, A, B = base.weight, base.bias, lora.lora_A.weight, lora.lora_B.weight
    expected = x @ W.T + b + (6.0 / 2) * (x @ A.T @ B.T)
    assert_close_normwise(lora(x), expected, "lora")
    merged = lora.merge()
    assert_close_normwise(merged.weight, W + 3.0 * B @ A, "merged lora")


def test_lora_b_starts_at_zero():
    lora = LoraLinear(nn.Linear(6, 5), r=2, alpha=4.0)
    assert torch.count_nonzero(lora.lora_B.weight) == 0
    assert torch.count_nonzero(lora.lora_A.weight) > 0


def test_adapter_is_residual_bottleneck_after_projection():
    base = nn.Linear(6, 8)
    ad = randomize(BottleneckAdapter(base, bottleneck=3, activation="relu"))
    x = torch.randn(4, 6)
    y = x @ base.weight.T + base.bias
    down = torch.relu(y @ ad.adapter_down.weight.T + ad.adapter_down.bias)
    assert_close_normwise(ad(x), y + down @ ad.adapter_up.weight.T + ad.adapter_up.bias, "adapter")


def test_ia3_scales_outputs_or_feedforward_inputs():
    base = nn.Linear(6, 5)
    x = torch.randn(4, 6)
    out = randomize(IA3Linear(base, feedforward=False))
    l_out = out.ia3_l.detach().flatten()
    assert_close_normwise(out(x), (x @ base.weight.T + base.bias) * l_out, "ia3 output")
    ff = randomize(IA3Linear(base, feedforward=True))
    l_in = ff.ia3_l.detach().flatten()
    assert_close_normwise(ff(x), (x * l_in) @ base.weight.T + base.bias, "ia3 feedforward")
    assert out.ia3_l.shape == (5, 1) and ff.ia3_l.shape == (1, 6)  # PEFT's shapes


def test_propulsion_is_output_times_z_to_the_k():
    base = nn.Linear(6, 5)
    prop = PropulsionScale(base, degree=15)
    with torch.no_grad():
        prop.propulsion_z.copy_(torch.linspace(0.95, 1.05, 5))
    x = torch.randn(4, 6)
    z = prop.propulsion_z.detach()
    assert_close_normwise(prop(x), (x @ base.weight.T + base.bias) * z ** 15, "z^15",
                          rtol=propulsion_rtol(15))
    emb = nn.Embedding(10, 5)
    pe = PropulsionScale(emb, degree=3)
    with torch.no_grad():
        pe.propulsion_z.copy_(torch.linspace(0.9, 1.1, 5))
    ids = torch.tensor([[1, 4, 9]])
    assert_close_normwise(pe(ids), emb.weight[ids] * pe.propulsion_z.detach() ** 3, "embedding z^3",
                          rtol=propulsion_rtol(3))
    assert_close_normwise(pe.merge()(ids), pe(ids), "merged embedding z^3", rtol=propulsion_rtol(3))


def test_prefix_attends_over_prefix_then_tokens():
    torch.manual_seed(1)
    attn = Attention(dim=8, num_heads=2)
    attn.prefix = PrefixKV(num_tokens=3, dim=8, init_std=0.5)
    x = torch.randn(2, 5, 8)
    out, cls_attn = attn(x, None)
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).chunk(3, dim=-1)
    pk = attn.prefix.key.expand(2, -1, -1)
    pv = attn.prefix.value.expand(2, -1, -1)
    # Written out per head: softmax(q [P_K; K]^T / sqrt(d)) [P_V; V].
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        keys = torch.cat([pk[..., sl], k[..., sl]], 1)
        vals = torch.cat([pv[..., sl], v[..., sl]], 1)
        probs = torch.softmax(q[..., sl] @ keys.transpose(1, 2) / 2.0, dim=-1)
        heads.append(probs @ vals)
    expected = torch.cat(heads, -1) @ attn.proj.weight.T + attn.proj.bias
    assert_close_normwise(out, expected, "prefix attention")
    assert cls_attn.shape == (2, 5)  # over the tokens only, the prefix sliced off


def test_prompt_tokens_go_right_after_the_class_token():
    prompt = PromptTokens(num_tokens=2, dim=4)
    x = torch.randn(3, 5, 4)
    bias = torch.zeros(3, 5)
    bias[:, -1] = -1e9
    y, new_bias = prompt(x, bias)
    torch.testing.assert_close(y[:, 0], x[:, 0])
    torch.testing.assert_close(y[:, 1:3], prompt.embeddings.detach().expand(3, -1, -1))
    torch.testing.assert_close(y[:, 3:], x[:, 1:])
    assert new_bias.shape == (3, 7)
    assert bool((new_bias[:, 1:3] == 0).all()) and bool((new_bias[:, -1] < 0).all())


def test_attention_is_softmax_qk_v():
    q, k, v = torch.randn(2, 4, 6), torch.randn(2, 7, 6), torch.randn(2, 7, 6)
    bias = torch.zeros(2, 7)
    bias[1, 5:] = torch.finfo(torch.float32).min
    out, cls_attn = multi_head_attention(q, k, v, num_heads=1, key_bias=bias)
    probs = torch.softmax(q @ k.transpose(1, 2) / 6 ** 0.5 + bias[:, None, :], -1)
    assert_close_normwise(out, probs @ v, "attention")
    assert_close_normwise(cls_attn, probs[:, 0], "class token attention")
    assert float(cls_attn[1, 5:].sum()) == 0.0
