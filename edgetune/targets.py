"""What a batch's labels count: a classifier's one label per sample, a language model's next
token per position (−100 where a position has no target: padding, a prompt).

The step's loss is the mean over targets, so micro-batches weigh by their targets:
Σ_i n_i·L_i / Σ_i n_i is the whole batch's mean (and its gradient, the batch's gradient).
"""

from __future__ import annotations

import numpy as np

IGNORE = -100  # a position with no target (as Hugging Face's and torch's ignore_index)


def targets(labels: np.ndarray) -> int:
    """Samples (B,) or positions with a target (B, N) in ``labels``."""
    labels = np.asarray(labels)
    return int((labels != IGNORE).sum()) if labels.ndim > 1 else len(labels)


def hits(logits: np.ndarray, labels: np.ndarray) -> int:
    """Targets whose argmax logit is the label (token hits for a language model)."""
    labels = np.asarray(labels)
    return int(((np.asarray(logits).argmax(-1) == labels) & (labels != IGNORE)).sum())
