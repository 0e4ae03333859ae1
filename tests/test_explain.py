"""explain(): the contract of every method, mathematical identities, peers, errors."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import FAST_OPTIONS, model_for

from xai_keras import explain, methods
from xai_keras.errors import InputError, LayerError
from xai_keras.evaluate import pointing_game
from xai_keras.explainers.base import runner_for
from xai_keras.explainers.ranges import ValueRangeWarning


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _vgg_like(seed: int = 3) -> keras.Model:
    """A small VGG: conv blocks with ReLU inside the convs, flatten + dense head, softmax."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((32, 32, 3))
    for b, f in enumerate((8, 16, 16), start=1):
        for c in (1, 2):
            x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"b{b}c{c}")(x)
        x = keras.layers.MaxPooling2D(name=f"b{b}pool")(x) if b < 3 else x
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))




# -- the contract, over every registered method --------------------------------------------
@pytest.mark.parametrize("method", methods())
@pytest.mark.parametrize("kind", ["single", "batch1", "odd_batch_tensor", "uint8"])
def test_contract(gap_model, vit_model, images32, method, kind):
    x = {
        "single": images32[0],
        "batch1": images32[:1],
        "odd_batch_tensor": tf.constant(images32[:3]),
        "uint8": (images32[:3] * 255).astype(np.uint8),
    }[kind]
    model = model_for(method, gap_model, vit_model)
    # uint8 images for a float model with no range declared are fed as they are: a warning.
    expected = pytest.warns(ValueRangeWarning) if kind == "uint8" else contextlib.nullcontext()
    with expected:
        exp = explain(model, x, method=method, batch_size=2, **FAST_OPTIONS.get(method, {}))
    n = 1 if kind in ("single", "batch1") else 3
    assert exp.maps.shape == (n, 32, 32) and exp.maps.dtype == np.float32
    assert np.isfinite(exp.maps).all() and exp.maps.min() >= 0 and exp.maps.max() <= 1
    assert exp.targets.shape == (n,) and exp.scores.shape == (n,)
    assert exp.raw.ndim == 3 and len(exp.raw) == n
    assert exp.overlay().shape == (n, 32, 32, 3) and exp.overlay().dtype == np.uint8
    assert exp.single == (kind == "single")


@pytest.mark.parametrize("method", methods())
def test_batch_composition_does_not_change_maps(gap_model, vit_model, images32, method):
    """An image's map is the same alone, in a batch, and in a padded last batch."""
    options = FAST_OPTIONS.get(method, {})
    model = model_for(method, gap_model, vit_model)
    together = explain(model, images32, method=method, batch_size=3, **options)
    alone = explain(model, images32[4], method=method, **options)
    np.testing.assert_allclose(alone.maps[0], together.maps[4], atol=2e-4)
    assert alone.targets[0] == together.targets[4]


# -- identities -----------------------------------------------------------------------------
def test_gradcam_equals_cam_on_gap_dense_head(gap_model, images32):
    """On GAP + dense, d logit_c / dA_k = w_kc / (h*w): Grad-CAM = CAM / (h*w) exactly."""
    for targets in (None, [0, 1, 2, 3, 0]):
        g = explain(gap_model, images32, method="gradcam", targets=targets)
        c = explain(gap_model, images32, method="cam", targets=targets)
        h, w = g.raw.shape[1:]
        np.testing.assert_allclose(g.raw * h * w, c.raw, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(g.maps, c.maps, atol=1e-4)


def test_gap_head_identities(gap_model, images32):
    """With a GAP + dense head the gradient is constant over space (w_kc / hw), so
    XGrad-CAM = Grad-CAM and Grad-CAM++ (normalised alphas become 1/hw) = Layer-CAM."""
    maps = {
        m: explain(gap_model, images32, method=m).raw
        for m in ("gradcam", "xgradcam", "gradcam++", "layercam")
    }
    np.testing.assert_allclose(maps["xgradcam"], maps["gradcam"], rtol=1e-4, atol=1e-6)
    scale = maps["layercam"].max(axis=(1, 2), keepdims=True)
    peak = maps["gradcam++"].max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(maps["gradcam++"] / peak, maps["layercam"] / scale, atol=1e-4)


def test_integrated_gradients_completeness(gap_model, images32):
    """Attributions sum to f(x) - f(baseline) for the target logit, within 1%."""
    exp = explain(gap_model, images32, method="integrated_gradients", steps=256)
    runner = runner_for(gap_model)
    f_x = np.take_along_axis(runner.forward_fn(images32).numpy(), exp.targets[:, None], 1)[:, 0]
    f_0 = np.take_along_axis(
        runner.forward_fn(np.zeros_like(images32)).numpy(), exp.targets[:, None], 1
    )[:, 0]
    total = exp.attributions.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(total, f_x - f_0, rtol=0.01, atol=1e-4)
    np.testing.assert_allclose(exp.raw.sum(axis=(1, 2)), total, rtol=1e-4)


def test_explains_logits_not_softmax(gap_model, images32):
    exp = explain(gap_model, images32)
    probs = gap_model(images32, training=False).numpy()
    assert exp.score_kind == "logits"
    np.testing.assert_allclose(exp.scores, probs[np.arange(5), exp.targets], rtol=1e-4)
    np.testing.assert_array_equal(exp.targets, probs.argmax(axis=1))
    np.testing.assert_allclose(tf.nn.softmax(exp.logits).numpy(), probs, atol=1e-5)


def test_explicit_targets_change_the_map(gap_model, images32):
    a = explain(gap_model, images32, targets=0)
    b = explain(gap_model, images32, targets=[1] * 5)
    assert (a.targets == 0).all() and (b.targets == 1).all()
    assert not np.allclose(a.raw, b.raw)


# -- peers --------------------------------------------------------------------------------
tf_keras_vis = pytest.importorskip("tf_keras_vis")


@pytest.mark.parametrize("ours,theirs", [("gradcam", "Gradcam"), ("gradcam++", "GradcamPlusPlus")])
def test_agrees_with_tf_keras_vis_on_vgg_like(ours, theirs):
    from tf_keras_vis import gradcam as tkv
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    model = _vgg_like()
    x = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    exp = explain(model, x, method=ours)
    assert exp.layer == "b3c2"
    peer = getattr(tkv, theirs)(model, model_modifier=ReplaceToLinear(), clone=True)
    cams = peer(
        CategoricalScore(exp.targets.tolist()),
        x,
        penultimate_layer="b3c2",
        expand_cam=False,
        normalize_cam=False,
    )
    for i in range(4):
        assert _corr(exp.raw[i], np.asarray(cams[i])) > 0.99


def test_gradcam_follows_the_cam_identity_on_a_resnet():
    """On ResNet50 (GAP + dense head, skip connections) Grad-CAM must equal CAM; the identity,
    not a peer, is the reference (tf-keras-vis 0.8.7 correlates ~0.5 here under Keras 3)."""
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(96, 96, 3), classes=6)
    x = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    g = explain(model, x, method="gradcam")
    c = explain(model, x, method="cam", targets=g.targets)
    assert g.layer == "conv5_block3_out" and g.score_kind == "logits"
    for i in range(2):
        assert _corr(g.raw[i], c.raw[i]) > 0.999


# -- guided backprop ----------------------------------------------------------------------
def test_guided_backprop_is_applied_and_model_untouched(images32):
    model = _vgg_like()
    weights = [w.copy() for w in model.get_weights()]
    before = model(images32).numpy()
    sal = explain(model, images32, method="saliency")
    guided = explain(model, images32, method="guided_backprop")
    gg = explain(model, images32, method="guided_gradcam")
    # The guided rule zeroes negative gradients at every ReLU: a different, sparser signal.
    assert _corr(sal.attributions, guided.attributions) < 0.95
    assert not np.allclose(gg.attributions, guided.attributions)
    # ...and the model is exactly as it was.
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(before, model(images32).numpy())
    assert model.layers[-1].activation is keras.activations.softmax
    # Plain saliency afterwards is unaffected by the guided runner.
    np.testing.assert_allclose(explain(model, images32, method="saliency").maps, sal.maps)


def test_guided_backprop_gradient_rule():
    """A one-layer check: guided backprop = grad * (pre-activation > 0) * (upstream > 0)."""
    inputs = keras.Input((2, 2, 1))
    h = keras.layers.Conv2D(2, 1, activation="relu", name="c")(inputs)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, out)
    conv, dense = model.get_layer("c"), model.layers[-1]
    conv.set_weights([np.array([1.0, -1.0]).reshape(1, 1, 1, 2), np.zeros(2)])
    dense.set_weights([np.array([[1.0, 0], [1.0, 0]] * 4), np.zeros(2)])
    dense.kernel.assign(np.array([[1.0, 0.0], [-2.0, 0.0]] * 4))
    x = np.array([[[[1.0], [-1.0]], [[2.0], [-3.0]]]], np.float32)
    guided = explain(model, x, method="guided_backprop", targets=0).attributions[0, ..., 0]
    plain = explain(model, x, method="saliency", targets=0).attributions[0, ..., 0]
    # Positive pixels go through channel 0 (upstream weight +1): gradient 1 for both rules.
    # Negative pixels go through channel 1 (upstream -2 * d/dx(-x) = +2 in plain backprop),
    # but guided backprop blocks the negative upstream gradient -2 at that ReLU.
    np.testing.assert_allclose(plain, [[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_allclose(guided, [[1.0, 0.0], [1.0, 0.0]])


# -- compiled once ---------------------------------------------------------------------------
def test_second_call_does_not_retrace(gap_model, images32):
    """Every compiled kernel is traced once per input shape, whatever the number of calls."""
    runner = runner_for(gap_model, gap_model.get_layer("block3_relu1"))
    calls = [("gradcam", {}), ("gradcam++", {}), ("scorecam", {}), ("occlusion", {"patch": 8})]
    for method, options in calls:
        explain(gap_model, images32, method=method, batch_size=2, **options)
    counts = {name: k.experimental_get_tracing_count() for name, k in runner._kernels.items()}
    counts["layer_grads"] = runner.layer_grads_fn.experimental_get_tracing_count()
    for method, options in calls:
        explain(gap_model, images32[::-1], method=method, batch_size=2, **options)
    assert counts == {
        **{name: k.experimental_get_tracing_count() for name, k in runner._kernels.items()},
        "layer_grads": runner.layer_grads_fn.experimental_get_tracing_count(),
    }
    assert set(counts) >= {"cam:gradcam", "cam:gradcam++", "scorecam:masked"}


# -- layers -----------------------------------------------------------------------------------
def test_layer_by_name_object_and_nested_path():
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3))
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(base(x))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    default = explain(model, images)
    assert default.layer == f"{base.name}/out_relu"
    by_path = explain(model, images, layer=f"{base.name}/out_relu")
    by_obj = explain(model, images, layer=base.get_layer("out_relu"))
    np.testing.assert_allclose(default.raw, by_path.raw)
    np.testing.assert_allclose(default.raw, by_obj.raw)
    seq = keras.Sequential(
        [
            inputs,
            keras.layers.Rescaling(2.0, offset=-1.0),
            base,
            keras.layers.GlobalAveragePooling2D(),
            model.layers[-1],
        ]
    )
    np.testing.assert_allclose(explain(seq, images).raw, default.raw, rtol=1e-4, atol=1e-6)


def test_wrong_layer_name_lists_candidates(gap_model, images32):
    with pytest.raises(LayerError, match=r"No layer named 'block3_rleu1'.*block3_relu1"):
        explain(gap_model, images32, layer="block3_rleu1")
    with pytest.raises(LayerError, match="not a spatial"):
        explain(gap_model, images32, layer="logits")
    with pytest.raises(LayerError, match="not part of model"):
        explain(gap_model, images32, layer=keras.layers.Dense(2))


def test_cam_requires_gap_dense_head(images32):
    model = _vgg_like()
    with pytest.raises(LayerError, match="GlobalAveragePooling2D \\+ Dense"):
        explain(model, images32, method="cam")


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "images,match",
    [
        (np.zeros((32, 32)), "one image of shape"),
        (np.zeros((2, 28, 28, 3)), "expects"),
        (np.zeros((2, 32, 32, 1)), "channels"),
        (np.full((1, 32, 32, 3), np.nan), "NaN"),
        (np.zeros((0, 32, 32, 3)), "empty"),
        (np.array(["a"]), "numbers"),
    ],
)
def test_bad_images(gap_model, images, match):
    with pytest.raises(InputError, match=match):
        explain(gap_model, images)


def test_bad_arguments(gap_model, images32):
    with pytest.raises(InputError, match=r"Available methods: .*gradcam"):
        explain(gap_model, images32, method="gradcm")
    with pytest.raises(InputError, match=r"unknown option\(s\) stepz.*steps"):
        explain(gap_model, images32, method="integrated_gradients", stepz=3)
    with pytest.raises(InputError, match=r"in \[0, 3\]"):
        explain(gap_model, images32, targets=7)
    with pytest.raises(InputError, match="one int or 5 ints"):
        explain(gap_model, images32, targets=[1, 2])
    with pytest.raises(InputError, match="do not pass `layer`"):
        explain(gap_model, images32, method="saliency", layer="block3_relu1")
    with pytest.raises(InputError, match="positive int"):
        explain(gap_model, images32, batch_size=0)


def test_constant_gradient_gives_zero_map_and_warning(images32):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="zeros")(x))
    for method in ("gradcam", "saliency"):
        with pytest.warns(RuntimeWarning, match="all zero"):
            exp = explain(model, images32, method=method)
        assert np.all(exp.maps == 0) and np.isfinite(exp.maps).all()


# -- known answer on real training --------------------------------------------------------------
def test_gradcam_peaks_inside_the_object(trained_shapes):
    """On the shapes test split, Grad-CAM's peak falls on the object for most images."""
    test = trained_shapes.splits.test_arrays
    model = trained_shapes.model
    exp = explain(model, test.images[:200], method="gradcam")
    inside = pointing_game(exp.maps, test.masks[:200])  # strict: no tolerance
    print(f"Grad-CAM peak on the object: {inside.mean():.3f}")
    assert trained_shapes.report["accuracy"] > 0.85
    # Measured 0.72-0.84 over data and training variations; a map that ignores the object
    # peaks on it about as often as the object covers the image (about 10%).
    assert inside.mean() > 0.6, inside.mean()
    assert inside.mean() > 4 * test.masks[:200].mean()


def test_plot_and_save(gap_model, images32, tmp_path):
    exp = explain(gap_model, images32[:2], class_names=["a", "b", "c", "d"])
    path = exp.save(tmp_path / "exp.png")
    assert path.is_file() and path.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["exp.png"]  # no temp file left behind
    assert "(" in exp.label(0) and exp.label(0).split()[0] in "abcd"


def test_agrees_with_xplique(gap_model, images32):
    """xplique 2.0.2 (which follows the CAM identity) explains a logits model; ours skips the
    softmax of the same network itself."""
    xplique = pytest.importorskip("xplique.attributions")
    logits_model = keras.Model(gap_model.inputs, gap_model.get_layer("logits").output)
    for ours, theirs in (("gradcam", xplique.GradCAM), ("gradcam++", xplique.GradCAMPP)):
        exp = explain(gap_model, images32, method=ours)
        peer = theirs(logits_model, conv_layer="block3_relu1")
        maps = np.asarray(peer.explain(images32, tf.one_hot(exp.targets, 4)))
        for i in range(len(images32)):
            assert _corr(exp.maps[i], maps[i].reshape(32, 32)) > 0.99


def test_explained_models_are_freed(images32):
    """The compiled kernels live on the model, so explaining a model does not keep it alive."""
    import gc
    import weakref

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, name="c")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    explain(model, images32, method="gradcam")
    explain(model, images32, method="guided_backprop")
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_notebooks_display_explanations_as_pictures(gap_model, images32):
    png = explain(gap_model, images32[:2])._repr_png_()
    assert png.startswith(b"\x89PNG")


def test_several_methods_in_one_call_equal_separate_calls(gap_model, images32):
    names = ["gradcam", "gradcam++", "layercam", "xgradcam", "cam", "saliency", "scorecam"]
    together = explain(gap_model, images32, method=names, targets=[0, 1, 2, 3, 0])
    assert [e.method for e in together] == names
    for name, exp in zip(names, together, strict=True):
        alone = explain(gap_model, images32, method=name, targets=[0, 1, 2, 3, 0])
        np.testing.assert_allclose(exp.raw, alone.raw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(exp.maps, alone.maps, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(exp.targets, alone.targets)
    runner = runner_for(gap_model, gap_model.get_layer("block3_relu1"))
    assert "shared:gradcam,gradcam++,layercam,xgradcam,cam" in runner._kernels
    with pytest.raises(InputError, match="at least one method"):
        explain(gap_model, images32, method=[])


# -- Grad-CAM++ follows the authors' final reference code ------------------------------------
def _gradcam_pp_reference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The authors' final formula in numpy, for (h, w, K) activations and gradients: alphas
    normalised over the positions with a positive gradient only."""
    total = a.sum(axis=(0, 1), keepdims=True)
    denom = 2 * g**2 + total * g**3
    alpha = g**2 / np.where(denom != 0, denom, 1.0)
    positive = np.maximum(g, 0.0)
    norm = np.where(positive > 0, alpha, 0.0).sum(axis=(0, 1), keepdims=True)
    alpha = alpha / np.where(norm != 0, norm, 1.0)
    return (positive * alpha).sum(axis=(0, 1))


def test_gradcam_plus_plus_weight_stays_positive_in_the_smallest_case():
    """One channel, A = [5, 5], g = [0.1, -0.25]: normalising alpha over every position gave
    w = -0.02 and an empty map; over the positive-gradient positions it is 0.1."""
    from xai_keras.explainers.cam import GradCamPlusPlus

    a = tf.constant([[[[5.0], [5.0]]]])  # (1, 1, 2, 1)
    g = tf.constant([[[[0.1], [-0.25]]]])
    w = GradCamPlusPlus.channel_weights(None, a, g, tf.constant([0])).numpy()
    np.testing.assert_allclose(w, [[0.1]], rtol=1e-6)


def test_gradcam_plus_plus_equals_the_reference_formula_and_is_never_negative():
    from xai_keras.explainers.cam import GradCamPlusPlus

    rng = np.random.default_rng(4)
    a = np.maximum(rng.normal(size=(6, 5, 5, 16)), 0).astype(np.float32)  # post-ReLU
    g = rng.normal(scale=0.3, size=(6, 5, 5, 16)).astype(np.float32)
    w = GradCamPlusPlus.channel_weights(None, tf.constant(a), tf.constant(g), None).numpy()
    assert (w >= 0).all()
    for i in range(6):
        np.testing.assert_allclose(w[i], _gradcam_pp_reference(a[i], g[i]), rtol=1e-4, atol=1e-7)


def test_the_catalogue_describes_every_registered_method_and_refuses_a_mismatch():
    from xai_keras.catalogue import CATALOGUE
    from xai_keras.explainers import METHODS
    from xai_keras.explainers.base import register
    from xai_keras.explainers.gradients import Saliency

    assert list(CATALOGUE) == list(METHODS)  # `xai-keras methods` lists exactly the registry
    for name, cls in METHODS.items():
        info = CATALOGUE[name]
        assert info.family == cls.family and ("layer" in info.needs) == cls.uses_layer, name
        assert info.summary and info.best_for, name
    with pytest.raises(RuntimeError, match="no entry in xai_keras.catalogue"):
        register("my_saliency")(type("MySaliency", (Saliency,), {}))
    with pytest.raises(RuntimeError, match="disagrees with its catalogue entry on: family, layer"):
        register("gradcam")(type("NotACam", (Saliency,), {}))
    assert "my_saliency" not in METHODS and METHODS["gradcam"].family == "cam"
