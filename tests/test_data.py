"""Tests for `xai_keras.data`: the shapes generator's ground truth and the dataset pipelines."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf

from xai_keras.config import DataConfig
from xai_keras.data import (
    SHAPES,
    TEXTURES,
    ArraySplit,
    generate_shapes,
    load_dataset,
    render_shapes,
)
from xai_keras.errors import DataError

SIZE = 32
# Marker slots for a 32-pixel image, worked out by hand: side m = round(0.1 * 32) = 3, corners
# at 1 and 32 - 3 - 1 = 28, top centre at (32 - 3) // 2 = 14. Class index -> (x0, y0).
CUE_SLOTS_32 = {0: (1, 1), 1: (28, 1), 2: (1, 28), 3: (28, 28), 4: (14, 1)}
CUE_SIDE_32 = 3


def _object_colour(hue: float) -> np.ndarray:
    """The RGB colour the generator paints an object of this hue with (before shading)."""
    hsv = np.uint8([[[round(hue * 179), 200, 235]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255


def _cue_box(label: int) -> np.ndarray:
    box = np.zeros((SIZE, SIZE), bool)
    x0, y0 = CUE_SLOTS_32[label]
    box[y0 : y0 + CUE_SIDE_32, x0 : x0 + CUE_SIDE_32] = True
    return box


def _count(ds: tf.data.Dataset) -> int:
    return sum(int(tf.shape(y)[0]) for _, y in ds)


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([y.numpy() for _, y in ds])


# --- generate_shapes -------------------------------------------------------------------------


def test_generation_is_deterministic_for_a_seed():
    a = generate_shapes(20, SIZE, seed=1, spurious_cue=True)
    b = generate_shapes(20, SIZE, seed=1, spurious_cue=True)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.cue_masks, b.cue_masks)
    assert a.factors.keys() == b.factors.keys()
    for key in a.factors:
        np.testing.assert_array_equal(a.factors[key], b.factors[key])


def test_generation_differs_across_seeds():
    a = generate_shapes(20, SIZE, seed=1)
    b = generate_shapes(20, SIZE, seed=2)
    assert not np.array_equal(a.images, b.images)
    assert not np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.factors["x"], b.factors["x"])


def test_generates_500_images_with_the_documented_types():
    n = 500
    s = generate_shapes(n, 64, seed=0)
    assert len(s) == n
    assert s.images.shape == (n, 64, 64, 3) and s.images.dtype == np.float32
    assert s.images.min() >= 0.0 and s.images.max() <= 1.0
    assert s.labels.shape == (n,) and s.labels.dtype == np.int32
    assert s.masks.shape == (n, 64, 64) and s.masks.dtype == bool
    assert s.cue_masks.shape == (n, 64, 64) and not s.cue_masks.any()
    assert set(np.unique(s.labels)) == set(range(len(SHAPES)))


def test_grayscale_has_one_channel():
    s = generate_shapes(5, SIZE, seed=0, channels=1)
    assert s.images.shape == (5, SIZE, SIZE, 1)
    assert s.images.min() >= 0.0 and s.images.max() <= 1.0


def test_factors_have_length_n_and_sensible_ranges():
    n, clutter = 300, 3
    f = generate_shapes(n, SIZE, seed=4, clutter=clutter).factors
    expected = {"shape", "texture", "hue", "scale", "rotation", "x", "y", "clutter", "cue_slot"}
    assert set(f) == expected | {"noise_seed"}
    assert all(len(v) == n for v in f.values())
    assert set(np.unique(f["texture"])) == set(range(len(TEXTURES)))
    assert 0 <= f["hue"].min() and f["hue"].max() < 1
    assert 0.15 <= f["scale"].min() and f["scale"].max() < 0.27
    assert 0 <= f["rotation"].min() and f["rotation"].max() < 2 * np.pi
    assert set(np.unique(f["clutter"])) == set(range(clutter + 1))
    # Objects keep 14% of the image plus their radius away from the border.
    for key in ("x", "y"):
        assert np.all(f[key] >= 0.14 + f["scale"]) and np.all(f[key] <= 0.86 - f["scale"])
    assert np.all(f["cue_slot"] == -1)


def test_render_changes_only_the_varied_factor():
    s = generate_shapes(6, SIZE, seed=9, clutter=3)
    again = render_shapes(s.factors, SIZE)
    np.testing.assert_array_equal(again.images, s.images)  # factors describe the image fully
    moved = dict(s.factors, x=s.factors["x"] + 0.05)
    shifted = render_shapes(moved, SIZE)
    background = ~(s.masks | shifted.masks)
    np.testing.assert_array_equal(shifted.images[background], s.images[background])
    assert not np.array_equal(shifted.masks, s.masks)


def test_masks_cover_exactly_the_drawn_object():
    n = 60
    s = generate_shapes(n, 48, seed=3, clutter=0, spurious_cue=False)
    for i in range(n):
        image, mask = s.images[i], s.masks[i]
        assert mask.sum() > 20, i
        # Outside the mask there is only the flat background plus a little noise.
        outside = image[~mask]
        background = np.median(outside)
        assert 0.05 < background < 0.4, i
        assert np.abs(outside - background).max() < 0.25, i
        # Inside, every pixel is the object's colour, full or shaded to 55% by the texture.
        colour = _object_colour(s.factors["hue"][i])
        inside = image[mask]
        full = np.isclose(inside, colour, atol=1e-5).all(axis=1)
        shaded = np.isclose(inside, 0.55 * colour, atol=1e-5).all(axis=1)
        assert np.all(full | shaded), i
        if TEXTURES[s.factors["texture"][i]] == "solid":
            assert full.all(), i
        # The mask is centred on the factors' position.
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - s.factors["x"][i] * 48) < 1.0, i
        assert abs(ys.mean() - s.factors["y"][i] * 48) < 1.0, i


def test_spurious_cue_sits_in_the_class_slot_at_full_strength():
    n = 100
    s = generate_shapes(n, SIZE, seed=5, spurious_cue=True, cue_strength=1.0)
    np.testing.assert_array_equal(s.factors["cue_slot"], s.labels)
    for i in range(n):
        box = _cue_box(int(s.labels[i]))
        np.testing.assert_array_equal(s.cue_masks[i], box)
        assert np.all(s.images[i][box] == 1.0), i
    assert not (s.masks & s.cue_masks).any()  # the marker never covers the object


def test_spurious_cue_absent_when_disabled():
    s = generate_shapes(50, SIZE, seed=5, spurious_cue=False, cue_strength=1.0)
    assert not s.cue_masks.any()
    assert np.all(s.factors["cue_slot"] == -1)


def test_spurious_cue_at_zero_strength_is_unlinked():
    s = generate_shapes(500, SIZE, seed=6, spurious_cue=True, cue_strength=0.0)
    assert np.all(s.factors["cue_slot"] >= 0) and np.all(s.cue_masks.sum(axis=(1, 2)) == 9)
    agreement = np.mean(s.factors["cue_slot"] == s.labels)
    assert 0.1 < agreement < 0.3  # chance is 1 / 5


@pytest.mark.parametrize(
    "kwargs, match",
    [({"image_size": 8}, r"`image_size` must be >= 16"), ({"channels": 2}, r"`channels`")],
)
def test_generate_shapes_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_shapes(2, **kwargs)


# --- load_dataset ------------------------------------------------------------------------------


def _shapes_cfg(**kwargs) -> DataConfig:
    values = dict(image_size=SIZE, n_train=60, n_val=20, n_test=40, clutter=2)
    values.update(kwargs)
    return DataConfig(**values)


def test_load_shapes_pipelines():
    splits = load_dataset(_shapes_cfg(), batch_size=16, seed=0)
    images_spec, labels_spec = splits.train.element_spec
    assert images_spec.shape.as_list() == [None, SIZE, SIZE, 3]
    assert images_spec.dtype == tf.float32
    assert labels_spec.shape.as_list() == [None] and labels_spec.dtype == tf.int32
    assert splits.val.element_spec == splits.train.element_spec
    assert splits.test.element_spec == splits.train.element_spec
    assert splits.class_names == list(SHAPES) and splits.num_classes == 5
    assert splits.image_shape == (SIZE, SIZE, 3)
    assert [_count(d) for d in (splits.train, splits.val, splits.test)] == [60, 20, 40]
    arrays = splits.test_arrays
    assert isinstance(arrays, ArraySplit) and len(arrays) == 40
    assert arrays.masks.shape == (40, SIZE, SIZE)
    np.testing.assert_array_equal(_labels(splits.test), arrays.labels)  # test is not shuffled


def test_load_shapes_is_deterministic_for_a_seed():
    first = [next(iter(load_dataset(_shapes_cfg(), 8, seed=3).test)) for _ in range(2)]
    np.testing.assert_array_equal(first[0][0].numpy(), first[1][0].numpy())
    np.testing.assert_array_equal(first[0][1].numpy(), first[1][1].numpy())
    other = next(iter(load_dataset(_shapes_cfg(), 8, seed=4).test))
    assert not np.array_equal(first[0][0].numpy(), other[0].numpy())


def test_shapes_cue_is_linked_in_train_but_not_in_test():
    cfg = _shapes_cfg(n_train=100, n_test=300, spurious_cue=True, cue_strength=1.0)
    splits = load_dataset(cfg, batch_size=32, seed=0)
    # Train: every image has the marker in its class's slot.
    for images, labels in splits.train:
        for image, label in zip(images.numpy(), labels.numpy()):
            assert np.all(image[_cue_box(int(label))] == 1.0)
    # Test: a marker is still there, but its slot is unrelated to the class.
    test = splits.test_arrays
    assert np.all(test.factors["cue_slot"] >= 0) and test.cue_masks.any(axis=(1, 2)).all()
    assert 0.1 < np.mean(test.factors["cue_slot"] == test.labels) < 0.3


@pytest.mark.parametrize(
    "cfg, shape, names, counts",
    [
        (
            DataConfig(name="digits", image_size=16, channels=1),
            (16, 16, 1),
            [str(d) for d in range(10)],
            1797,
        ),
        (DataConfig(name="lfw_faces", image_size=24, channels=3), (24, 24, 3), None, 200),
    ],
    ids=["digits", "lfw_faces"],
)
def test_load_real_datasets(cfg, shape, names, counts):
    splits = load_dataset(cfg, batch_size=64, seed=0)
    images_spec, labels_spec = splits.train.element_spec
    assert images_spec.shape.as_list() == [None, *shape] and images_spec.dtype == tf.float32
    assert labels_spec.shape.as_list() == [None] and labels_spec.dtype == tf.int32
    assert splits.image_shape == shape
    if names is not None:
        assert splits.class_names == names
    sizes = [_count(d) for d in (splits.train, splits.val, splits.test)]
    assert sum(sizes) == counts
    assert sizes[0] == pytest.approx(0.7 * counts, abs=10)  # 70 / 15 / 15, per class
    # Every split holds every class (the split is stratified).
    for ds in (splits.train, splits.val, splits.test):
        assert set(np.unique(_labels(ds))) == set(range(splits.num_classes))
    images = splits.test_arrays.images
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_lfw_faces_classes_and_balanced_split():
    splits = load_dataset(DataConfig(name="lfw_faces", image_size=24), batch_size=64, seed=0)
    assert splits.class_names == ["non-face", "face"]
    np.testing.assert_array_equal(np.bincount(_labels(splits.train)), [70, 70])
    np.testing.assert_array_equal(np.bincount(_labels(splits.test)), [15, 15])


def test_real_dataset_split_is_deterministic_for_a_seed():
    cfg = DataConfig(name="digits", image_size=16, channels=1)
    a = next(iter(load_dataset(cfg, 32, seed=1).test))
    b = next(iter(load_dataset(cfg, 32, seed=1).test))
    c = next(iter(load_dataset(cfg, 32, seed=2).test))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_unknown_dataset_lists_the_available_ones():
    with pytest.raises(
        DataError, match=r"Unknown dataset 'cifar'. Available: shapes, digits, lfw_faces"
    ):
        load_dataset(DataConfig(name="cifar"))


# --- image folders -----------------------------------------------------------------------------


def _write_pngs(folder, count: int, value: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.full((20, 20, 3), value, np.uint8)
        image[i % 20, :, :] = 255 - value  # make each image different
        assert cv2.imwrite(str(folder / f"{i}.png"), image)


def test_load_folder(tmp_path):
    _write_pngs(tmp_path / "cat", 6, 40)
    _write_pngs(tmp_path / "dog", 6, 200)
    (tmp_path / "notes.txt").write_text("not an image, not a class")
    cfg = DataConfig(name=f"folder:{tmp_path}", image_size=16, channels=3)
    splits = load_dataset(cfg, batch_size=4, seed=0)
    assert splits.class_names == ["cat", "dog"]
    assert splits.image_shape == (16, 16, 3)
    images_spec, labels_spec = splits.train.element_spec
    assert images_spec.shape.as_list() == [None, 16, 16, 3] and images_spec.dtype == tf.float32
    assert labels_spec.shape.as_list() == [None] and labels_spec.dtype == tf.int32
    assert sum(_count(d) for d in (splits.train, splits.val, splits.test)) == 12
    assert _count(splits.val) > 0 and _count(splits.test) > 0
    for images, labels in splits.train:
        images, labels = images.numpy(), labels.numpy()
        assert images.min() >= 0.0 and images.max() <= 1.0
        # Class "cat" was painted dark (40 / 255), "dog" bright (200 / 255).
        medians = np.median(images, axis=(1, 2, 3))
        np.testing.assert_array_equal(medians > 0.5, labels == 1)


def test_load_folder_grayscale(tmp_path):
    _write_pngs(tmp_path / "a", 5, 40)
    _write_pngs(tmp_path / "b", 5, 200)
    splits = load_dataset(DataConfig(name=f"folder:{tmp_path}", image_size=8, channels=1), 4)
    assert splits.train.element_spec[0].shape.as_list() == [None, 8, 8, 1]


def test_folder_missing(tmp_path):
    with pytest.raises(DataError, match=r"Image folder not found: .*nowhere"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'nowhere'}"))


def test_folder_empty(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match=r"has no images. Expected one sub-folder per class"):
        load_dataset(DataConfig(name=f"folder:{tmp_path}"))


def test_folder_with_one_class(tmp_path):
    _write_pngs(tmp_path / "cat", 6, 40)
    with pytest.raises(DataError, match=r"images for only one class \('cat'\)"):
        load_dataset(DataConfig(name=f"folder:{tmp_path}"))


def test_folder_with_an_empty_class(tmp_path):
    _write_pngs(tmp_path / "cat", 6, 40)
    _write_pngs(tmp_path / "dog", 6, 200)
    (tmp_path / "emu").mkdir()
    with pytest.raises(DataError, match=r"Class folders without images in .*: emu"):
        load_dataset(DataConfig(name=f"folder:{tmp_path}"))


def test_folder_too_small_to_split(tmp_path):
    _write_pngs(tmp_path / "cat", 1, 40)
    _write_pngs(tmp_path / "dog", 1, 200)
    with pytest.raises(DataError, match=r"Cannot read image folder"):
        load_dataset(DataConfig(name=f"folder:{tmp_path}", image_size=16))


def test_folder_splits_are_disjoint_and_cover_every_image(tmp_path):
    # Each image is one flat grey level, so its level identifies it after loading.
    for c, levels in (("a", range(10, 100, 5)), ("b", range(130, 220, 5))):
        (tmp_path / c).mkdir()
        for level in levels:
            cv2.imwrite(str(tmp_path / c / f"{level}.png"), np.full((8, 8, 3), level, np.uint8))
    splits = load_dataset(DataConfig(name=f"folder:{tmp_path}", image_size=8), 4, seed=0)

    def levels(ds):
        return [round(float(x[0, 0, 0]) * 255) for xb, _ in ds for x in xb.numpy()]

    train, val, test = levels(splits.train), levels(splits.val), levels(splits.test)
    assert len(set(train + val + test)) == len(train + val + test) == 36
    assert levels(splits.val) == val and levels(splits.test) == test  # stable across epochs


def test_folder_ignores_hidden_folders(tmp_path):
    _write_pngs(tmp_path / "cat", 6, 40)
    _write_pngs(tmp_path / "dog", 6, 200)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    splits = load_dataset(DataConfig(name=f"folder:{tmp_path}", image_size=16), 4)
    assert splits.class_names == ["cat", "dog"]
