"""The one owner of "these two fp32 computations agree": a norm-wise relative error.

Every parity check in the suite (ORT against torch autograd, static against adaptive graphs,
merged against unmerged, ours against transformers/peft, numpy AdamW against torch's, the
merged inference graph against the training engine) compares two evaluations of the same
formula in float32 that differ only in the order of their floating-point operations: other
kernels, other blocking, FMA or not, another thread count, another vector width (SSE, AVX2,
AVX-512, NEON). An element-wise ``rtol`` is the wrong statement about that: an element that
is small because its terms cancel carries an absolute error set by the *terms*, so its
relative error is unbounded, and which element that is depends on the CPU. Numerical analysis
states such bounds for the whole tensor (Higham, *Accuracy and Stability of Numerical
Algorithms*, §3.1 and §3.5):

    ‖a − e‖₂ ≤ rtol · ‖e‖₂ + atol · √N          (N elements; atol an RMS floor, 0 by default)

The bound, for fp32
-------------------
* Unit roundoff u = 2⁻²⁴ ≈ 6.0e-8: every operation is exact up to a factor (1 + δ), |δ| ≤ u.
* A dot product or sum of length n satisfies |fl(s) − s| ≤ γₙ Σ|xᵢyᵢ|, γₙ = nu/(1 − nu), in
  *any* summation order, so two orders differ by at most 2γₙ Σ|xᵢyᵢ|. Rounding errors behave
  like independent ±u (Higham & Mary, SIAM J. Sci. Comput. 2019), giving ≈ √n·u typically.
  The longest reductions in the micro models are n ≤ 256 (ViT's MLP width; a patch is
  3·8·8 = 192; weight gradients reduce over batch × tokens ≤ 60): √n·u ≤ 16u ≈ 1e-6 per
  reduction, norm-wise (worst case 2γ₂₅₆ ≈ 3e-5, which needs every rounding aligned).
* A gradient chains through the forward and backward of two blocks and the head: ≈ 20
  reductions and the normalisations between them (layernorm divides by a standard
  deviation, softmax and cross-entropy by a sum of exponentials; their norm-wise condition
  numbers are O(1) on these well-scaled inputs). First-order errors add, independent ones in
  quadrature: √20 · 1e-6 ≈ 5e-6 expected, and ``RTOL = 2e-5`` keeps a further ≈ 4× for the
  condition numbers of the normalisations and for the mixed orders of ONNX Runtime's graph
  rewrites (fused layernorm, softmax-cross-entropy, gelu approximations left exact).
* Propulsion, y = F(x) ⊙ z^k with k = 15: a relative perturbation δ of z (its rounding, or a
  pow computed as exp(k·log z) against repeated multiplication) is a perturbation k·δ of z^k,
  since d(z^k)/z^k = k·dz/z; and ∂L/∂z = k·z^(k−1)·Σ g ⊙ F repeats that amplification in the
  backward. Every tensor of a Propulsion model passes through z^k at each wrapped layer, so
  its bound is ``rtol · k`` (:func:`propulsion_rtol`).

The measured errors are well inside that (see the table in :data:`MEASURED`), and the bound
still rejects what a real bug produces: one element off by 1 % of the tensor's norm, a sign
flip of a single small element, a transposed gradient, a missing factor (tests/test_numerics.py).

Why not also an element-wise check scaled to the tensor, max|a − e| ≤ c·rtol·max|e|? The
norm-wise bound already implies it with c = √N, since max|a − e| ≤ ‖a − e‖₂ and
‖e‖₂ ≤ √N·max|e|. A smaller c re-introduces a per-element statement, which is exactly what
depends on the CPU (the failing Propulsion element had 2.0e-6 of max|e| and 4.5e-6 absolute:
a norm-wise check sees it at its true weight). Localised bugs that matter are larger than
rtol·‖e‖₂ and are caught; the tests show it.

Set ``EDGETUNE_NUMERICS_LOG=path`` to append one JSON line per comparison (``what``, the
norm-wise error, the ratio to its bound): how the table of measured errors was made.
"""

from __future__ import annotations

import json
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

    ``atol`` is an RMS floor per element, for a tensor whose expected value is zero or
    nearly so by cancellation; 0 by default (none of the suite's tensors needs one).
    Non-finite entries must be the same in both and in the same places.
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
