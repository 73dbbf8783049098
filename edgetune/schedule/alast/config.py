"""ALaST hyper-parameters (arXiv 2408.08670), validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgetune.config import check_choice, check_float, check_int
from edgetune.errors import UsageError
from edgetune.schedule.alast.budgets import BUDGET_RULES
from edgetune.schedule.alast.freezing import SELECTIONS


@dataclass
class AlastConfig:
    """ALaST settings.

    - ``rule``: how budgets move each step (budgets.py): ``"relative"`` (default) steers them
      towards a spread of ``token_budget`` by relative class-token importance; ``"paper"`` is
      the paper's b_l ← clip(b_l + α·(Δ_l^i − Δ_l^{i−1}), b_min, 1) on the raw Δ.
    - ``alpha``: budget update rate. ``"relative"``: the fraction of the way to the target
      taken per step (0.1: ~90 % in 20 steps). ``"paper"``: α of the order of the learning rate.
    - ``token_budget`` (β, ``"relative"`` only): the mean keep ratio over layers the budgets
      aim for; 1 keeps every token.
    - ``n_train`` (K): layers trained per step; 0 means ⌈train_fraction·L⌉.
    - ``train_fraction``: K/L when ``n_train`` is 0; 3/4 gives the paper's 9 of 12 on ViT-B.
    - ``b_min``: smallest budget, so every layer keeps at least ⌈b_min·N⌉ tokens.
    - ``selection``: ``"sample"`` draws K layers without replacement with probability ∝ budget
      (default); ``"topk"`` takes the K highest budgets.
    - ``seed``: seeds the numpy Generator that ``"sample"`` draws from.
    - ``full_tail``: the share of the run's last steps that keep every token (the budgets
      still move and choose the layers trained), so that a model inferred at every token ends
      its training at every token; 0 (default) leaves every step to the budgets.
    """

    rule: str = "relative"
    alpha: float = 0.1
    token_budget: float = 0.5
    n_train: int = 0
    train_fraction: float = 0.75
    b_min: float = 0.1
    selection: str = "sample"
    seed: int = 0
    full_tail: float = 0.0

    def __post_init__(self) -> None:
        check_choice(self, "rule", tuple(BUDGET_RULES.names()))
        check_float(self, "alpha", lo=0.0)
        if self.rule == "relative":
            check_float(self, "alpha", lo=0.0, hi=1.0)
        check_float(self, "token_budget", lo=0.0, hi=1.0, lo_open=True)
        check_int(self, "n_train", lo=0)
        check_float(self, "train_fraction", lo=0.0, hi=1.0, lo_open=True)
        check_float(self, "b_min", lo=0.0, hi=1.0, lo_open=True)
        check_choice(self, "selection", SELECTIONS)
        check_int(self, "seed", lo=0)
        check_float(self, "full_tail", lo=0.0, hi=1.0)

    def trained_layers(self, n_layers: int) -> int:
        """K for a model of ``n_layers`` layers: ``n_train``, else ⌈train_fraction·L⌉ (≥ 1)."""
        if self.n_train:
            if self.n_train > n_layers:
                raise UsageError(
                    f"AlastConfig.n_train={self.n_train}: must be 0 (auto) or an integer in [1, {n_layers}] "
                    f"(the model has {n_layers} layers)")
            return self.n_train
        # the tolerance keeps 0.75·12 = 9 from becoming 10 through rounding error
        return max(1, min(n_layers, math.ceil(self.train_fraction * n_layers - 1e-9)))
