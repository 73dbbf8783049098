"""The one owner of "these two fp32 computations agree": a norm-wise relative error.

Every parity check in the suite (ORT against torch autograd, static against adaptive graphs,
merged against unmerged, ours against transformers/peft, numpy AdamW against torch's, the
merged inference graph against the training engine) compares two evaluations of one formula
in float32 that differ in the order of their operations: other kernels, blocking, FMA or not,
thread counts, vector widths (SSE, AVX2, AVX-512, NEON). An element-wise ``rtol`` is the wrong
statement about that: an entry that is small because its terms cancel carries an absolute
error set by the *terms*, so its relative error is unbounded, and which entry that is depends
on the CPU (the report: 1 of 64 entries of a Propulsion ∂L/∂z, 100× below the tensor's
maximum, 2.0e-4 off element-wise; the tensor is 1e-6 off norm-wise). Numerical analysis
bounds the whole tensor (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1, §6):

    ‖a − e‖₂ ≤ rtol·‖e‖₂ + atol·√N        (N entries; atol an RMS floor, 0 unless stated)

The bound for fp32
------------------
* u = 2⁻²⁴ ≈ 6.0e-8; every operation is exact up to a factor (1 + δ), |δ| ≤ u.
* A dot product of length n, in *any* order: |fl(s) − s| ≤ γₙ·Σ|xᵢyᵢ|, γₙ = nu/(1 − nu); two
  orders differ by ≤ 2γₙ·Σ|xᵢyᵢ| (worst case: every rounding aligned), and by ≈ √n·u
  typically, rounding errors behaving as independent (Higham & Mary, SISC 2019). The micro
  models' longest reductions are n ≤ 256 (ViT's MLP; a patch is 3·8·8 = 192; weight
  gradients sum over batch × tokens ≤ 60): ``STAGE`` = √256·u = 16u ≈ 9.5e-7 per stage.
* A gradient chains through ≈ 50 such stages (two blocks of ≈ 10 reductions and normalisations
  each, forward and backward, and the head): first-order errors add, independent ones in
  quadrature, √50·STAGE ≈ 7e-6. ``RTOL = 3e-5`` is ≈ 4× that: the largest of ≈ 5000
  comparisons per run, and the O(1) condition numbers of layernorm (÷ a standard deviation),
  softmax and cross-entropy (÷ a sum of exponentials) and of the ALaST signal ‖cls_{l+1} −
  cls_l‖² (a difference). Bigger models: :func:`model_rtol` scales it by √n and √depth.
* Propulsion, y = F(x) ⊙ z^k, k = 15. A relative perturbation δ of z is k·δ in z^k, since
  d(z^k)/z^k = k·dz/z, and ∂L/∂z = k·z^(k−1)·Σ g⊙F carries it again. In a one-step parity z
  is the same fp32 number on both sides (δ = 0); what differs is the rounding of z^k itself:
  ≤ (k − 1)·u computed by repeated multiplication, ≈ (1 + k·|ln z|)·u by exp(k·ln z), so the
  factor k multiplies u, not the bound. Each wrapped layer adds up to k·u to its stage's 16u:
  ``propulsion_rtol(k) = RTOL·(1 + k·u/STAGE)``, ×1.94 for k = 15 (measured: Propulsion
  gradients 1.9× the bulk's worst). Where z itself differs (two optimisers' trajectories) the
  full factor k applies to the trajectory's δ; the suite compares no Propulsion trajectory.
* Gradients that are zero in exact arithmetic (BERT's key bias: softmax is blind to a shift
  common to every key) are rounding noise of a cancelled sum on both sides: no relative
  bound holds; :func:`gradient_floor` gives the absolute one fp32 can promise.

Why not also max|a − e| ≤ c·rtol·max|e| (an atol scaled to the tensor)? The norm-wise bound
implies it with c = √N (max|a − e| ≤ ‖a − e‖₂, ‖e‖₂ ≤ √N·max|e|); a smaller c re-introduces a
per-entry statement, and the measured max|a − e|/max|e| (4.1e-6) exceeds the measured
norm-wise worst (3.7e-6) here, so it would need more slack to say less. A bug is not a
rounding: one entry off by 1 % of the norm, the sign of a small entry, a missing factor, two
entries swapped are each rejected 17× to 20000× over the bound (tests/test_numerics.py).

Measured (max over the matrix; 1 and 2 and 3 threads in torch and ORT; torch's kernels for
AVX-512, AVX2 and no vectors; MKL at SSE4.2, AVX2 and its COMPATIBLE path; ORT with its
graph optimisations off, basic and all):

    ORT vs torch, gradients      1.1e-6 of 3.0e-5 (27×)   Propulsion 2.1e-6 of 5.8e-5 (28×)
    ORT vs torch, logits / loss  1.5e-6 / 4.0e-7 (19× / 75×)  cls_delta 2.7e-6 (11×)
    zero key-bias gradients      0.022 of their floor (45×)
    frozen vs trainable, recompute vs stored (ORT vs ORT)   1.4e-7 (> 300×)
    merged vs unmerged, recipe vs merge_model, inference.onnx vs torch / engine   ≥ 44×
    ours vs transformers / peft (bert-micro)  3.4e-7 (88×); MiniLM-L6 3.7e-6 of 1.3e-4 (34×)
    numpy AdamW vs torch (5 steps, displacement)  23×; static vs adaptive losses, 8 steps  72×

``EDGETUNE_NUMERICS_LOG=path`` appends one JSON line per comparison (the test, ``what``, the
norm-wise error, its ratio to the bound): how that table was made.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

U = 2.0 ** -24            # fp32 unit roundoff, 5.96e-8
STAGE = 16 * U            # one reduction of length n <= 256, two orders: typically √n·u
RTOL = 3e-5               # norm-wise, two fp32 evaluations of one model (derivation above)
PROPULSION_DEGREE = 15    # k in z^k, the Propulsion default


def propulsion_rtol(degree: int = PROPULSION_DEGREE) -> float:
    """RTOL for a model whose layers are scaled by z^k: each wrapped layer adds the rounding
    of z^k, up to (k - 1)·u, to its stage's √n·u; the budget per stage grows by k·u/STAGE."""
    return RTOL * (1 + degree * U / STAGE)


def model_rtol(reduction: int, depth: int) -> float:
    """RTOL for a model bigger than the micro ones (longest reduction 256, 2 blocks): the error
    per stage grows as √n, the number of stages as the depth, their sum in quadrature."""
    return RTOL * math.sqrt(max(reduction / 256, 1) * max(depth / 2, 1))


def method_rtol(method: str | None, degree: int = PROPULSION_DEGREE) -> float:
    """The bound for one PEFT method's model: RTOL, or ``propulsion_rtol`` for Propulsion."""
    return propulsion_rtol(degree) if method == "propulsion" else RTOL


def gradient_floor(tensors) -> float:
    """An ``atol`` for the parts of one gradient vector: STAGE × the RMS over all of them.

    An entry that is zero in exact arithmetic (BERT's key bias: softmax is blind to a shift
    common to every key, so ∂L/∂b_k = Σ_t ∂L/∂k_t = 0) is computed as rounding noise of a
    cancelled sum, ≈ √n·u times its terms, whose size is the gradient's own; no relative
    bound can hold there, and this floor is what fp32 can promise.
    """
    values = [as_array(t).ravel() for t in tensors]
    n = sum(v.size for v in values)
    return STAGE * float(np.sqrt(sum(float(v @ v) for v in values) / n)) if n else 0.0


def as_array(x) -> np.ndarray:
    """numpy, torch (detached, on the CPU), ORT outputs, Python scalars and lists: float64."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def normwise_error(actual, expected) -> float:
    """‖a − e‖₂ / ‖e‖₂ over the whole tensor (inf where e = 0 and a ≠ e)."""
    a, e = as_array(actual), as_array(expected)
    err, ref = float(np.linalg.norm((a - e).ravel())), float(np.linalg.norm(e.ravel()))
    return err / ref if ref else (0.0 if err == 0 else float("inf"))


def _log(record: dict) -> None:
    path = os.environ.get("EDGETUNE_NUMERICS_LOG")
    if path:
        record["test"] = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def assert_close_normwise(actual, expected, what: str = "", *, rtol: float = RTOL,
                          atol: float = 0.0) -> None:
    """Assert ‖a − e‖₂ ≤ rtol·‖e‖₂ + atol·√N over the whole tensor (shapes must be equal).

    ``atol`` is an RMS floor per entry, for a tensor whose exact value is zero or nearly so
    by cancellation (:func:`gradient_floor`); 0 by default. Non-finite entries must be the
    same on both sides, in the same places. Scalars (losses) are tensors of one entry.
    """
    a, e = as_array(actual), as_array(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {e.shape}")
    bad_a, bad_e = ~np.isfinite(a), ~np.isfinite(e)
    if bad_a.any() or bad_e.any():
        if not (np.array_equal(bad_a, bad_e) and np.array_equal(a[bad_a], e[bad_e], equal_nan=True)):
            raise AssertionError(f"{what}: non-finite entries differ: {int(bad_a.sum())} in actual, "
                                 f"{int(bad_e.sum())} in expected, shape {e.shape}")
        a, e = np.where(bad_a, 0.0, a), np.where(bad_e, 0.0, e)
    diff = (a - e).ravel()
    err, ref = float(np.linalg.norm(diff)), float(np.linalg.norm(e.ravel()))
    bound = rtol * ref + atol * np.sqrt(diff.size)
    peak = float(np.abs(e).max()) if e.size else 0.0
    _log({"what": what, "shape": list(e.shape), "err": err, "ref": ref, "rel": err / ref if ref else None,
          "max_rel": float(np.abs(diff).max()) / peak if peak else None, "rtol": rtol,
          "ratio": err / bound if bound else (0.0 if err == 0 else None)})
    if err <= bound:
        return
    worst = np.unravel_index(int(np.argmax(np.abs(diff))), e.shape) if diff.size else ()
    rel = f"{err / ref:.3g}" if ref else "inf"
    raise AssertionError(
        f"{what}: norm-wise error ‖a−e‖₂/‖e‖₂ = {rel} > rtol {rtol:g}"
        f"{f' (+ atol {atol:g}·√N)' if atol else ''}; ‖a−e‖₂ = {err:.4g}, bound {bound:.4g}; "
        f"worst element {tuple(int(i) for i in worst)}: {a[worst]:.7g} vs {e[worst]:.7g} "
        f"(|Δ| {abs(a[worst] - e[worst]):.3g}); max|e| = {peak:.4g}, "
        f"‖e‖₂ = {ref:.4g}, shape {e.shape}")
