"""RISE, LIME and KernelSHAP: each against an oracle computed in the test, and their options."""

from __future__ import annotations

import itertools
import math
import re

import keras
import numpy as np
import pytest

from xai_keras import explain
from xai_keras.errors import InputError
from xai_keras.explainers.base import runner_for
from xai_keras.explainers.perturbation import rise_masks, shapley_coalitions, superpixels

SIDE = 16


def _blocks(rows: int, cols: int):
    """A segmentation function: the image cut into rows x cols equal blocks."""

    def segment(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        r = np.arange(h)[:, None] * rows // h
        c = np.arange(w)[None, :] * cols // w
        return (r * cols + c).astype(np.int64)

    return segment


@pytest.fixture(scope="module")
def mlp() -> keras.Model:
    """Scores that depend on the segments non-additively (ReLU hidden layer), no softmax."""
    keras.utils.set_random_seed(4)
    return keras.Sequential(
        [
            keras.Input((SIDE, SIDE, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1, (2, SIDE, SIDE, 3)).astype(np.float32)


def _masked(image: np.ndarray, labels: np.ndarray, coalition) -> np.ndarray:
    """The image with the segments not in `coalition` black (0)."""
    return image * np.isin(labels, list(coalition))[..., None]


def _exact_shapley(model: keras.Model, image: np.ndarray, labels: np.ndarray, target: int):
    """Shapley values of the segments by enumerating every coalition, and f of each."""
    m = int(labels.max()) + 1
    subsets = [s for k in range(m + 1) for s in itertools.combinations(range(m), k)]
    batch = np.stack([_masked(image, labels, s) for s in subsets])
    f = dict(zip(subsets, model.predict(batch, verbose=0)[:, target].astype(np.float64)))
    phi = np.zeros(m)
    for s, value in f.items():
        for i in set(range(m)) - set(s):
            weight = math.factorial(len(s)) * math.factorial(m - len(s) - 1) / math.factorial(m)
            phi[i] += weight * (f[tuple(sorted((*s, i)))] - value)
    return phi, f


# -- KernelSHAP -----------------------------------------------------------------------------------
def test_kernelshap_equals_exact_shapley_values_and_is_efficient(mlp, images):
    """8 segments, all 256 coalitions: the constrained kernel regression gives the Shapley
    values exactly, which sum to f(x) - f(baseline) (efficiency)."""
    segment = _blocks(2, 4)
    exp = explain(
        mlp,
        images,
        "kernelshap",
        segmentation=segment,
        samples=256,
        baseline="black",
        batch_size=3,
    )
    for i, image in enumerate(images):
        labels = segment(image)
        phi, f = _exact_shapley(mlp, image, labels, int(exp.targets[i]))
        total = f[tuple(range(8))] - f[()]
        singles = sum(f[(j,)] - f[()] for j in range(8))
        assert abs(total - singles) > 0.05 * abs(total)  # not additive: the test can tell
        got = np.array([exp.raw[i][labels == j].mean() for j in range(8)])
        np.testing.assert_allclose(got, phi, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got.sum(), total, rtol=1e-4, atol=1e-5)
        assert all(np.ptp(exp.raw[i][labels == j]) == 0 for j in range(8))


def test_kernelshap_sampled_is_efficient_and_close(mlp, images):
    """With fewer samples than coalitions the values still sum to f(x) - f(baseline) exactly
    and stay close to the exact ones."""
    segment = _blocks(2, 4)
    exp = explain(mlp, images[:1], "kernelshap", segmentation=segment, samples=120)
    labels = segment(images[0])
    got = np.array([exp.raw[0][labels == j].mean() for j in range(8)])
    runner = runner_for(mlp)
    x = images[:1]
    fill = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)  # the "mean" baseline
    f = runner.forward_fn(np.concatenate([x, fill]).astype(np.float32)).numpy()[:, exp.targets[0]]
    np.testing.assert_allclose(got.sum(), f[0] - f[1], rtol=1e-4, atol=1e-5)


def test_shapley_coalitions_enumerate_or_sample_from_the_kernel():
    rng = np.random.default_rng(0)
    z, w = shapley_coalitions(8, 256, rng)
    assert z.shape == (256, 8) and (z[0] == 1).all() and (z[1] == 0).all()
    assert len({tuple(r) for r in z}) == 256 and (w[:2] == 0).all()
    z, w = shapley_coalitions(12, 1000, rng)
    sizes = z[2:].sum(axis=1)
    assert z.shape == (1000, 12) and sizes.min() >= 1 and sizes.max() <= 11
    assert (w[2:] == 1).all()
    # paired: each drawn coalition comes with its complement
    half = (998 + 1) // 2
    np.testing.assert_array_equal(z[2 : 2 + 998 - half], 1 - z[2 + half :])


# -- LIME -----------------------------------------------------------------------------------------
def _additive(coef: np.ndarray, labels: np.ndarray) -> keras.Model:
    """A linear model whose score is sum_s coef[s] * (segment s kept), on a ones image."""
    inputs = keras.Input((SIDE, SIDE, 1))
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    sizes = np.bincount(labels.ravel())
    dense.set_weights([(coef / sizes)[labels].reshape(-1, 1), np.array([0.5])])
    return model


def test_lime_recovers_an_additive_model():
    """On a score additive in the segments, LIME's coefficients are the segment effects (up to
    the ridge's shrinkage) and KernelSHAP's are exactly them."""
    segment = _blocks(3, 3)
    labels = segment(np.zeros((SIDE, SIDE, 1)))
    coef = np.random.default_rng(2).normal(size=9)
    model = _additive(coef, labels)
    x = np.ones((1, SIDE, SIDE, 1), np.float32)
    lime = explain(model, x, "lime", segmentation=segment, baseline="black", samples=1000)
    shap = explain(model, x, "kernelshap", segmentation=segment, baseline="black", samples=100)
    for exp, rtol in ((lime, 0.03), (shap, 1e-4)):
        got = np.array([exp.raw[0][labels == j].mean() for j in range(9)])
        np.testing.assert_allclose(got, coef, rtol=rtol, atol=0.03 if rtol > 1e-3 else 1e-5)


def test_lime_equals_the_lime_package_on_an_additive_model():
    lime_image = pytest.importorskip("lime.lime_image")
    segment = _blocks(3, 3)
    labels = segment(np.zeros((SIDE, SIDE, 1)))
    coef = np.random.default_rng(3).normal(size=9)
    model = _additive(coef, labels)
    x = np.ones((1, SIDE, SIDE, 1), np.float32)
    ours = explain(model, x, "lime", segmentation=segment, baseline="black", samples=1000)
    theirs = lime_image.LimeImageExplainer(random_state=0).explain_instance(
        x[0, ..., 0].astype(np.float64),
        lambda b: np.asarray(model(b[..., :1].astype(np.float32))),  # lime passes RGB copies
        labels=(0,),
        top_labels=None,
        hide_color=0,
        num_samples=1000,
        batch_size=250,
        segmentation_fn=lambda image: segment(image),
    )
    lime_coef = np.zeros(9)
    for j, value in theirs.local_exp[0]:
        lime_coef[j] = value
    got = np.array([ours.raw[0][labels == j].mean() for j in range(9)])
    np.testing.assert_allclose(got, lime_coef, rtol=0.05, atol=0.03)


def test_superpixels_are_labelled_from_zero_and_follow_the_requested_count(images):
    for kind in ("slic", "quickshift"):
        labels = superpixels(images[0], 8, kind)
        assert labels.shape == (SIDE, SIDE) and labels.dtype == np.int32
        assert labels.min() == 0 and set(np.unique(labels)) == set(range(labels.max() + 1))
    assert 4 <= superpixels(images[0] * 255 - 100, 8).max() + 1 <= 16  # any value range
    with pytest.raises(InputError, match=r"must return integer labels of shape \(16, 16\)"):
        superpixels(images[0], segmentation=lambda image: np.zeros((4, 4), int))


# -- RISE -----------------------------------------------------------------------------------------
def _linear(weights: np.ndarray, bias: float) -> keras.Model:
    inputs = keras.Input((*weights.shape, 1))
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights.reshape(-1, 1), np.array([bias])])
    return model


def test_rise_is_the_papers_estimate_with_its_masks():
    """For a linear model f(x) = w.x + b and the black (0) baseline, f(x * m) = w.(x m) + b,
    so RISE = sum_i (w.(x m_i) + b) m_i / (N p): computed here from the masks themselves."""
    rng = np.random.default_rng(0)
    w, x = rng.normal(size=(12, 12)), rng.uniform(0, 1, (1, 12, 12, 1)).astype(np.float32)
    model = _linear(w, 0.3)
    options = {"masks": 300, "cells": 3, "p_keep": 0.4, "seed": 5}
    exp = explain(model, x, "rise", batch_size=7, **options)  # 300 masks: a padded last chunk
    m = rise_masks((12, 12), **options).reshape(300, -1).astype(np.float64)
    scores = m @ (w * x[0, ..., 0]).ravel() + 0.3
    expected = (scores @ m / (300 * 0.4)).reshape(12, 12)
    np.testing.assert_allclose(exp.raw[0], expected, rtol=1e-4, atol=1e-5)
    assert 0.0 <= m.min() and m.max() <= 1.0 and abs(m.mean() - 0.4) < 0.05


def test_rise_on_a_linear_model_is_b_plus_p_away_from_the_weights():
    """f(x) = b + mean of x over a 4x4 block R, x = 1. A pixel q more than three cells from R
    has a mask independent of R's, so E[f(x m) | q kept] = b + p * 1: RISE = b + p there;
    inside R it is larger (the pixel's own mask counts) and the peak lies in R."""
    side, p, b = 32, 0.3, 0.2
    w = np.zeros((side, side))
    w[4:8, 4:8] = 1 / 16
    exp = explain(_linear(w, b), np.ones((side, side, 1)), "rise", masks=4000, cells=8, p_keep=p)
    yy, xx = np.mgrid[:side, :side]
    far = np.maximum(np.maximum(4 - yy, yy - 7), np.maximum(4 - xx, xx - 7)) > 12
    rise = exp.raw[0]
    assert abs(rise[far].mean() - (b + p)) < 0.02 and rise[far].std() < 0.02
    assert rise[4:8, 4:8].mean() > b + p + 0.1
    assert 4 <= np.argmax(rise) // side < 8 and 4 <= np.argmax(rise) % side < 8


def test_rise_gives_every_image_the_same_masks(mlp, images):
    both = explain(mlp, images, "rise", masks=50, batch_size=2)
    second = explain(mlp, images[1], "rise", masks=50, batch_size=5)
    np.testing.assert_allclose(second.raw[0], both.raw[1], rtol=1e-5, atol=1e-7)


# -- compiled once --------------------------------------------------------------------------------
def test_masked_kernels_trace_once(mlp, images):
    runner = runner_for(mlp)
    calls = [("rise", {"masks": 20}), ("lime", {"samples": 20}), ("kernelshap", {"samples": 20})]
    for method, options in calls:
        explain(mlp, images, method, batch_size=4, **options)
    counts = {
        k: runner._kernels[k].experimental_get_tracing_count() for k in ("rise", "superpixels")
    }
    for method, options in calls:
        explain(mlp, images[::-1], method, batch_size=4, **options)
    assert counts == {
        k: runner._kernels[k].experimental_get_tracing_count() for k in ("rise", "superpixels")
    }


# -- options --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "options", "rule"),
    [
        ("rise", {"masks": 0}, "an int >= 1"),
        ("rise", {"cells": 2.0}, "an int >= 1"),
        ("rise", {"p_keep": 1.0}, r"a finite number in \(0, 1\)"),
        ("rise", {"p_keep": 0}, r"a finite number in \(0, 1\)"),
        ("rise", {"seed": -1}, r"an int in \[0, 2147483647\]"),
        ("rise", {"baseline": "white"}, "one of 'black', 'mean', 'blur'.*"),
        ("lime", {"segments": 0}, "an int >= 1"),
        ("lime", {"samples": 1}, "an int >= 2"),
        ("lime", {"segmentation": "watershed"}, "one of 'slic', 'quickshift'"),
        ("kernelshap", {"samples": "many"}, "an int >= 2"),
        ("kernelshap", {"baseline": "grey"}, "one of 'black', 'mean', 'blur'.*"),
        ("kernelshap", {"seed": 2**40}, r"an int in \[0, 2147483647\]"),
    ],
)
def test_bad_options_are_refused(mlp, images, method, options, rule):
    ((name, value),) = options.items()
    received = re.escape(f"{name}={value!r}")
    pattern = rf"^The `{name}` option of method '{method}' must be {rule}\. Received: {received}\.$"
    with pytest.raises(InputError, match=pattern):
        explain(mlp, images, method=method, **options)
