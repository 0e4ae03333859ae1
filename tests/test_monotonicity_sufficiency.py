"""Monotonicity (Arya et al.), Monotonicity Correlation (Nguyen and Martinez) and Sufficiency
(Dasgupta et al.): known answers on a linear model whose per-pixel contributions are set by
hand, so a wrong order, a removal instead of an insertion, or a wrong neighbourhood gives
another number."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from xai_keras.errors import InputError
from xai_keras.evaluate import (
    get_metric,
    metrics,
    monotonicity,
    monotonicity_correlation,
    sufficiency,
)


def _linear(weights: np.ndarray) -> keras.Model:
    """softmax(W . x) on (2, 2, 1) images: logit k is sum_p W[p, k] x_p, so with a black (0)
    baseline each pixel's contribution to the logit is W[p, k] x_p exactly."""
    inp = keras.Input((2, 2, 1))
    out = keras.layers.Dense(weights.shape[1], activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    model.layers[-1].set_weights([weights.astype(np.float32), np.zeros(weights.shape[1], "f4")])
    return model


# Contributions (W x with x = 1) of the four pixels to logit 0: one negative, three positive.
C = np.array([-1.0, 0.5, 3.0, 2.0])
X = np.ones((1, 2, 2, 1), np.float32)
KW = {"targets": 0, "baseline": "black", "measure": "logit"}


@pytest.fixture(scope="module")
def signed():
    return _linear(np.stack([C, -C], axis=1))


def test_the_family_registers_the_three_as_opt_in_faithfulness_metrics():
    for name, direction in (("monotonicity", "higher"), ("monotonicity_correlation", "higher"),
                            ("sufficiency", "higher")):  # fmt: skip
        m = get_metric(name)
        assert m.family == "faithfulness" and not m.default and m.direction == direction
        assert name in metrics(family="faithfulness", default=False)


def test_monotonicity_by_hand(signed):
    """Inserting least relevant first: the true contributions give -1, -0.5, 1.5, 4.5 (never
    falling); the reversed map gives 3, 5, 5.5, 4.5 (falls at the last step)."""
    truth = C.reshape(1, 2, 2)
    assert monotonicity(signed, X, truth, features_in_step=1, **KW).tolist() == [1.0]
    assert monotonicity(signed, X, -truth, features_in_step=1, **KW).tolist() == [0.0]
    # Two pixels a step: (-1 + 0.5), then + 2 + 3: rises; reversed: 5, then 4.5: falls.
    assert monotonicity(signed, X, truth, features_in_step=2, **KW).tolist() == [1.0]
    assert monotonicity(signed, X, -truth, features_in_step=2, **KW).tolist() == [0.0]


def test_monotonicity_inserts_rather_than_removes():
    """With non-negative contributions every insertion raises the logit, whatever the order:
    every map passes (removing pixels from the image would make every curve fall)."""
    model = _linear(np.stack([np.abs(C), -np.abs(C)], axis=1))
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5, 2, 2))
    x = np.repeat(X, 5, axis=0)
    assert monotonicity(model, x, maps, features_in_step=1, **KW).tolist() == [1.0] * 5


def test_monotonicity_correlation_ranks_the_true_contributions_first():
    """A black baseline removes a pixel's contribution exactly: the effect of pixel p is
    C_p^2, so with non-negative contributions the true map has rho = 1, the reversed -1."""
    c = np.array([0.5, 3.0, 1.0, 2.0])
    model = _linear(np.stack([c, -c], axis=1))
    truth = c.reshape(1, 2, 2)
    kw = {**KW, "features_in_step": 1}
    assert monotonicity_correlation(model, X, truth, **kw) == pytest.approx([1.0])
    assert monotonicity_correlation(model, X, -truth, **kw) == pytest.approx([-1.0])
    # A fixed baseline needs one draw: more samples change nothing.
    assert monotonicity_correlation(model, X, truth, samples=5, **kw) == pytest.approx([1.0])


def test_monotonicity_correlation_with_uniform_noise_does_not_depend_on_the_batch_size(signed):
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (3, 2, 2, 1)).astype(np.float32)
    maps = rng.normal(size=(3, 2, 2))
    kw = {"targets": 0, "features_in_step": 1, "samples": 4, "value_range": (0, 1)}
    small = monotonicity_correlation(signed, x, maps, batch_size=3, **kw)
    large = monotonicity_correlation(signed, x, maps, batch_size=32, **kw)
    np.testing.assert_array_equal(small, large)
    assert np.all(np.abs(small) <= 1)


def test_sufficiency_by_hand():
    """Images 0, 1 and 3 are predicted class 0, image 2 class 1 (negative pixels). Maps 0, 1
    and 2 are equal, map 3 is the farthest (normalised distance 1)."""
    model = _linear(np.stack([np.ones(4), -np.ones(4)], axis=1))
    x = np.ones((4, 2, 2, 1), np.float32)
    x[2] = -1
    a, b = np.eye(2), np.ones((2, 2))
    maps = np.stack([a, a, a, b])
    got = sufficiency(model, x, maps)
    # 0: neighbours 1 (same) and 2 (other); 1 likewise; 2: 0 and 1, both other; 3: none.
    np.testing.assert_allclose(got[:3], [0.5, 0.5, 0.0])
    assert np.isnan(got[3])
    # Everything is near at threshold 1: 0, 1 and 3 each see two of class 0 and image 2.
    np.testing.assert_allclose(sufficiency(model, x, maps, threshold=1.0), [2 / 3, 2 / 3, 0, 2 / 3])
    # Maps that follow the prediction are sufficient wherever they have a neighbour.
    got = sufficiency(model, x, np.stack([a, a, b, a]))
    np.testing.assert_allclose(got[[0, 1, 3]], [1.0] * 3)
    assert np.isnan(got[2])  # its map is alone


def test_errors_name_the_argument(signed):
    with pytest.raises(InputError, match="`threshold`"):
        sufficiency(signed, X, C.reshape(1, 2, 2), threshold=2.0)
    with pytest.raises(InputError, match="`samples`"):
        monotonicity_correlation(signed, X, C.reshape(1, 2, 2), samples=0)
    with pytest.raises(InputError, match="`features_in_step`"):
        monotonicity(signed, X, C.reshape(1, 2, 2), features_in_step=5)
    with pytest.raises(InputError, match="`maps` argument must have shape"):
        monotonicity(signed, X, np.zeros((1, 3, 3)))
