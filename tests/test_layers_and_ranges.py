"""The default layer on class-conv heads, layer="auto", and the model's input value range."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras import explain
from xai_keras.errors import InputError
from xai_keras.evaluate import deletion
from xai_keras.explainers.baselines import make_baseline
from xai_keras.explainers.layers import class_map_layers, default_layer, feeds_global_pooling
from xai_keras.explainers.ranges import resolve_value_range


def _class_conv_net(classes: int = 5) -> keras.Model:
    """mini-Xception's head: features -> Conv2D(classes) -> GAP -> softmax."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    features = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn")(features)
    x = keras.layers.Activation("relu", name="feat")(x)
    x = keras.layers.Conv2D(classes, 3, padding="same", name="class_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="probs")(x))


def test_default_layer_skips_a_class_map_and_says_why():
    model = _class_conv_net()
    assert class_map_layers(model) == ["class_conv"]
    choice = default_layer(model)
    assert choice.path == "feat" and "'class_conv'" in choice.reason
    x = np.random.default_rng(0).uniform(size=(3, 16, 16, 1)).astype(np.float32)
    exp = explain(model, x)
    assert exp.layer == "feat" and "class scores themselves" in exp.layer_reason
    assert "given" in explain(model, x, layer="c1").layer_reason


def test_at_a_class_map_the_gradient_is_one_hot_and_the_variants_coincide():
    """Why the class map is skipped: its Grad-CAM is only the target's own channel, and
    Grad-CAM++, XGrad-CAM and Layer-CAM equal it there (we warn, naming the reason)."""
    model = _class_conv_net()
    x = np.random.default_rng(1).uniform(size=(4, 16, 16, 1)).astype(np.float32)
    assert feeds_global_pooling(model, "class_conv") and not feeds_global_pooling(model, "feat")
    exp = explain(model, x, layer="class_conv")
    a = keras.Model(model.inputs, model.get_layer("class_conv").output)(x).numpy()
    for i, t in enumerate(exp.targets):
        np.testing.assert_allclose(
            exp.raw[i], np.maximum(a[i, ..., t], 0) / 64, rtol=1e-4, atol=1e-7
        )
    with pytest.warns(UserWarning, match="xgradcam equals gradcam at layer 'class_conv'"):
        maps = explain(model, x, method=["gradcam", "xgradcam"], layer="class_conv")
    np.testing.assert_allclose(maps[0].maps, maps[1].maps, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no such warning at the default layer
        explain(model, x, method=["gradcam", "xgradcam"])


def test_auto_layer_scores_candidates_and_picks_the_best():
    model = _class_conv_net()
    x = np.random.default_rng(2).uniform(size=(6, 16, 16, 1)).astype(np.float32)
    exp = explain(model, x, layer="auto")
    assert set(exp.layer_scores) == {"c1", "feat"}  # the class map is no candidate
    assert exp.layer == max(exp.layer_scores, key=exp.layer_scores.get)
    assert exp.layer_reason.startswith("auto: best of 2 layers")
    same = explain(model, x, layer=exp.layer)
    np.testing.assert_allclose(exp.maps, same.maps, atol=1e-6)


def test_value_ranges_map_pixels_and_black():
    tf_range = resolve_value_range((-1, 1))
    assert tf_range.from_pixels(np.array([[0.0], [255.0]])).ravel().tolist() == [-1.0, 1.0]
    caffe = resolve_value_range("caffe")
    pixels = np.array([[[10.0, 20.0, 30.0]]])
    np.testing.assert_allclose(
        caffe.from_pixels(pixels),
        keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode="caffe"),
        atol=1e-4,
    )
    np.testing.assert_allclose(caffe.to_pixels(caffe.from_pixels(pixels)), pixels, atol=1e-4)
    torch = resolve_value_range("torch")
    np.testing.assert_allclose(
        torch.from_pixels(pixels),
        keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode="torch"),
        atol=1e-5,
    )
    x = tf.zeros((2, 4, 4, 3))
    np.testing.assert_allclose(
        make_baseline(x, "black", caffe)[0, 0, 0], [-103.939, -116.779, -123.68], atol=1e-4
    )
    assert float(tf.reduce_max(make_baseline(x[..., :1], "black", tf_range))) == -1.0
    assert resolve_value_range("-1,1") == tf_range
    for bad in ((1, 0), "nope", (0, float("nan")), 3):
        with pytest.raises(InputError, match="value_range"):
            resolve_value_range(bad)


def test_black_means_the_range_minimum_for_ig_occlusion_and_deletion():
    """For a [-1, 1] model, IG's default black baseline is -1: completeness holds against
    f(all -1), not f(0)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    images = np.random.default_rng(3).uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    exp = explain(model, images, "integrated_gradients", targets=1, steps=128, value_range=(-1, 1))
    f = model(images).numpy()[:, 1]
    f_black = model(-np.ones_like(images)).numpy()[:, 1]
    np.testing.assert_allclose(
        exp.attributions.sum(axis=(1, 2, 3)), f - f_black, rtol=0.02, atol=1e-3
    )
    grey = explain(model, images, "integrated_gradients", targets=1, steps=128)
    assert not np.allclose(grey.attributions, exp.attributions)
    occ = explain(model, images, "occlusion", baseline="black", value_range="tf", patch=2)
    occ0 = explain(model, images, "occlusion", baseline="black", patch=2)
    assert not np.allclose(occ.raw, occ0.raw)
    maps = np.random.default_rng(0).uniform(size=(2, 8, 8))
    full = deletion(model, images, maps, baseline="black", value_range=(-1, 1), steps=2)
    black = model(-np.ones_like(images)).numpy()
    probs = tf.nn.softmax(black).numpy()[np.arange(2), full.targets]
    np.testing.assert_allclose(full.scores[:, -1], probs, atol=1e-5)


def test_explanation_pictures_show_images_through_the_value_range():
    model = _class_conv_net()
    pixels = np.random.default_rng(4).uniform(0, 255, (2, 16, 16, 1)).astype(np.float32)
    x = resolve_value_range((-1, 1)).from_pixels(pixels)
    exp = explain(model, x, value_range=(-1, 1))
    np.testing.assert_allclose(exp.display_images(), pixels, atol=1e-3)
    assert exp.overlay().shape == (2, 16, 16, 3)


def test_cli_maps_image_files_through_the_value_range(tmp_path):
    import cv2

    from xai_keras.cli import build_parser, join_negative_ranges, main, read_images, value_range_of

    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:, 4:] = 255
    cv2.imwrite(str(tmp_path / "half.png"), pixels)
    files = [tmp_path / "half.png"]
    parse = build_parser().parse_args
    for flags, low, high in (
        ([], 0, 1),
        (["--no-unit"], 0, 255),
        (["--value-range", "-1,1"], -1, 1),
    ):
        args = parse(
            join_negative_ranges(["sag", "--model", "m.keras", "--image", "x.png", *flags])
        )
        img = read_images(files, (8, 8, 3), value_range_of(args))[0]
        assert img.min() == low and img.max() == high
    args = parse(["sag", "--model", "m.keras", "--image", "x.png", "--preprocess", "caffe"])
    img = read_images(files, (8, 8, 3), value_range_of(args))[0]
    np.testing.assert_allclose(img[0, 0], [-103.939, -116.779, -123.68], atol=1e-3)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, activation="relu", padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "m.keras")
    code = main(
        [
            "explain",
            str(files[0]),
            "--model",
            str(tmp_path / "m.keras"),
            "--out",
            str(tmp_path / "out"),
            "--method",
            "integrated_gradients",
            "--value-range",
            "-1,1",
            "--quiet",
        ]
    )
    assert code == 0 and list((tmp_path / "out").glob("*.png"))
    assert (
        main(
            [
                "explain",
                str(files[0]),
                "--model",
                str(tmp_path / "m.keras"),
                "--value-range",
                "1,-1",
            ]
        )
        == 2
    )
