"""The completeness guard: attributions that must sum to f(x) - f(baseline) are checked on
every call, and non-finite maps are an error, never a picture."""

import keras
import numpy as np
import pytest
from keras import layers as L

from xai_keras import explain
from xai_keras.errors import NumericsError


def _normed(bias: bool = False) -> keras.Model:
    """Conv (no bias) then three LayerNorms: at a black (all-zero) image the LayerNorms see
    zero variance, where their gradient is 1/sqrt(epsilon) (1e9 after three of them)."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 2, strides=2, use_bias=bias)(inp)
    for _ in range(3):
        x = L.LayerNormalization(epsilon=1e-6)(L.Dense(8, activation="gelu")(x))
    return keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(x)))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0.1, 1, (4, 8, 8, 3)).astype("float32")


def test_integrated_gradients_stays_finite_and_says_when_completeness_fails(images):
    """LayerNorm is scale invariant: f(alpha x) is the same for every alpha > 0 and jumps at
    the black baseline, so no quadrature recovers f(x) - f(0). The maps must stay finite
    (the trapezoid rule evaluated the baseline itself and gave ~1e9) and the guard must say
    that the sum misses, with the figures."""
    with pytest.warns(RuntimeWarning, match=r"attributions sum to .* but f\(x\) - f\(baseline\)"):
        exp = explain(_normed(), images, "integrated_gradients", steps=32)
    assert np.isfinite(exp.raw).all() and np.abs(exp.raw).max() < 1e3


def test_too_few_steps_are_reported_with_the_figures(images):
    with pytest.warns(RuntimeWarning, match=r"attributions sum to .* but f\(x\) - f\(baseline\)"):
        explain(_normed(bias=True), images, "integrated_gradients", steps=1)


def test_complete_attributions_pass_silently(images, recwarn):
    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, activation="relu")(inp)
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(L.Dense(5, activation="relu")(x))))
    for method, options in (("deeplift", {}), ("integrated_gradients", {"steps": 256})):
        exp = explain(model, images, method, **options)
        fx = model(images).numpy()[np.arange(4), exp.targets]
        f0 = model(np.zeros_like(images)).numpy()[np.arange(4), exp.targets]
        np.testing.assert_allclose(exp.attributions.reshape(4, -1).sum(1), fx - f0, rtol=0.05)
    assert not [w for w in recwarn if "f(x) - f(baseline)" in str(w.message)]


def test_a_non_finite_map_is_an_error():
    inp = keras.Input((4, 4, 1))
    out = L.Dense(2)(L.Flatten()(L.Lambda(lambda t: keras.ops.sqrt(t))(inp)))
    model = keras.Model(inp, out)
    with pytest.raises(NumericsError, match="not finite"):
        explain(model, np.zeros((1, 4, 4, 1), "float32"), "saliency")
