"""The metric families beyond deletion, insertion and ROAD: known answers on hand-built models
and maps (where a wrong implementation gives another number), invariances, and the registry.

Oracle comparisons with Quantus and Captum on PyTorch twins: `scripts/compare_metrics.py`
(marked `torch` below; it needs `bash scripts/torch_env.sh` first)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from xai_keras.errors import InputError
from xai_keras.evaluate import (
    avg_sensitivity,
    completeness,
    complexity,
    deletion,
    effective_complexity,
    energy_pointing,
    faithfulness_correlation,
    faithfulness_estimate,
    get_metric,
    infidelity,
    input_invariance,
    irof,
    local_lipschitz,
    localisation_auc,
    max_sensitivity,
    metrics,
    pixel_flipping,
    random_logit,
    region_perturbation,
    relative_input_stability,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    smooth_mprt,
    sparseness,
    top_k_intersection,
)
from xai_keras.evaluate.faithfulness import region_order
from xai_keras.explainers.session import Session

H = 8


def _linear(classes=4, seed=5, weights=None):
    """softmax(W . x): the logits are linear, so removing pixels changes them by the sum of
    gradient x input over those pixels."""
    inp = keras.Input((H, H, 3))
    out = keras.layers.Dense(classes, activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    if weights is None:
        weights = np.random.default_rng(seed).normal(size=(H * H * 3, classes))
    model.layers[-1].set_weights([weights.astype(np.float32), np.zeros(classes, np.float32)])
    return model


def _w(model):
    return model.layers[-1].kernel.numpy().reshape(H, H, 3, -1)


@pytest.fixture(scope="module")
def linear():
    return _linear()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).normal(size=(6, H, H, 3)).astype(np.float32)


T = np.array([0, 1, 2, 3, 0, 1])


def _gxi(model, x):
    w = _w(model)
    return np.stack([(w[..., t] * xi).sum(-1) for t, xi in zip(T, x)])


def _grad(model):
    w = _w(model)
    return np.stack([w[..., t].sum(-1) for t in T])


def test_registry_has_the_six_families_and_the_new_metrics_are_opt_in():
    families = {get_metric(n).family for n in metrics()}
    assert {"faithfulness", "robustness", "localisation", "complexity", "randomisation",
            "axiomatic"} <= families  # fmt: skip
    new = metrics(default=False)
    assert len(new) >= 14
    for family in ("faithfulness", "robustness", "localisation", "complexity",
                   "randomisation", "axiomatic"):  # fmt: skip
        assert any(get_metric(n).family == family for n in new), family
    for name in new:
        m = get_metric(name)
        assert m.reference and m.description and "\n" not in m.description
        assert m.function.__doc__ and "Reference:" in m.function.__doc__


def test_gradient_x_input_is_exactly_faithful_on_a_linear_model(linear, x):
    gxi = _gxi(linear, x)
    np.testing.assert_allclose(faithfulness_correlation(linear, x, gxi, T, runs=20), 1, atol=1e-5)
    np.testing.assert_allclose(faithfulness_estimate(linear, x, gxi, T), 1, atol=1e-5)
    # A map of another class, or a shuffled one, is not.
    wrong = faithfulness_correlation(linear, x, gxi[::-1], T, runs=20)
    assert np.all(wrong < 0.9)
    rng = np.random.default_rng(0)
    shuffled = np.stack([rng.permutation(m.ravel()).reshape(H, H) for m in gxi])
    assert np.all(faithfulness_estimate(linear, x, shuffled, T) < 0.9)


def test_faithfulness_correlation_does_not_depend_on_the_batch_size(linear, x):
    gxi = _gxi(linear, x) + np.random.default_rng(3).normal(size=(6, H, H))
    a = faithfulness_correlation(linear, x, gxi, T, runs=10, batch_size=7)
    b = faithfulness_correlation(Session(linear, batch_size=32), x, gxi, T, runs=10)
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert np.all(a < 0.999)  # the noise matters: the values are not trivially 1


def test_infidelity_of_the_gradient_is_zero_on_a_linear_model(linear, x):
    np.testing.assert_allclose(infidelity(linear, x, _grad(linear), T, normalize=False), 0,
                               atol=1e-8)  # fmt: skip
    # Scaled gradients: 0 only after the optimal rescaling.
    assert np.all(infidelity(linear, x, 3 * _grad(linear), T, normalize=False) > 1e-3)
    np.testing.assert_allclose(infidelity(linear, x, 3 * _grad(linear), T), 0, atol=1e-8)
    assert np.all(infidelity(linear, x, _gxi(linear, x), T) > 1e-3)


def test_pixel_flipping_is_deletion_with_black_and_equal_steps(linear, x):
    maps = np.abs(_gxi(linear, x))
    pf = pixel_flipping(linear, x, maps, T, features_in_step=4)
    d = deletion(linear, x, maps, T, steps=16, baseline="black")
    np.testing.assert_allclose(pf.scores, d.scores, atol=1e-6)
    np.testing.assert_allclose(pf.auc, d.auc, atol=1e-6)
    probs = linear.predict(x, verbose=0)
    np.testing.assert_allclose(pf.scores[:, 0], probs[np.arange(6), T], atol=1e-6)


def test_region_order_ranks_grid_cells_by_their_sum():
    m = np.zeros((1, 6, 6))
    m[0, 4:6, 4:6] = 5.0  # the best cell: bottom right
    m[0, 0, 0] = 3.0
    m[0, 2, 5] = -1.0  # cell (1, 2) ranks last
    order, count = region_order(m, 2)
    assert count[0] == 9
    assert (order[0, 4:6, 4:6] == 0).all() and (order[0, 0:2, 0:2] == 1).all()
    assert (order[0, 2:4, 4:6] == 8).all()
    # Cells cut by the border: a 5 x 5 image holds 3 x 3 cells of side 2.
    order, count = region_order(np.random.default_rng(0).random((1, 5, 5)), 2)
    assert count[0] == 9 and sorted(np.unique(order)) == list(range(9))


def test_region_perturbation_aopc_prefers_the_faithful_map(linear, x):
    gxi = _gxi(linear, x)
    good = region_perturbation(linear, x, gxi, T, patch_size=2, regions=8, baseline="black")
    bad = region_perturbation(linear, x, -gxi, T, patch_size=2, regions=8, baseline="black")
    assert np.all(good.aopc > bad.aopc)
    np.testing.assert_allclose(good.scores[:, 0], good.scores[:, 0])
    # AOPC by hand from the curve.
    np.testing.assert_allclose(good.aopc, (good.scores[:, :1] - good.scores).mean(axis=1))


def test_irof_with_given_segments_by_hand(linear, x):
    labels = np.broadcast_to((np.arange(H)[:, None] // 4) * 2 + np.arange(H)[None] // 4,
                             (6, H, H)).copy()  # fmt: skip   # four 4 x 4 quadrants
    gxi = _gxi(linear, x)
    curves = irof(linear, x, gxi, T, segments=labels, baseline="black")
    assert curves.scores.shape == (6, 5)
    np.testing.assert_allclose(curves.fractions[0], [0, 0.25, 0.5, 0.75, 1])
    # By hand for image 0: remove quadrants by decreasing mean relevance.
    means = [gxi[0][labels[0] == q].mean() for q in range(4)]
    img = x[0].copy()
    expected = [linear.predict(img[None], verbose=0)[0, T[0]]]
    for q in np.argsort(means)[::-1]:
        img[labels[0] == q] = 0
        expected.append(linear.predict(img[None], verbose=0)[0, T[0]])
    np.testing.assert_allclose(curves.scores[0], expected, atol=1e-6)
    rel = np.array(expected) / expected[0]
    area = np.trapezoid(rel, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curves.aoc_normalised[0], 1 - area)


def test_complexity_known_answers():
    n = H * H
    one = np.zeros((1, H, H))
    one[0, 3, 3] = 2.0
    flat = np.ones((1, H, H))
    np.testing.assert_allclose(sparseness(one), 1 - 1 / n)
    np.testing.assert_allclose(sparseness(flat), 0, atol=1e-12)
    np.testing.assert_allclose(complexity(one), 0, atol=1e-12)
    np.testing.assert_allclose(complexity(flat), np.log(n))
    np.testing.assert_allclose(effective_complexity(one), 1 / n)
    np.testing.assert_allclose(effective_complexity(flat), 1.0)
    # Two equal pixels: Gini (by the formula) and entropy ln 2; the sign does not matter.
    two = np.zeros((1, H, H))
    two[0, 0, 0], two[0, 1, 1] = 1.0, -1.0
    np.testing.assert_allclose(sparseness(two), 1 - 2 / n)
    np.testing.assert_allclose(complexity(two), np.log(2))
    # Scale invariant.
    m = np.random.default_rng(0).random((3, H, H))
    np.testing.assert_allclose(sparseness(m), sparseness(7 * m))
    np.testing.assert_allclose(complexity(m), complexity(7 * m))


def test_localisation_known_answers():
    masks = np.zeros((1, H, H), bool)
    masks[0, :2, :] = True  # 16 pixels
    perfect = masks.astype(float) + 0.01 * np.random.default_rng(0).random((1, H, H))
    inverse = 1 - perfect
    assert relevance_rank_accuracy(perfect, masks)[0] == 1.0
    assert relevance_rank_accuracy(inverse, masks)[0] == 0.0
    assert top_k_intersection(perfect, masks, k=16)[0] == 1.0
    assert top_k_intersection(perfect, masks, k=32)[0] == 0.5
    assert localisation_auc(perfect, masks)[0] == 1.0
    assert localisation_auc(inverse, masks)[0] == 0.0
    assert localisation_auc(np.ones((1, H, H)), masks)[0] == 0.5
    m = np.random.default_rng(1).random((4, H, H))
    k = np.random.default_rng(2).random((4, H, H)) > 0.5
    np.testing.assert_allclose(relevance_mass_accuracy(m, k), energy_pointing(m, k))
    signed = m - 0.5
    pos = np.maximum(signed, 0)
    np.testing.assert_allclose(
        relevance_mass_accuracy(signed, k), (pos * k).sum((1, 2)) / pos.sum((1, 2))
    )
    with pytest.raises(InputError, match=r"The `k` argument must be an int in \[1, 64\]"):
        top_k_intersection(m, k, k=65)


def test_random_logit_on_classes_that_read_disjoint_pixels():
    w = np.zeros((H, H, 3, 2))
    w[:4, ..., 0] = 1.0  # class 0 reads the top half, class 1 the bottom half
    w[4:, ..., 1] = 1.0
    disjoint = _linear(2, weights=w.reshape(-1, 2))
    shared = _linear(2, weights=np.stack([w[..., 0], 2 * w[..., 0]], -1).reshape(-1, 2))
    x = np.random.default_rng(0).normal(size=(3, H, H, 3)).astype(np.float32)
    same = random_logit(shared, x, "saliency", targets=0, similarity="spearman")
    apart = random_logit(disjoint, x, "saliency", targets=0, similarity="spearman")
    np.testing.assert_allclose(same, 1.0)  # identical maps
    assert np.all(apart < -0.5)  # top half against bottom half
    assert np.all(random_logit(disjoint, x, "saliency", targets=0) < 0.5)  # SSIM


def test_robustness_of_a_linear_models_gradient_is_perfect(linear, x):
    # The gradient of a linear model is the same everywhere: its map cannot move.
    for metric in (max_sensitivity, avg_sensitivity, local_lipschitz, relative_input_stability):
        np.testing.assert_allclose(metric(linear, x[:3], "saliency", samples=3), 0, atol=1e-6)


def test_robustness_is_positive_and_ordered_on_a_nonlinear_model(gap_model, images32):
    mx = max_sensitivity(gap_model, images32[:3], "saliency", samples=4)
    av = avg_sensitivity(gap_model, images32[:3], "saliency", samples=4)
    assert np.all(mx > 0) and np.all(mx >= av - 1e-12)
    # Larger noise moves the map more.
    big = avg_sensitivity(gap_model, images32[:3], "saliency", samples=4, radius=0.3)
    assert big.mean() > av.mean()
    ll = local_lipschitz(gap_model, images32[:3], "saliency", samples=3)
    assert np.all(ll > 0)
    ris = relative_input_stability(gap_model, images32[:3], "saliency", samples=3)
    assert np.all((ris > 0) | np.isnan(ris))


def test_completeness_of_integrated_gradients(linear, x):
    gap = completeness(linear, x, "integrated_gradients", steps=4)
    np.testing.assert_allclose(gap, 0, atol=1e-4)  # exact for a linear model
    assert np.all(completeness(linear, x, "saliency") > 0.01)
    gap = completeness(linear, x, "random")  # a random map is not complete (or NaN)
    assert np.all(np.isnan(gap) | (gap >= 0))


def test_input_invariance(linear, x):
    np.testing.assert_allclose(input_invariance(linear, x, "saliency", shift=1.0), 0, atol=1e-5)
    # Integrated gradients from a fixed black baseline sees x + c - 0: not invariant.
    assert np.all(input_invariance(linear, x, "integrated_gradients", shift=1.0, steps=4) > 0.05)


def test_smooth_mprt_on_a_linear_model(linear, x):
    result = smooth_mprt(linear, x[:2], "saliency", samples=2)
    assert result.spearman.shape == (1, 2)
    assert np.all(np.abs(result.spearman[-1]) < 0.9)  # random weights: another map
    assert get_metric("smooth_mprt").values(result).shape == (2,)


def test_evaluate_model_computes_opt_in_metrics_by_name(linear, x):
    from xai_keras.evaluate import evaluate_model

    extra = ["sparseness", "faithfulness_correlation", "max_sensitivity"]
    rows = evaluate_model(linear, x, ["saliency"], n=6, n_sanity=2, metrics=extra)
    row = rows["methods"]["saliency"]
    assert {"sparseness", "faithfulness_correlation", "max_sensitivity"} <= set(row)
    assert "irof" not in row
    with pytest.raises(InputError, match="Unknown metric 'nope'"):
        evaluate_model(linear, x, ["saliency"], n=2, n_sanity=0, metrics=["nope"])


def test_evaluate_model_scores_and_keeps_maps_of_the_method_options(gap_model, images32):
    """`method_options` reach the scored maps and the metrics that explain again (the
    sensitivity of 2-sample SmoothGrad differs from the 16-sample default's)."""
    from xai_keras import explain
    from xai_keras.evaluate import evaluate_model

    kw = {"n": 5, "n_sanity": 2, "metrics": ["max_sensitivity"], "keep_explanations": True,
          "batch_size": 8}  # fmt: skip
    options = {"smoothgrad": {"samples": 2}}
    cheap = evaluate_model(gap_model, images32, ["smoothgrad"], method_options=options, **kw)
    default = evaluate_model(gap_model, images32, ["smoothgrad"], **kw)
    own = explain(gap_model, images32, "smoothgrad", samples=2, batch_size=8)
    np.testing.assert_allclose(cheap.explanations["smoothgrad"].maps, own.maps, atol=1e-5)
    assert not np.allclose(default.explanations["smoothgrad"].maps, own.maps, atol=1e-3)
    sens = "max_sensitivity"
    assert cheap.methods["smoothgrad"][sens] != default.methods["smoothgrad"][sens]
    assert evaluate_model(gap_model, images32, ["random"], n=2, n_sanity=0).explanations == {}


def test_errors_name_the_argument(linear, x):
    gxi = _gxi(linear, x)
    with pytest.raises(InputError, match="`measure`"):
        faithfulness_correlation(linear, x, gxi, T, measure="odds")
    with pytest.raises(InputError, match="`runs`"):
        faithfulness_correlation(linear, x, gxi, T, runs=1)
    with pytest.raises(InputError, match="`segments`"):
        irof(linear, x, gxi, T, segments=np.zeros((2, 2), int))
    with pytest.raises(InputError, match="`maps` argument must have shape"):
        infidelity(linear, x, gxi[:2], T)


@pytest.mark.torch
def test_against_quantus_and_captum():
    """The oracle comparison (needs `bash scripts/torch_env.sh`): see its docstring."""
    from scripts.common import torch_python

    root = Path(__file__).resolve().parents[1]
    if not Path(torch_python()).exists():
        pytest.skip("no .torchvenv: run `bash scripts/torch_env.sh` first")
    run = subprocess.run([sys.executable, "-m", "scripts.compare_metrics"], cwd=root,
                         capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_model_forms_reach_the_new_metrics(linear, x):
    """One output of a two-output model, through a Session, gives the single model's values."""
    inp = keras.Input((H, H, 3))
    flat = keras.layers.Flatten()(inp)
    other = keras.layers.Dense(3, activation="softmax", name="other")(flat)
    main = keras.layers.Dense(4, activation="softmax", name="main")(flat)
    two = keras.Model(inp, [other, main])
    two.get_layer("main").set_weights(linear.layers[-1].get_weights())
    session = Session(two, output="main", batch_size=5)
    gxi = _gxi(linear, x)
    np.testing.assert_allclose(
        faithfulness_correlation(session, x, gxi, T, runs=10),
        faithfulness_correlation(linear, x, gxi, T, runs=10), atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(irof(session, x, gxi, T, segments=4).scores,
                               irof(linear, x, gxi, T, segments=4).scores, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(max_sensitivity(session, x[:2], "saliency", samples=2), 0, atol=1e-6)


def test_the_perturbation_kernel_traces_once_per_shape(linear, x):
    session = Session(linear, batch_size=4)
    gxi = _gxi(linear, x)
    faithfulness_estimate(session, x, gxi, T, measure="probability")
    kernel = session.runner.kernel("metric_probability", None)
    before = kernel.experimental_get_tracing_count()
    faithfulness_estimate(session, x[:5], gxi[:5], T[:5], measure="probability")  # odd count
    pixel_flipping(session, x, gxi, T)
    assert kernel.experimental_get_tracing_count() == before
