"""Shared by the ONNX export tests: micro models × methods, inputs, keep vectors, torch reference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgetune.export.onnx import prepare_model
from edgetune.export.peft import trainable_names
from edgetune.schedule.alast.importance import class_token_delta

import numerics

MODELS = ("vit-micro", "bert-micro")
METHODS = ("full", "bitfit", "lora", "adapter", "prefix", "prompt", "propulsion", "ia3")
# BERT with mean pooling (the head reads the key bias): the methods that touch the head's input
# differently — every weight, an adapter, extra prompt tokens in the mean.
MEAN = "bert-micro+mean"
COMBOS = [(m, k) for m in MODELS for k in METHODS] + [(MEAN, k) for k in ("full", "lora", "prompt")]
CLASSES = 3
# (batch, sequence length): both unlike the trace's (2, 16); ViT's token count is fixed.
SHAPES = ((1, 20), (3, 11))


def build(name: str, method: str):
    """``name`` a registered model, ``+mean`` for BERT with mean pooling."""
    name, _, pooling = name.partition("+")
    model = prepare_model(name, method, num_classes=CLASSES, seed=0, pooling=pooling or None)
    with torch.no_grad():  # move the identity-at-init parameters so their gradients are generic
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model


def keep_vectors(n: int, layers: int = 2) -> list[list[int]]:
    """Three keep-count vectors for ``n`` tokens, all unlike the traced [n-1, n-2]: keep all,
    halve then quarter, and only the class token left after the last layer."""
    assert layers == 2
    return [[n, n], [max(2, n // 2), max(1, n // 4)], [n - 2, 1]]


def make_batch(model, batch: int, seq: int, seed: int):
    torch.manual_seed(seed)
    inputs = model.example_inputs(batch, seq)
    labels = torch.randint(0, CLASSES, (batch,))
    return inputs, labels


def cases(model):
    """(inputs, labels, keep) for two batch sizes × three keep vectors."""
    out = []
    for i, (batch, seq) in enumerate(SHAPES):
        inputs, labels = make_batch(model, batch, seq, seed=100 + i)
        n = model.num_tokens(*inputs)
        out += [(inputs, labels, keep) for keep in keep_vectors(n, model.num_layers)]
    return out


def reference(model, inputs, labels, keep):
    """torch autograd: loss, logits, cls_delta and the gradient of every trainable parameter."""
    model.zero_grad()
    out = model.forward_features(*inputs, keep=torch.tensor(keep))
    loss = F.cross_entropy(out.logits, labels)
    loss.backward()
    params = dict(model.named_parameters())
    grads = {n: params[n].grad.detach().numpy().copy() for n in trainable_names(model)}
    cls = np.stack([c.detach().numpy() for c in out.cls_tokens])
    delta = class_token_delta(cls[:-1], cls[1:])
    return loss.item(), out.logits.detach().numpy(), delta, grads


def rtol_for(source) -> float:
    """The norm-wise bound for one model's parity checks (tests/numerics.py): ``numerics.RTOL``,
    more for Propulsion's z^k. ``source`` a model, or a bundle's ``graphs.json`` index."""
    if isinstance(source, dict):
        method, config = source["method"]["name"], source["method"]["config"]
    else:
        method = getattr(source, "peft_method", None)
        config = vars(getattr(source, "peft_config", None) or {})
    return numerics.method_rtol(method, config.get("degree", numerics.PROPULSION_DEGREE))


def assert_close(actual, expected, what: str, rtol: float, atol: float = 0.0) -> None:
    """Norm-wise (tests/numerics.py); ``atol`` a floor for gradients, see ``gradient_atol``."""
    numerics.assert_close_normwise(actual, expected, what, rtol=rtol, atol=atol)


def gradient_atol(grads: dict) -> float:
    """The floor for one parameter's gradient: STAGE × the RMS of the whole gradient vector."""
    return numerics.gradient_floor(grads.values())


def numpy_inputs(inputs) -> list[np.ndarray]:
    return [t.numpy() for t in inputs]
