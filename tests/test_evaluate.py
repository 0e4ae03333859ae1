"""Evaluation metrics on constructed cases whose answers are known by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.evaluate import (
    Curves,
    average_drop_increase,
    cascading_randomization,
    deletion,
    energy_pointing,
    insertion,
    pointing_game,
    shortcut_hits,
    shortcut_rate,
    summary,
)
from xai_keras.explainers.base import runner_for
from xai_keras.explainers.baselines import make_baseline
from xai_keras.explainers.masking import curve_kernel

SIDE = 8
DECISIVE = [(3, 3), (3, 4), (4, 3), (4, 4)]  # the pixels that raise the class-0 logit
NEGATIVE = (6, 1)  # a pixel that lowers it (for the increase-in-confidence case)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


@pytest.fixture(scope="module")
def pixel_model() -> keras.Model:
    """logit_0 = sum of the DECISIVE pixels - the NEGATIVE pixel, logit_1 = 0, then softmax:
    p(class 0) = sigmoid(logit_0)."""
    inputs = keras.Input((SIDE, SIDE, 1))
    dense = keras.layers.Dense(2, use_bias=False, name="logits")
    outputs = keras.layers.Activation("softmax")(dense(keras.layers.Flatten()(inputs)))
    model = keras.Model(inputs, outputs, name="pixel_sum")
    kernel = np.zeros((SIDE * SIDE, 2), np.float32)
    for r, c in DECISIVE:
        kernel[r * SIDE + c, 0] = 1.0
    kernel[NEGATIVE[0] * SIDE + NEGATIVE[1], 0] = -1.0
    dense.set_weights([kernel])
    return model


def _decisive_map() -> np.ndarray:
    m = np.zeros((SIDE, SIDE), np.float32)
    for r, c in DECISIVE:
        m[r, c] = 1.0
    return m


def _reference_curve(m: np.ndarray, kind: str) -> np.ndarray:
    """p(class 0) of an all-ones image after each single-pixel step of a black baseline."""
    weights = np.zeros(SIDE * SIDE)
    for r, c in DECISIVE:
        weights[r * SIDE + c] = 1.0
    weights[NEGATIVE[0] * SIDE + NEGATIVE[1]] = -1.0
    order = np.argsort(-m.ravel(), kind="stable")
    changed = np.concatenate([[0.0], np.cumsum(weights[order])])  # logit of the top-k pixels
    logit = weights.sum() - changed if kind == "deletion" else changed
    return _sigmoid(logit)


# -- localisation ----------------------------------------------------------------------------------
def _object_masks() -> np.ndarray:
    masks = np.zeros((3, 10, 10), bool)
    masks[:, 4:7, 3:8] = True  # 15 pixels of 100
    return masks


def test_perfect_map_scores_one_and_outside_peak_scores_zero():
    masks = _object_masks()
    perfect = masks.astype(np.float32)
    assert pointing_game(perfect, masks).tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(energy_pointing(perfect, masks), 1.0)
    outside = np.zeros((3, 10, 10))
    outside[:, 9, 9] = 1.0
    assert pointing_game(outside, masks).tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(energy_pointing(outside, masks), 0.0)


def test_constant_and_zero_maps_get_the_documented_values():
    masks = _object_masks()
    masks[2] = False
    masks[2, 0, 0] = True  # this mask misses the centre, (4, 4), where a flat map "points"
    flat = np.full((3, 10, 10), 0.3)
    assert pointing_game(flat, masks).tolist() == [1.0, 1.0, 0.0]
    area = masks.mean(axis=(1, 2))
    np.testing.assert_allclose(energy_pointing(flat, masks), area)
    np.testing.assert_allclose(energy_pointing(np.zeros((3, 10, 10)), masks), area)


def test_a_flat_top_points_at_its_middle():
    """A coarse map upsampled bilinearly has a plateau reaching the image corner; its peak is
    the plateau's middle, not its top-left pixel (which lies off a marker at [1:4, 1:4])."""
    coarse = np.zeros((1, 4, 4, 1), np.float32)
    coarse[0, 0, 0] = 1.0
    up = tf.image.resize(coarse, (32, 32), method="bilinear").numpy()[..., 0]  # 4x4 plateau
    cue = np.zeros((1, 32, 32), bool)
    cue[0, 1:4, 1:4] = True
    assert up[0, 0, 0] == up.max()  # the flat top includes pixel (0, 0)...
    assert pointing_game(up, cue).tolist() == [1.0]  # ...but the peak is its middle


def test_pointing_ties_go_to_the_first_pixel_and_tolerance_dilates():
    masks = _object_masks()[:1]
    m = np.zeros((1, 10, 10))
    m[0, 1, 1] = m[0, 5, 5] = 1.0  # two equal peaks: the first in row-major order is (1, 1)
    assert pointing_game(m, masks).tolist() == [0.0]
    near = np.zeros((1, 10, 10))
    near[0, 5, 9] = 1.0  # two pixels right of the object (its last column is 7)
    assert pointing_game(near, masks, tolerance=1).tolist() == [0.0]
    assert pointing_game(near, masks, tolerance=2).tolist() == [1.0]


def test_localisation_accepts_a_single_map_and_0_1_masks():
    mask = _object_masks()[0].astype(np.uint8)
    assert pointing_game(mask.astype(float), mask).shape == (1,)
    m = np.zeros((10, 10))
    m[5, 5], m[0, 0] = 3.0, 1.0
    np.testing.assert_allclose(energy_pointing(m, mask), [0.75])


# -- faithfulness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_curves_match_a_hand_computed_reference(pixel_model, kind):
    metric = deletion if kind == "deletion" else insertion
    good = _decisive_map()
    maps = np.stack([good, 1.0 - good, np.zeros_like(good)])  # decisive first, last, flat
    images = np.ones((3, SIDE, SIDE, 1), np.float32)
    curves = metric(pixel_model, images, maps, steps=SIDE * SIDE, baseline="black")
    assert isinstance(curves, Curves) and curves.kind == kind
    assert curves.fractions.shape == (65,) and curves.scores.shape == (3, 65)
    assert curves.targets.tolist() == [0, 0, 0]
    for i in range(3):
        np.testing.assert_allclose(curves.scores[i], _reference_curve(maps[i], kind), atol=1e-5)
    good_auc, reverse_auc, flat_auc = curves.auc
    if kind == "deletion":  # a faithful map makes the probability fall first
        assert good_auc < flat_auc < reverse_auc
    else:
        assert good_auc > flat_auc > reverse_auc


def test_curve_endpoints_are_the_clean_and_the_baseline_image(pixel_model):
    images = np.random.default_rng(3).uniform(0, 1, (4, SIDE, SIDE, 1)).astype(np.float32)
    maps = np.random.default_rng(4).uniform(0, 1, (4, SIDE, SIDE))
    clean = pixel_model(images).numpy()
    blurred = pixel_model(make_baseline(tf.constant(images), "blur")).numpy()
    targets = clean.argmax(axis=1)
    rows = np.arange(4)
    removed = deletion(pixel_model, images, maps, steps=7)  # 7 does not divide 64 pixels
    inserted = insertion(pixel_model, images, maps, steps=7)
    assert removed.scores.shape == (4, 8) and removed.fractions[[0, -1]].tolist() == [0, 1]
    np.testing.assert_allclose(removed.scores[:, 0], clean[rows, targets], atol=1e-5)
    np.testing.assert_allclose(removed.scores[:, -1], blurred[rows, targets], atol=1e-5)
    np.testing.assert_allclose(inserted.scores[:, 0], blurred[rows, targets], atol=1e-5)
    np.testing.assert_allclose(inserted.scores[:, -1], clean[rows, targets], atol=1e-5)
    for c in (removed, inserted):
        assert np.all((c.scores >= 0) & (c.scores <= 1))
        assert np.all((c.auc >= 0) & (c.auc <= 1))


def test_curves_on_a_real_cnn_trace_once_and_take_a_callable_baseline(gap_model, images32):
    maps = np.random.default_rng(5).uniform(0, 1, images32.shape[:3])
    first = deletion(gap_model, images32, maps, steps=10, baseline="black", batch_size=8)
    again = insertion(gap_model, images32, maps, steps=10, baseline=tf.zeros_like, batch_size=8)
    kernel = curve_kernel(runner_for(gap_model))
    assert kernel.experimental_get_tracing_count() == 1  # padded batches: one shape only
    assert first.scores.shape == again.scores.shape == (5, 11)
    np.testing.assert_allclose(first.scores[:, 0], again.scores[:, -1], atol=1e-5)
    np.testing.assert_allclose(first.scores[:, -1], again.scores[:, 0], atol=1e-5)
    fixed = deletion(gap_model, images32[0], maps[0], targets=2, steps=4)
    assert fixed.scores.shape == (1, 5) and fixed.targets.tolist() == [2]


def test_average_drop_and_increase_by_hand(pixel_model):
    images = np.ones((2, SIDE, SIDE, 1), np.float32)
    halve_decisive = np.ones((SIDE, SIDE), np.float32)
    for r, c in DECISIVE:
        halve_decisive[r, c] = 0.5
    hide_negative = np.ones((SIDE, SIDE), np.float32)
    hide_negative[NEGATIVE] = 0.0
    drop, increase = average_drop_increase(
        pixel_model, images, np.stack([halve_decisive, hide_negative])
    )
    y = _sigmoid(3.0)  # 4 decisive pixels - 1 negative pixel
    np.testing.assert_allclose(drop, [(y - _sigmoid(1.0)) / y, 0.0], rtol=1e-5)
    assert increase.tolist() == [False, True]  # sigmoid(4) > sigmoid(3)


# -- shortcut --------------------------------------------------------------------------------------
def test_shortcut_hits_peak_and_mass():
    cue = np.zeros((3, 8, 8), bool)
    cue[:, :2, :2] = True
    obj = np.zeros((3, 8, 8), bool)
    obj[:, 3:7, 3:7] = True
    maps = np.zeros((3, 8, 8))
    maps[0, 0, 1] = 1.0  # peak on the cue
    maps[1, 4, 4] = 1.0  # peak on the object
    maps[2, 4, 4], maps[2, :2, :2] = 1.0, 0.5  # peak on the object, more mass on the cue
    assert shortcut_hits(maps, cue).tolist() == [True, False, False]
    assert shortcut_hits(maps, cue, obj, mode="mass").tolist() == [True, False, True]
    assert shortcut_rate(maps, cue) == pytest.approx(1 / 3)
    assert shortcut_rate(maps, cue, obj, mode="mass") == pytest.approx(2 / 3)


# -- sanity ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_cascading_randomization_destroys_the_maps(gap_model, images32, method):
    before = [w.copy() for w in gap_model.get_weights()]
    result = cascading_randomization(gap_model, images32, method=method)
    expected = ["logits", "block3_bn1", "block3_conv1", "block2_bn1", "block2_conv1"]
    assert result.layers == [*expected, "block1_bn1", "block1_conv1"]
    assert result.spearman.shape == result.ssim.shape == (7, 5)
    assert result.original.shape == (5, 32, 32) and result.targets.shape == (5,)
    assert np.all(np.abs(result.spearman) <= 1) and np.all(result.ssim <= 1)
    out = summary(result)
    assert out["sanity_spearman"] < 0.5  # the trained model's maps are gone
    assert out["sanity_spearman"] == pytest.approx(result.spearman[-1].mean())
    assert list(out["per_layer"]) == result.layers
    for a, b in zip(before, gap_model.get_weights()):  # the user's model is untouched
        np.testing.assert_array_equal(a, b)


def test_randomization_really_changes_the_maps_and_is_seeded(gap_model, images32):
    logits = gap_model.get_layer("logits")
    # Grad-CAM depends on the class weights: randomising them alone changes the maps.
    grad = cascading_randomization(gap_model, images32, layers=[logits])
    assert grad.layers == ["logits"] and grad.spearman.mean() < 0.9
    assert np.array_equal(grad.spearman, cascading_randomization(gap_model, images32).spearman[:1])
    # Eigen-CAM never reads the class weights: the same step leaves its maps unchanged.
    eigen = cascading_randomization(gap_model, images32, method="eigencam", layers=["logits"])
    np.testing.assert_allclose(eigen.spearman, 1.0, atol=1e-6)
    np.testing.assert_allclose(eigen.ssim, 1.0, atol=1e-6)


def test_measuring_only_at_the_ends_gives_the_first_and_last_rows(gap_model, images32):
    every = cascading_randomization(gap_model, images32[:3], method="saliency")
    ends = cascading_randomization(gap_model, images32[:3], method="saliency", measure_at="ends")
    assert ends.layers == [every.layers[0], every.layers[-1]]  # every layer was randomised
    np.testing.assert_allclose(ends.spearman, every.spearman[[0, -1]])
    np.testing.assert_allclose(ends.ssim, every.ssim[[0, -1]])
    assert summary(ends)["sanity_spearman"] == pytest.approx(summary(every)["sanity_spearman"])
    with pytest.raises(InputError, match="measure_at"):
        cascading_randomization(gap_model, images32[:1], measure_at="middle")


def test_randomization_reaches_a_frozen_nested_backbone_and_leaves_it_frozen():
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")
    backbone = keras.Sequential([keras.Input((12, 12, 3)), conv], name="backbone")
    backbone.trainable = False
    inputs = keras.Input((12, 12, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(pooled))
    before = [w.copy() for w in model.get_weights()]
    images = np.random.default_rng(6).uniform(0, 1, (2, 12, 12, 3)).astype(np.float32)
    result = cascading_randomization(model, images, method="saliency")
    assert result.layers == ["head", "backbone/conv"] and result.spearman.shape == (2, 2)
    assert not backbone.trainable and not conv.trainable_weights
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- errors ----------------------------------------------------------------------------------------
def test_localisation_and_shortcut_errors():
    masks = _object_masks()
    maps = masks.astype(float)
    with pytest.raises(InputError, match=r"`masks` argument must be boolean masks with"):
        pointing_game(maps, masks[:2])
    with pytest.raises(InputError, match=r"must be boolean \(or hold only 0 and 1\)"):
        energy_pointing(maps, masks * 2)
    with pytest.raises(InputError, match=r"Received: tolerance=-1"):
        pointing_game(maps, masks, tolerance=-1)
    with pytest.raises(InputError, match=r"must be non-negative"):
        energy_pointing(-maps, masks)
    with pytest.raises(InputError, match=r"must be finite"):
        pointing_game(np.full((3, 10, 10), np.nan), masks)
    with pytest.raises(InputError, match=r"Received: maps.shape=\(10,\)"):
        pointing_game(np.zeros(10), masks)
    with pytest.raises(InputError, match=r"Received: mode='area'"):
        shortcut_hits(maps, masks, mode="area")
    with pytest.raises(InputError, match=r"needed for mode='mass'"):
        shortcut_hits(maps, masks, mode="mass")
    with pytest.raises(InputError, match=r"`cue_masks` argument"):
        shortcut_rate(maps, masks[:, :5])


def test_faithfulness_and_sanity_errors(pixel_model, gap_model, images32):
    images = np.ones((2, SIDE, SIDE, 1), np.float32)
    maps = np.ones((2, SIDE, SIDE))
    with pytest.raises(InputError, match=r"Received: maps.shape=\(1, 8, 8\)"):
        deletion(pixel_model, images, maps[:1])
    with pytest.raises(InputError, match=r"Received: steps=0"):
        insertion(pixel_model, images, maps, steps=0)
    with pytest.raises(InputError, match=r"Received: batch_size=0"):
        deletion(pixel_model, images, maps, batch_size=0)
    with pytest.raises(InputError, match=r"Unknown baseline 'grey'"):
        deletion(pixel_model, images, maps, baseline="grey")
    with pytest.raises(InputError, match=r"callable `baseline` must return"):
        deletion(pixel_model, images, maps, baseline=lambda x: x[:1])
    with pytest.raises(InputError, match=r"`targets` must be in \[0, 1\]"):
        deletion(pixel_model, images, maps, targets=5)
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        average_drop_increase(pixel_model, images, maps * 2)
    with pytest.raises(InputError, match=r"Received: model=str"):
        deletion("model", images, maps)
    with pytest.raises(InputError, match=r"Received: 'nope'. Layers with weights: logits"):
        cascading_randomization(gap_model, images32[:1], layers=["nope"])
    with pytest.raises(InputError, match=r"lists layer 'logits' twice"):
        cascading_randomization(gap_model, images32[:1], layers=["logits", "logits"])
    with pytest.raises(InputError, match=r"non-empty list"):
        cascading_randomization(gap_model, images32[:1], layers="logits")


def test_shortcut_nearest_mode_handles_coarse_maps():
    """A coarse map peaking beside a small cue (not on it) still counts in mode "nearest"."""
    cue = np.zeros((2, 32, 32), bool)
    cue[:, 1:5, 1:5] = True
    obj = np.zeros((2, 32, 32), bool)
    obj[:, 14:24, 14:24] = True
    maps = np.zeros((2, 32, 32))
    maps[0, 8, 8] = 1.0  # beside the cue, far from the object
    maps[1, 12, 12] = 1.0  # next to the object
    assert shortcut_hits(maps, cue, mode="peak").tolist() == [False, False]
    assert shortcut_hits(maps, cue, obj, mode="nearest").tolist() == [True, False]
    with pytest.raises(InputError, match="needed for mode='nearest'"):
        shortcut_hits(maps, cue, mode="nearest")


def test_randomization_reports_constant_maps(gap_model, images32, monkeypatch):
    """Zeroed weights give all-zero (constant) maps: their Spearman is undefined; the result
    counts them, warns, and the summary averages the other maps separately."""
    from xai_keras.evaluate import sanity

    monkeypatch.setattr(
        sanity,
        "_randomise",
        lambda layer, rng: [w.assign(tf.zeros_like(w)) for w in layer.trainable_weights],
    )
    with pytest.warns(RuntimeWarning, match=r"5 of 5 maps .* constant"):
        result = cascading_randomization(gap_model, images32, layers=["logits"])
    assert result.constant.tolist() == [[True] * 5]
    info = summary(result)
    assert info["constant_maps"] == 5 and np.isnan(info["sanity_spearman_nonconstant"])
    assert info["sanity_spearman"] == 0.0
