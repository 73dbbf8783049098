"""The learning-rate sweep of bench/methods.py: per task and method a grid of three rates a
half-decade apart, picked by the best validation accuracy of a seed-0 run (early stopping on
the validation split; the test split is never looked at). A pick on the grid's edge extends
the grid that way, a half-decade at a time, up to ``EXTEND`` times."""

from __future__ import annotations

from collections.abc import Callable

# Centred on the rates earlier probes liked (docs/methods.md): full fine-tuning low, the
# methods with few parameters higher, IA3 / prefix / prompt (scales and a few vectors) highest.
GRIDS = {
    "text": {"full": (3e-5, 1e-4, 3e-4), "lora": (3e-4, 1e-3, 3e-3), "adapter": (3e-4, 1e-3, 3e-3),
             "prefix": (3e-3, 1e-2, 3e-2), "prompt": (3e-3, 1e-2, 3e-2),
             "propulsion": (1e-3, 3e-3, 1e-2), "ia3": (3e-3, 1e-2, 3e-2), "bitfit": (1e-3, 3e-3, 1e-2)},
    "vit": {"full": (1e-4, 3e-4, 1e-3), "lora": (1e-3, 3e-3, 1e-2), "adapter": (1e-3, 3e-3, 1e-2),
            "prefix": (3e-3, 1e-2, 3e-2), "prompt": (3e-3, 1e-2, 3e-2),
            "propulsion": (1e-3, 3e-3, 1e-2), "ia3": (1e-2, 3e-2, 1e-1), "bitfit": (1e-3, 3e-3, 1e-2)},
}
STEP = 10 ** 0.5  # a half-decade
EXTEND = 2


def sweep(grid: tuple[float, ...], val_of: Callable[[float], float | None]) -> dict:
    """Run ``val_of(lr)`` (a seed-0 run's best validation accuracy; None if it failed) over
    ``grid``, extended past an edge that wins; the pick is the best, the lower rate on a tie."""
    tried: dict[float, float | None] = {}
    lrs = sorted(grid)
    for _ in range(EXTEND + 1):
        for lr in lrs:
            if lr not in tried:
                tried[lr] = val_of(lr)
        ok = {lr: v for lr, v in tried.items() if v is not None}
        if not ok:
            return {"tried": tried, "lr": None, "why": "every rate failed"}
        best = max(ok.values())
        pick = min(lr for lr, v in ok.items() if v == best)
        order = sorted(tried)
        if pick == order[0] and len(order) < len(grid) + EXTEND:
            lrs = [float(f"{pick / STEP:.3g}")]
        elif pick == order[-1] and len(order) < len(grid) + EXTEND:
            lrs = [float(f"{pick * STEP:.3g}")]
        else:
            break
    return {"tried": {f"{k:g}": v for k, v in sorted(tried.items())}, "lr": pick, "val": best}
