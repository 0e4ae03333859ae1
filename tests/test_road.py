"""ROAD: the imputation against hand-computed values and the functions it must reproduce, the
curves against impute-then-predict by hand, and ROAD telling a true map from a random one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from xai_keras.errors import InputError
from xai_keras.evaluate.road import RoadCurves, noisy_linear_impute, road
from xai_keras.explainers.session import Session


def _grid(h: int = 20, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.mgrid[0:h, 0:w].astype(np.float64)
    return r - h / 2 + 0.3, c - w / 2 - 0.2  # off-centre: no symmetry hides a wrong sign


def _interior_removal(shape: tuple[int, int], share: float, seed: int) -> np.ndarray:
    removed = np.random.default_rng(seed).uniform(size=shape) < share
    removed[0, :] = removed[-1, :] = removed[:, 0] = removed[:, -1] = False
    return removed


def _neighbour_mean(image: np.ndarray) -> np.ndarray:
    """(H, W, C) weighted mean of each pixel's neighbours inside the image (1/6 direct, 1/12
    diagonal, renormalised at the border), by padding: an independent reference."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
    inside = np.pad(np.ones((h, w, 1)), ((1, 1), (1, 1), (0, 0)))
    total, weights = np.zeros_like(image), np.zeros((h, w, 1))
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == dc == 0:
                continue
            weight = 1 / 6 if dr == 0 or dc == 0 else 1 / 12
            total += weight * padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
            weights += weight * inside[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
    return total / weights


# -- imputation ------------------------------------------------------------------------------------
def test_one_removed_pixel_takes_the_hand_computed_weighted_mean():
    image = np.zeros((3, 3, 1))
    image[1, 2] = 1.0  # a direct neighbour of the centre: weight 1/6
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    np.testing.assert_allclose(noisy_linear_impute(image, removed, noise=0)[1, 1, 0], 1 / 6)
    image[1, 2], image[2, 2] = 0.0, 1.0  # a diagonal one: 1/12
    np.testing.assert_allclose(noisy_linear_impute(image, removed, noise=0)[1, 1, 0], 1 / 12)
    # A corner has 3 neighbours, weights 1/6, 1/6, 1/12 renormalised: (2a + 2b + c) / 5.
    corner = np.zeros((3, 3), bool)
    corner[0, 0] = True
    image = np.zeros((3, 3, 1))
    image[0, 1], image[1, 0], image[1, 1] = 1.0, 2.0, 4.0
    np.testing.assert_allclose(noisy_linear_impute(image, corner, noise=0)[0, 0, 0], 10 / 5)


def test_harmonic_polynomials_up_to_degree_three_are_reproduced_exactly():
    r, c = _grid()
    functions = [
        1.5 + 0.7 * r - 0.4 * c,  # a linear ramp
        r**2 - c**2,
        r * c,
        r**3 - 3 * r * c**2,
        3 * r**2 * c - c**3,
        r**3 * c - r * c**3,  # the one quartic the 1/6, 1/12 stencil keeps (Im z^4)
    ]
    images = np.stack(functions, axis=-1)  # one function per channel: one system for all
    removed = _interior_removal(r.shape, 0.9, seed=1)
    out = noisy_linear_impute(images, removed, noise=0)
    scale = np.abs(images).max(axis=(0, 1))
    assert np.all(np.abs(out - images).max(axis=(0, 1)) <= 1e-6 * scale)
    # Non-harmonic functions, and the real part of z^4, are not reproduced: the test can fail.
    for f in (r**2 + c**2, r**4 - 6 * r**2 * c**2 + c**4):
        wrong = noisy_linear_impute(f[..., None], removed, noise=0)[..., 0]
        assert np.abs(wrong - f)[removed].max() > 1e-4 * np.abs(f).max()  # 100x the tolerance


def test_along_an_edge_only_functions_linear_along_it_are_kept():
    r, c = _grid(12, 16)
    removed = np.zeros(r.shape, bool)
    removed[0, 3:13] = True  # a run on the top edge
    along = 2.0 + 0.5 * c
    out = noisy_linear_impute(along[..., None], removed, noise=0)[..., 0]
    np.testing.assert_allclose(out, along, rtol=1e-6)
    across = 2.0 + 0.5 * r  # the missing row above pulls the edge value inwards
    out = noisy_linear_impute(across[..., None], removed, noise=0)[..., 0]
    assert np.abs(out - across)[removed].min() > 0.1


def test_every_removed_pixel_is_the_weighted_mean_of_its_neighbours():
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 1, (3, 15, 17, 2))
    removed = rng.uniform(size=(3, 15, 17)) < np.array([0.2, 0.6, 0.95])[:, None, None]
    removed[:, 0, 0] = True  # corners and edges are removed too
    out = noisy_linear_impute(images, removed, noise=0).astype(np.float64)
    for x, y, mask in zip(images, out, removed):
        np.testing.assert_allclose(y[mask], _neighbour_mean(y)[mask], atol=2e-6)
        np.testing.assert_array_equal(y[~mask], x[~mask].astype(np.float32))
        assert y[mask].min() >= x[~mask].min() - 1e-6  # the maximum principle: no overshoot
        assert y[mask].max() <= x[~mask].max() + 1e-6


def test_noise_is_seeded_absolute_and_only_on_removed_pixels():
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (2, 40, 40, 3)).astype(np.float32)
    removed = rng.uniform(size=(2, 40, 40)) < 0.5
    exact = noisy_linear_impute(images, removed, noise=0)
    np.testing.assert_array_equal(exact, noisy_linear_impute(images, removed, noise=0, seed=9))
    noisy = noisy_linear_impute(images, removed, noise=0.05, seed=4)
    np.testing.assert_array_equal(noisy, noisy_linear_impute(images, removed, noise=0.05, seed=4))
    assert not np.array_equal(noisy, noisy_linear_impute(images, removed, noise=0.05, seed=5))
    np.testing.assert_array_equal(noisy[~removed], images[~removed])
    diff = (noisy - exact)[removed]
    assert abs(diff.std() - 0.05) < 0.003 and abs(diff.mean()) < 0.003  # std in image units
    one = noisy_linear_impute(images[0], removed[0], noise=0)
    assert one.shape == (40, 40, 3) and one.dtype == np.float32
    np.testing.assert_array_equal(one, exact[0])


def test_imputation_errors():
    images = np.zeros((2, 5, 5, 1))
    removed = np.zeros((2, 5, 5), bool)
    with pytest.raises(InputError, match=r"`removed` argument must be a boolean mask of shape"):
        noisy_linear_impute(images, removed[:, :4])
    with pytest.raises(InputError, match=r"`removed` argument must be boolean .*dtype=float"):
        noisy_linear_impute(images, removed + 0.5)
    everything = removed.copy()
    everything[1] = True
    with pytest.raises(InputError, match=r"keep at least one pixel .*images \[1\]"):
        noisy_linear_impute(images, everything)
    with pytest.raises(InputError, match=r"`images` argument must be a non-empty finite array"):
        noisy_linear_impute(np.zeros((5, 5)), removed[0])
    with pytest.raises(InputError, match=r"`noise` must be a finite number >= 0.0"):
        noisy_linear_impute(images, removed, noise=-0.1)
    with pytest.raises(InputError, match=r"`seed` must be an int >= 0"):
        noisy_linear_impute(images, removed, seed=1.5)


# -- curves ----------------------------------------------------------------------------------------
def test_curves_equal_impute_then_predict_by_hand(gap_model, images32):
    maps = np.random.default_rng(5).uniform(0, 1, images32.shape[:3])
    maps[0] = 0.5  # a flat map: ties go in row-major order
    percentiles = (0, 25, 50, 99.9)
    curves = road(gap_model, images32, maps, percentiles=percentiles, noise=0, batch_size=4)
    assert isinstance(curves, RoadCurves)
    assert curves.morf.shape == curves.lerf.shape == (5, 4)
    pixels = 32 * 32
    expected_k = np.array([0, 256, 512, pixels - 1])  # 99.9% would remove all: one pixel kept
    np.testing.assert_allclose(curves.fractions, expected_k / pixels)
    probs = gap_model.predict(images32, verbose=0)
    targets = probs.argmax(axis=1)
    np.testing.assert_array_equal(curves.targets, targets)
    np.testing.assert_allclose(curves.clean, probs[np.arange(5), targets], atol=1e-6)
    for i in range(5):
        order = np.argsort(-maps[i].ravel(), kind="stable")
        for j, k in enumerate(expected_k):
            for name, chosen in (("morf", order[:k]), ("lerf", order[pixels - k :])):
                removed = np.zeros(pixels, bool)
                removed[chosen] = True
                filled = noisy_linear_impute(images32[i], removed.reshape(32, 32), noise=0)
                p = gap_model.predict(filled[None], verbose=0)[0, targets[i]]
                np.testing.assert_allclose(getattr(curves, name)[i, j], p, atol=1e-5)
    np.testing.assert_allclose(curves.morf[:, 0], curves.clean, atol=1e-6)  # 0%: clean image
    np.testing.assert_allclose(curves.score, curves.lerf.mean(1) - curves.morf.mean(1))


def test_noisy_curves_stay_paired_across_orders_and_leading_subsets(gap_model, images32):
    maps = np.random.default_rng(6).uniform(0, 1, images32.shape[:3])
    both = road(gap_model, images32, maps, percentiles=(30, 70), noise=0.05, seed=3)
    morf = road(gap_model, images32, maps, percentiles=(30, 70), order="morf", noise=0.05, seed=3)
    np.testing.assert_allclose(morf.morf, both.morf, atol=1e-6)
    assert morf.lerf is None
    with pytest.raises(InputError, match=r"no LERF part: call road\(\.\.\., order='both'\)"):
        _ = morf.score
    first = road(gap_model, images32[:2], maps[:2], percentiles=(30, 70), noise=0.05, seed=3)
    np.testing.assert_allclose(first.lerf, both.lerf[:2], atol=1e-6)  # image i: stream i
    other = road(gap_model, images32, maps, percentiles=(30, 70), noise=0.05, seed=4)
    assert not np.allclose(other.morf, both.morf, atol=1e-7)
    fixed = road(gap_model, images32[0], maps[0], targets=2, percentiles=[50], order="lerf")
    assert fixed.lerf.shape == (1, 1) and fixed.targets.tolist() == [2]


def test_a_session_and_relative_noise_from_its_value_range(gap_model, images32):
    maps = np.random.default_rng(7).uniform(0, 1, images32.shape[:3])
    kwargs = dict(percentiles=(50,), order="morf", seed=1)
    absolute = road(gap_model, images32 * 2 - 1, maps, noise=0.02, **kwargs)
    relative = road(gap_model, images32 * 2 - 1, maps, noise=0.01, value_range=(-1, 1), **kwargs)
    np.testing.assert_allclose(relative.morf, absolute.morf, atol=1e-6)  # span 2: 0.01 -> 0.02
    session = Session(gap_model, value_range="tf", batch_size=3)  # 5 rows: a padded batch
    np.testing.assert_allclose(
        road(session, images32 * 2 - 1, maps, noise=0.01, **kwargs).morf, absolute.morf, atol=1e-6
    )


def test_a_true_map_beats_a_random_one_on_the_trained_shapes_model(trained_shapes):
    test = trained_shapes.splits.test_arrays
    model = trained_shapes.model
    probs = model.predict(test.images[:40], verbose=0)
    right = np.nonzero(probs.argmax(axis=1) == test.labels[:40])[0][:12]
    images, masks = test.images[right], test.masks[right].astype(np.float64)
    # The object first, then its surroundings, nearest first: a map that knows the answer.
    true_maps = masks + 0.5 * np.stack([scipy.ndimage.gaussian_filter(m, 4) for m in masks])
    random_maps = np.random.default_rng(0).uniform(0, 1, masks.shape)
    kwargs = dict(targets=test.labels[right], percentiles=(10, 30, 50, 70, 90), batch_size=32)
    true = road(model, images, true_maps, **kwargs)
    random = road(model, images, random_maps, **kwargs)
    # Random removal is debiased: the imputation rebuilds the shape, the class stays.
    assert random.morf_score.mean() > 0.5  # measured 0.73 (the true map: 0.26)
    assert true.morf_score.mean() < random.morf_score.mean() - 0.2
    assert (true.morf_score < random.morf_score).mean() >= 0.75
    assert true.lerf_score.mean() > true.morf_score.mean()
    assert true.score.mean() > random.score.mean() + 0.2


def test_road_errors(gap_model, images32):
    maps = np.zeros(images32.shape[:3])
    with pytest.raises(InputError, match=r"`maps` argument must have shape \(N, H, W\)"):
        road(gap_model, images32, maps[:, :16])
    for bad in ((), (10, 100), (-5,), [[10]], ("a",), None):
        with pytest.raises(InputError, match=r"`percentiles` argument must be a non-empty"):
            road(gap_model, images32, maps, percentiles=bad)
    with pytest.raises(InputError, match=r"`order` must be one of 'morf', 'lerf', 'both'"):
        road(gap_model, images32, maps, order="MoRF")
    with pytest.raises(InputError, match=r"`noise` must be a finite number >= 0.0"):
        road(gap_model, images32, maps, noise=float("nan"))
    with pytest.raises(InputError, match=r"`batch_size` argument must be a positive int"):
        road(gap_model, images32, maps, batch_size=0)
    with pytest.raises(InputError, match=r"`model` argument must be a keras.Model or an xai_"):
        road(lambda x: x, images32, maps)
    with pytest.raises(InputError, match=r"`value_range` argument must be a \(low, high\) pair"):
        road(gap_model, images32, maps, value_range=(1, 0))
    with pytest.raises(InputError, match=r"`targets` must be in \[0, 3\]"):
        road(gap_model, images32, maps, targets=9)
