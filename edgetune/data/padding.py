"""Text batches padded to a multiple of a token count: fewer distinct batch lengths.

Each batch of text is padded (right) to its own longest text; ONNX Runtime's arena keeps a
working set for every length it has seen, so a run's RSS steps up each time a longer batch
arrives (minilm-l6, batch 32: 852 MB at 13 lengths, 662 MB padded to multiples of 8 at
3 lengths, for 10 % more time per step: docs/demo.md). Padded positions carry the pad id and
attention mask 0 (a language model's labels: no target), so the model's outputs are the same.
"""

from __future__ import annotations

import numpy as np

from edgetune.targets import IGNORE


def pad_multiple(batch: dict[str, np.ndarray], multiple: int, limit: int,
                 pad_id: int = 0) -> dict[str, np.ndarray]:
    """``batch`` with ``input_ids``, ``attention_mask`` (and 2-D ``labels``) widened to the next
    multiple of ``multiple`` tokens, at most ``limit``; unchanged otherwise (images, ``multiple``
    ≤ 1, already there)."""
    if multiple <= 1 or "input_ids" not in batch:
        return batch
    n = batch["input_ids"].shape[1]
    extra = min(limit, -(-n // multiple) * multiple) - n
    if extra <= 0:
        return batch
    out = dict(batch)
    widen = ((0, 0), (0, extra))
    out["input_ids"] = np.pad(batch["input_ids"], widen, constant_values=pad_id)
    if "attention_mask" in batch:  # a language model's batches have none (causal, right-padded)
        out["attention_mask"] = np.pad(batch["attention_mask"], widen, constant_values=0)
    if batch["labels"].ndim == 2:
        out["labels"] = np.pad(batch["labels"], widen, constant_values=IGNORE)
    return out


def dataset_pad_id(data) -> int:
    """The pad id a text dataset pads with (through subsets), else 0."""
    while data is not None and not hasattr(data, "pad_id"):
        data = getattr(data, "parent", None)
    return int(getattr(data, "pad_id", 0) or 0)
