"""What one training step costs, from the bundle manifest's per-layer fits: FLOPs and memory.

The manifest stores, per layer l, fits ``[a, b]`` of a per-sample cost at N tokens:
``c(N) = a·N + b·N²`` (export/costs.py). For a plan (keep (L,), trained (L,), micro-batch m)
on a batch of B samples of N tokens:

    tokens into layer l:   t_0 = N,  t_l = keep[l−1]
    lowest trained:        λ = min{l : trained[l]}      (no backward runs below it)

    FLOPs per step   F = B · [ Σ_l fwd_l(t_l) + Σ_{l≥λ} bwd_l(t_l) ]
                     bwd_l = bwd_train_l if trained[l] else bwd_frozen_l, and bwd_first_λ
                     (no input gradient) at l = λ unless the stem trains too (it trains
                     with layer 0, when it has trainable parameters)

    activations      A = m · Σ_{l≥λ} [ saved_l(t_l) + 4·D·t_l ]        (saved_train / _frozen / _first)
    working set      W = 2 · m · max_l saved_train_l(t_l)               (the largest graph's own
                                                                         temporaries: scores, MLP hidden)
    parameters       P = 4 · params.total                               (fp32, all of them)
    optimizer        O = 8 · params.trainable                           (AdamW m and v, fp32, all
                                                                         trainable, allocated up front)
    gradients        G = c · 4 · (Σ_{trained l} trainable_l + outside trainable)
    host             H = inputs of the whole batch + 3 · 4 · largest trainable tensor (AdamW's
                         temporaries, one parameter at a time)
    model bytes      M = P + O + G + A + W + H    peak RSS ≈ base + M   (base: calibration.py)

A and W live in ONNX Runtime's shared arena (runtime/ort_env.py), whose limit backs the RAM
cap: :attr:`MemoryBreakdown.arena` is what a plan asks of it. W was measured on vit-tiny at
197 tokens, batch 32: a layer's forward at every token holds ~1.5× its saved bytes.

- ``4·D·t_l`` is the block input x the runtime keeps for the backward walk. The export's hook
  may already count it inside ``saved_l`` (when the block's first op saves its input), so it can
  be counted twice: on the safe side, which a hard cap wants.
- What depends on the engine comes from its :class:`EngineMemory` (train/engines.py derives it
  from the engine's capabilities). G counts c copies: 2 where numpy holds the training state
  (the step's numpy sum, accumulated in place, and a block's ORT outputs while they are
  copied out); 1 in ORT's training state (its own gradient buffers). Only layers trained this
  step (and the trainable parameters outside the layers: the head, the stem) get gradients.
- Not modelled: the stem's and the head's FLOPs and activations (the manifest has no fit for
  them; small next to the blocks), transient AdamW temporaries (one parameter at a time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetune.errors import EdgetuneError, UsageError

FP32 = 4
ADAMW_STATES = 2      # m and v
WORKING_SET = 2.0     # × the largest saved_train_l(t_l) of the step, per micro-batch sample
ADAMW_TEMPORARIES = 3  # numpy temporaries of one parameter during its update
_FITS = ("forward_flops", "backward_flops_train", "backward_flops_frozen",
         "saved_bytes_train", "saved_bytes_frozen")


def fit_cost(fit: np.ndarray, n: np.ndarray | float) -> np.ndarray:
    """``a·N + b·N²`` per row of ``fit`` (shape (..., 2)) at token counts ``n``."""
    fit = np.asarray(fit, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    return fit[..., 0] * n + fit[..., 1] * n * n


@dataclass(frozen=True, eq=False)
class ModelCosts:
    """The cost data of one bundle: per-layer fits (L, 2) and parameter counts."""

    num_layers: int
    hidden_size: int
    tokens: int                       # max tokens into layer 0 (class token included)
    forward: np.ndarray               # (L, 2) FLOPs fits
    backward_train: np.ndarray
    backward_frozen: np.ndarray
    saved_train: np.ndarray           # (L, 2) bytes fits
    saved_frozen: np.ndarray
    layer_trainable: np.ndarray       # (L,) trainable parameters per layer
    total_params: int
    trainable_params: int
    outside_trainable: int            # trainable parameters outside the layers (head, stem)
    backward_first: np.ndarray | None = None  # (L, 2) the lowest trained layer's, unless the
    saved_first: np.ndarray | None = None     # stem trains below it (manifest ``*_first``)
    stem_trainable: bool = False
    largest_trainable: int = 0                # elements of the largest trainable tensor

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ModelCosts:
        """Read and check the manifest's ``layers``, ``params``, ``tokens`` and ``model``."""
        try:
            layers = manifest["layers"]
            L = int(manifest["model"]["num_layers"])
            D = int(manifest["model"]["hidden_size"])
            tokens = int(manifest["tokens"])
            params = manifest["params"]
            total, trainable = int(params["total"]), int(params["trainable"])
            outside = params.get("outside_layers", {}).get("trainable", {})
        except (KeyError, TypeError, ValueError) as e:
            raise EdgetuneError(f"manifest: missing or bad cost entry {e}; re-export the bundle "
                                "with this edgetune") from None
        if len(layers) != L or L < 1:
            raise EdgetuneError(f"manifest: {len(layers)} layer cost entries for {L} layers")
        arrays = {key: _fits(layers, key) for key in _FITS}
        layer_trainable = np.array([sum(int(v) for v in layer.get("trainable_params", {}).values())
                                    for layer in layers], dtype=np.int64)
        # bundles from before the ``first`` graphs have none
        if "stem_trainable" in manifest and all("backward_flops_first" in x for x in layers):
            for key in ("backward_flops_first", "saved_bytes_first"):
                arrays[key] = _fits(layers, key)
        sizes = [int(v) for layer in layers for v in layer.get("trainable_params", {}).values()]
        sizes += [int(v) for v in outside.values()]
        return cls(L, D, tokens, arrays["forward_flops"], arrays["backward_flops_train"],
                   arrays["backward_flops_frozen"], arrays["saved_bytes_train"],
                   arrays["saved_bytes_frozen"], layer_trainable, total, trainable,
                   sum(int(v) for v in outside.values()), arrays.get("backward_flops_first"),
                   arrays.get("saved_bytes_first"), bool(manifest.get("stem_trainable", False)),
                   max(sizes, default=0))


def _fits(layers: list, key: str) -> np.ndarray:
    rows = []
    for i, layer in enumerate(layers):
        fit = layer.get(key)
        if (not isinstance(fit, (list, tuple)) or len(fit) != 2
                or not all(isinstance(v, (int, float)) and np.isfinite(v) and v >= 0 for v in fit)):
            raise EdgetuneError(f"manifest: layer {i} {key}={fit!r}: expected [a, b], "
                                "two finite numbers >= 0")
        rows.append(fit)
    return np.asarray(rows, dtype=np.float64)


def _per_layer(costs_train: np.ndarray, costs_frozen: np.ndarray, costs_first, trained: np.ndarray,
               t: np.ndarray, stem_trainable: bool) -> np.ndarray:
    """Per layer: the train or frozen fit at t_l, the ``first`` fit at the lowest trained layer
    when there is one and no stem trains below it; 0 below it (no backward runs there)."""
    out = np.where(trained, fit_cost(costs_train, t), fit_cost(costs_frozen, t))
    low = int(np.flatnonzero(trained)[0])
    if costs_first is not None and not (stem_trainable and low == 0):
        out[low] = fit_cost(costs_first[low], t[low])
    return np.where(backward_mask(trained), out, 0.0)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Predicted peak RSS of a step, bytes, by term; ``total`` = base + the rest."""

    base: float
    params: float
    optimizer: float
    gradients: float
    activations: float
    checkpoint: float = 0.0   # what a checkpoint write adds on top of the steps' high-water mark
    working: float = 0.0      # the largest graph's temporaries (W)
    host: float = 0.0         # numpy-side: the batch's inputs, AdamW's temporaries (H)

    @property
    def model(self) -> float:
        """What a step's plan and the model decide: P + O + G + A + W + H."""
        return self.params + self.optimizer + self.gradients + self.activations + self.working + self.host

    @property
    def arena(self) -> float:
        """What the step asks of ONNX Runtime's shared arena: A + W."""
        return self.activations + self.working

    @property
    def total(self) -> float:
        """Peak RSS of the run: ONNX Runtime's arena keeps the steps' high-water mark, and a
        checkpoint's serialised copy comes on top of it."""
        return self.base + self.model + self.checkpoint

    def to_dict(self) -> dict[str, float]:
        return {"base": self.base, "params": self.params, "optimizer": self.optimizer,
                "gradients": self.gradients, "activations": self.activations,
                "working": self.working, "host": self.host, "checkpoint": self.checkpoint,
                "total": self.total}


def _check_plan(costs: ModelCosts, keep: np.ndarray, trained: np.ndarray, n_tokens: int) -> None:
    L = costs.num_layers
    if keep.shape != (L,) or trained.shape != (L,):
        raise UsageError(f"plan: keep {keep.shape} and trained {trained.shape} must both be ({L},)")
    if not trained.any():
        raise UsageError("plan: at least one layer must train")
    if n_tokens < 1 or np.any(keep < 1) or np.any(keep > n_tokens):
        raise UsageError(f"plan: keep {keep.tolist()} must lie in [1, n_tokens={n_tokens}]")


def tokens_in(keep: np.ndarray, n_tokens: int) -> np.ndarray:
    """Tokens entering each layer: ``[N, keep[0], ..., keep[L−2]]``, float64."""
    keep = np.asarray(keep, dtype=np.float64)
    return np.concatenate([[float(n_tokens)], keep[:-1]])


def backward_mask(trained: np.ndarray) -> np.ndarray:
    """(L,) bool: layers that run a backward pass, i.e. every layer from the lowest trained up."""
    trained = np.asarray(trained, dtype=bool)
    return np.arange(trained.size) >= int(np.flatnonzero(trained)[0])


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step (all B samples), per layer (L,) and in total."""

    forward: np.ndarray
    backward: np.ndarray

    @property
    def total(self) -> float:
        return float(self.forward.sum() + self.backward.sum())


def step_flops(costs: ModelCosts, keep, trained, n_tokens: int, batch_size: int) -> StepFlops:
    """F = B·[Σ fwd_l(t_l) + Σ_{l≥λ} bwd_l(t_l)]; micro-batching does not change it."""
    keep, trained = np.asarray(keep, np.int64), np.asarray(trained, bool)
    _check_plan(costs, keep, trained, n_tokens)
    t = tokens_in(keep, n_tokens)
    fwd = fit_cost(costs.forward, t) * batch_size
    bwd = _per_layer(costs.backward_train, costs.backward_frozen, costs.backward_first, trained, t,
                     costs.stem_trainable)
    return StepFlops(fwd, bwd * batch_size)


def activation_bytes_per_sample(costs: ModelCosts, keep, trained, n_tokens: int) -> np.ndarray:
    """(L,) bytes one sample keeps for backward: saved_l(t_l) + 4·D·t_l for l ≥ λ, else 0."""
    keep, trained = np.asarray(keep, np.int64), np.asarray(trained, bool)
    _check_plan(costs, keep, trained, n_tokens)
    t = tokens_in(keep, n_tokens)
    saved = _per_layer(costs.saved_train, costs.saved_frozen, costs.saved_first, trained, t,
                       costs.stem_trainable)
    return np.where(backward_mask(trained), saved + FP32 * costs.hidden_size * t, 0.0)


@dataclass(frozen=True)
class EngineMemory:
    """How an engine holds a step's memory (``EngineCaps.memory``); the default: numpy's."""

    ort_state: bool = False          # parameters, gradients, AdamW moments in ORT's training
                                     # state (one gradient copy; AdamW in place) or numpy's
    streams_checkpoint: bool = True  # checkpoints a tensor at a time (C = 0), or the whole state
    freeze_per_step: bool = True     # plans may train fewer layers

    @property
    def gradient_copies(self) -> int:
        return 1 if self.ort_state else 2


def static_bytes(costs: ModelCosts) -> tuple[float, float]:
    """(P, O): fp32 parameters, all of them, and AdamW's two fp32 moments of every trainable one."""
    return float(FP32 * costs.total_params), float(FP32 * ADAMW_STATES * costs.trainable_params)


def gradient_bytes(costs: ModelCosts, trained, engine: EngineMemory = EngineMemory()) -> float:
    """G = c·4·(Σ_{trained l} trainable_l + trainable outside the layers), c by engine."""
    check_engine(engine)
    trained = np.asarray(trained, bool)
    n = int(costs.layer_trainable[trained].sum()) + costs.outside_trainable
    return float(engine.gradient_copies * FP32 * n)


def check_engine(engine: Any, name: str = "engine") -> None:
    if not isinstance(engine, EngineMemory):
        raise UsageError(f"{name}={engine!r}: must be an EngineMemory (an engine's caps.memory, "
                         "train/engines.py), not a mode name")


def checkpoint_bytes(costs: ModelCosts, engine: EngineMemory = EngineMemory()) -> float:
    """Extra RSS while a checkpoint is written, C.

    - the whole state at once (ORT's ``save_checkpoint``: every parameter and the optimizer
      state in one buffer): C = 2·(P + O) (measured: minilm-l6 full fine-tuning rose 463 MB
      above its steps while writing, P + O = 273 MB);
    - streamed from the live arrays a tensor at a time (edgetune.tensorfile): C = 0.
    """
    check_engine(engine)
    params, optimizer = static_bytes(costs)
    return 0.0 if engine.streams_checkpoint else 2.0 * (params + optimizer)


def working_bytes(costs: ModelCosts, keep, trained, n_tokens: int, micro_batch: int) -> float:
    """W = 2·m·max_l saved_train_l(t_l): every layer runs its forward, the widest holds most."""
    t = tokens_in(np.asarray(keep, np.int64), n_tokens)
    return float(WORKING_SET * micro_batch * fit_cost(costs.saved_train, t).max())


def host_bytes(costs: ModelCosts, batch_size: int, input_bytes_per_sample: float,
               engine: EngineMemory = EngineMemory()) -> float:
    """H = the whole batch's inputs + (numpy's AdamW) the temporaries of the largest trainable
    tensor; in ORT's training state AdamW runs in place."""
    check_engine(engine)
    adamw = 0.0 if engine.ort_state else ADAMW_TEMPORARIES * FP32 * costs.largest_trainable
    return float(batch_size * input_bytes_per_sample + adamw)


def step_memory(costs: ModelCosts, keep, trained, n_tokens: int, micro_batch: int,
                base: float, engine: EngineMemory = EngineMemory(), batch_size: int | None = None,
                input_bytes_per_sample: float = 0.0) -> MemoryBreakdown:
    """The peak-RSS breakdown of one step with ``micro_batch`` samples per forward/backward,
    with the checkpoint write of ``engine`` on top (:func:`checkpoint_bytes`)."""
    if micro_batch < 1:
        raise UsageError(f"micro_batch={micro_batch}: must be >= 1")
    params, optimizer = static_bytes(costs)
    acts = float(activation_bytes_per_sample(costs, keep, trained, n_tokens).sum()) * micro_batch
    return MemoryBreakdown(float(base), params, optimizer, gradient_bytes(costs, trained, engine), acts,
                           checkpoint_bytes(costs, engine),
                           working_bytes(costs, keep, trained, n_tokens, micro_batch),
                           host_bytes(costs, batch_size or micro_batch, input_bytes_per_sample, engine))
