"""Layer importance from the class token (ALaST, Devoto et al. 2024, arXiv 2408.08670).

    Δ_l = mean over the batch of Σ_features (CLS_l − CLS_{l−1})²

where CLS_0 is the class token entering the first layer and CLS_l the one leaving layer l.
The budget rule "relative" also needs the norms of the class tokens entering each layer,
mean over the batch of ‖CLS_{l−1}‖².

:func:`class_token_delta` is the one definition of Δ: the adaptive runtime
(edgetune/runtime/adaptive.py) calls it between blocks, and the static export computes the same
inside its graph (``cls_delta`` in export/onnx/static.py, checked against this function by
tests/test_export_static.py).
"""

from __future__ import annotations

import numpy as np

from edgetune.errors import UsageError


def class_token_delta(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Δ = mean over the batch of Σ_features (cur − prev)², the class-token change of a layer.

    ``prev``, ``cur``: class tokens (..., B, D) entering and leaving the layer(s); returns
    shape (...): a scalar for one layer's (B, D), (L,) for (L, B, D). Computed in the inputs'
    dtype (the runtime's float32, as the exported graphs compute it); unchecked, unlike
    :func:`class_token_importance`.
    """
    return np.square(np.subtract(cur, prev)).sum(axis=-1).mean(axis=-1)


def class_token_norm(cls: np.ndarray) -> np.ndarray:
    """mean over the batch of ‖CLS‖², in float64, from class tokens (..., B, D) → (...)."""
    return np.square(np.asarray(cls, dtype=np.float64)).sum(axis=-1).mean(axis=-1)


def _checked(cls_tokens: np.ndarray) -> np.ndarray:
    """Class tokens as float64 (L+1, B, D), checked; (L+1, D) is taken as B = 1."""
    x = np.asarray(cls_tokens, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or x.shape[0] < 2 or x.shape[1] < 1 or x.shape[2] < 1:
        raise UsageError(
            f"cls_tokens shape {tuple(np.shape(cls_tokens))}: must be (L+1, batch, features) "
            "with L >= 1, the class token before the first layer and after each layer")
    if not np.all(np.isfinite(x)):
        raise UsageError("cls_tokens: contains NaN or inf (the forward pass diverged)")
    return x


def class_token_importance(cls_tokens: np.ndarray) -> np.ndarray:
    """Δ, shape (L,), float64, from class tokens of shape (L+1, B, D) (or (L+1, D) for B=1)."""
    x = _checked(cls_tokens)
    return class_token_delta(x[:-1], x[1:])


def class_token_norms(cls_tokens: np.ndarray) -> np.ndarray:
    """mean over the batch of ‖CLS_{l−1}‖², shape (L,), from class tokens (L+1, B, D)."""
    return class_token_norm(_checked(cls_tokens)[:-1])
