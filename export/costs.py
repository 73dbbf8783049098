"""Per-layer costs for the manifest, measured on the torch model at two token counts.

FLOPs come from ``torch.utils.flop_counter`` (matrix products: the work that dominates), and
activation bytes from what autograd saves for backward (``saved_tensors_hooks``, each storage
counted once). LoRA layers are counted as the exported graphs run them (:class:`_LoraAsExported`:
one product with the merged weight, rank-r factor gradients), not as torch's autograd would.
Both are fitted per sample as ``cost(N) = a·N + b·N²`` (b: attention's token-pairs term) and
stored as ``[a, b]``: per token, ``a + b·N``.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.flop_counter import FlopCounterMode

from edgetune.export.models.base import TransformerModel


def _fit(n1: int, c1: float, n2: int, c2: float) -> list[float]:
    """Solve c = a·N + b·N² through (n1, c1), (n2, c2)."""
    b = (c2 / n2 - c1 / n1) / (n2 - n1)
    a = c1 / n1 - b * n1
    return [float(a), float(max(b, 0.0))]


class _LoraAsExported(torch.autograd.Function):
    """y = x·W'ᵀ + b with the merged weight W' = W + s·B·A made beforehand (once per step, not per
    token); backward as export/onnx/low_rank.py has it: dX = dY·W', dA = s·(dY·B)ᵀ·X,
    dB = s·dYᵀ·(X·Aᵀ). W' rides on ``ctx`` (a weight: not an activation saved for backward)."""

    @staticmethod
    def forward(ctx, x, merged, bias, lora_a, lora_b, scale):
        ctx.merged, ctx.lora, ctx.scale = merged, (lora_a, lora_b), scale
        factors = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        ctx.save_for_backward(x if factors else None)  # dX alone needs no activation
        y = x @ merged.t()
        return y + bias if bias is not None else y

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        lora_a, lora_b = ctx.lora
        need = ctx.needs_input_grad
        dx = dy @ ctx.merged if need[0] else None
        da = db = None
        if x is not None:
            x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
            da = ctx.scale * (dy2 @ lora_b).t() @ x2 if need[3] else None
            db = ctx.scale * dy2.t() @ (x2 @ lora_a.t()) if need[4] else None
        return dx, None, None, da, db, None


@contextlib.contextmanager
def _lora_as_exported(block):
    from edgetune.export.peft.lora import LoraLinear

    layers = [m for m in block.modules() if isinstance(m, LoraLinear)]
    for m in layers:
        with torch.no_grad():
            merged = m.merged_weight()

        def forward(x, m=m, merged=merged):
            return _LoraAsExported.apply(x, merged, m.base_layer.bias, m.lora_A.weight,
                                         m.lora_B.weight, m.scaling)
        m.forward = forward
    try:
        yield
    finally:
        for m in layers:
            del m.forward


def _block_costs(block, n: int, d: int, bias: bool, trained: bool,
                 input_grad: bool = True) -> tuple[float, float, float]:
    """(forward FLOPs, backward FLOPs, saved bytes) of one sample through ``block`` at n tokens;
    ``input_grad=False``: the parameters' gradients only (the lowest trained block)."""
    params = list(block.parameters())
    frozen_state = [p.requires_grad for p in params]
    if not trained:
        for p in params:
            p.requires_grad_(False)
    try:
        x = torch.randn(1, n, d, requires_grad=input_grad)
        key_bias = torch.zeros(1, n) if bias else None
        saved: dict[int, int] = {}
        weights = {p.untyped_storage().data_ptr() for p in params}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in weights:  # parameters are held anyway: only activations count
                saved[ptr] = t.untyped_storage().nbytes()
            return t

        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with _lora_as_exported(block), FlopCounterMode(display=False) as fwd, hooks:
            y, _, _ = block(x, key_bias, None)
        with FlopCounterMode(display=False) as bwd:
            y.backward(torch.ones_like(y))
        return float(fwd.get_total_flops()), float(bwd.get_total_flops()), float(sum(saved.values()))
    finally:
        for p, o in zip(params, frozen_state):
            p.requires_grad_(o)


def layer_costs(model: TransformerModel, tokens: int) -> list[dict]:
    """Per block: forward / backward (trained, frozen, and ``first``: trained without the input
    gradient) FLOPs and saved bytes, as [a, b] fits."""
    n1, n2 = max(2, tokens // 2), max(3, tokens)
    if n2 == n1:
        n2 = n1 + 1
    bias = "attention_mask" in model.input_names
    out = []
    for block in model.blocks:
        trainable = any(p.requires_grad for p in block.parameters())
        entry = {}
        for variant, trained, dx in (("train", True, True), ("frozen", False, True), ("first", True, False)):
            if variant != "frozen" and not trainable:
                continue
            f1, b1, s1 = _block_costs(block, n1, model.hidden_size, bias, trained, dx)
            f2, b2, s2 = _block_costs(block, n2, model.hidden_size, bias, trained, dx)
            entry.setdefault("forward_flops", _fit(n1, f1, n2, f2))
            entry[f"backward_flops_{variant}"] = _fit(n1, b1, n2, b2)
            entry[f"saved_bytes_{variant}"] = _fit(n1, s1, n2, s2)
        if not trainable:
            for variant in ("train", "first"):
                entry[f"backward_flops_{variant}"] = entry["backward_flops_frozen"]
                entry[f"saved_bytes_{variant}"] = entry["saved_bytes_frozen"]
        out.append(entry)
    return out


def per_token(fit: list[float], n: int) -> float:
    """Cost per token at n tokens from an [a, b] fit."""
    return fit[0] + fit[1] * n
