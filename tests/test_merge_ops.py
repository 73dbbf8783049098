"""``edgetune.merge_ops``: the device's registry of merge recipe ops (numpy, no torch)."""

import numpy as np
import pytest

from edgetune.errors import EdgetuneError
from edgetune.merge_ops import MERGE_OPS, apply_recipe, recipe_inputs


def test_ops_fold_as_their_formulas():
    rng = np.random.default_rng(0)
    w, a, b, s = (rng.standard_normal(shape).astype(np.float32) for shape in ((4, 3), (2, 3), (4, 2), (4,)))
    trained = {"A": a, "B": b, "s": s}
    np.testing.assert_array_equal(apply_recipe({"op": "copy", "base": "w"}, w, trained), w)
    lora = {"op": "lora", "base": "w", "A": "A", "B": "B", "scale": 0.5}
    np.testing.assert_allclose(apply_recipe(lora, w, trained), w + 0.5 * b @ a, rtol=1e-6)
    rows = {"op": "scale", "base": "w", "by": "s", "axis": 0, "power": 3}
    np.testing.assert_allclose(apply_recipe(rows, w, trained), w * (s ** 3)[:, None], rtol=1e-6)
    assert recipe_inputs([lora, rows, {"op": "copy", "base": "w"}]) == {"A", "B", "s"}


def test_unknown_op_is_refused():
    assert {"copy", "lora", "scale"} <= set(MERGE_OPS)
    with pytest.raises(EdgetuneError, match="unknown op 'dora'"):
        apply_recipe({"op": "dora", "base": "w"}, np.zeros(2, np.float32), {})
