"""Every model form users bring: binary sigmoid, multi-label, several outputs or inputs,
regression, score functions, nested and subclassed models, mixed precision, uint8 inputs and
token (ViT-like) layers. Each test checks an identity or a known answer, not just "no error"."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as L

from xai_keras import explain
from xai_keras.errors import InputError, LayerError

SIZE = 32


def _objects(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images with one object each: class 0 a hollow square, class 1 a filled disc (same
    colour, random place and size), with the object's mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = rng.uniform(0, 0.35, (n, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        r = rng.integers(4, 7)
        cy, cx = rng.integers(r + 1, SIZE - r - 1, 2)
        if labels[i]:
            masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            paint = masks[i]
        else:
            masks[i] = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            paint = masks[i] & ~((abs(yy - cy) <= r - 2) & (abs(xx - cx) <= r - 2))
        images[i][paint] = (0.9, 0.8, 0.2)
    return images, labels.astype(np.int32), masks


def _convnet(inp: keras.KerasTensor, prefix: str = "") -> keras.KerasTensor:
    h = inp
    for i, width in enumerate((16, 32)):
        h = L.Conv2D(width, 3, padding="same", activation="relu", name=f"{prefix}conv{i}")(h)
        h = L.MaxPooling2D(name=f"{prefix}pool{i}")(h) if i == 0 else h
    return L.Conv2D(32, 3, padding="same", activation="relu", name=f"{prefix}last")(h)


@pytest.fixture(scope="module")
def binary_task():
    """A trained single-sigmoid-unit classifier and held-out images with object masks."""
    keras.utils.set_random_seed(0)
    x, y, _ = _objects(1600, seed=1)
    inp = keras.Input((SIZE, SIZE, 3))
    out = L.Dense(1, activation="sigmoid", name="out")(L.GlobalAveragePooling2D()(_convnet(inp)))
    model = keras.Model(inp, out)
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    test = _objects(120, seed=2)
    accuracy = model.evaluate(test[0], test[1], verbose=0)[1]
    assert accuracy > 0.9, f"the binary fixture did not learn the task ({accuracy:.2f})"
    return model, test


def _peak_inside(maps: np.ndarray, masks: np.ndarray) -> float:
    flat = maps.reshape(len(maps), -1).argmax(1)
    return float(masks.reshape(len(masks), -1)[np.arange(len(maps)), flat].mean())


def test_binary_maps_point_at_the_object_of_each_class(binary_task):
    model, (x, y, masks) = binary_task
    for cls in (0, 1):
        pick = y == cls
        right = explain(model, x[pick], targets=cls)
        assert right.targets.tolist() == [cls] * int(pick.sum())
        inside = _peak_inside(right.maps, masks[pick])
        assert inside > 0.8, f"class {cls}: Grad-CAM peaks inside its object for {inside:.0%}"
        # The other target's map does not point there: target 0 is the negative logit, so
        # its map differs from class 1's (a peer that explains p for both gets them equal).
        wrong = explain(model, x[pick], targets=1 - cls)
        assert _peak_inside(wrong.maps, masks[pick]) < inside - 0.5


def test_binary_scores_and_cam_identity(binary_task):
    model, (x, _, _) = binary_task
    p = model.predict(x[:6], verbose=0)[:, 0]
    for cls in (0, 1):
        cam, grad = explain(model, x[:6], method=["cam", "gradcam"], targets=cls)
        want = p if cls else 1 - p
        np.testing.assert_allclose(cam.scores, want, atol=1e-5)
        h, w = grad.raw.shape[1:]
        np.testing.assert_allclose(grad.raw * h * w, cam.raw, atol=1e-4 * np.abs(cam.raw).max())
    assert explain(model, x[:6]).targets.tolist() == (p > 0.5).astype(int).tolist()


def _twin(source: keras.Model, build) -> keras.Model:
    """`build()` with `source`'s weights, matched by layer name."""
    twin = build()
    weights = {lay.name: lay.get_weights() for lay in _all_layers(source)}
    for lay in _all_layers(twin):
        if weights.get(lay.name):
            lay.set_weights(weights[lay.name])
    return twin


def _all_layers(model: keras.Model) -> list:
    found = []
    for lay in model.layers:
        found += _all_layers(lay) if isinstance(lay, keras.Model) else [lay]
    return found


def test_nested_model_equals_the_same_network_built_flat(binary_task):
    model, (x, _, _) = binary_task

    def nested():
        base_in = keras.Input((SIZE, SIZE, 3))
        base = keras.Model(base_in, _convnet(base_in), name="base")
        inp = keras.Input((SIZE, SIZE, 3))
        h = L.RandomFlip("horizontal", name="augment")(L.Rescaling(1.0, name="scale")(inp))
        out = L.Dense(1, activation="sigmoid", name="out")(L.GlobalAveragePooling2D()(base(h)))
        return keras.Model(inp, out)

    wrapped = _twin(model, nested)
    before = [lay.name for lay in wrapped.layers]
    flat = explain(model, x[:8], method=["gradcam", "gradcam++", "saliency"], targets=0)
    for layer in (None, "last", "base/last", wrapped.get_layer("base").get_layer("last")):
        got = explain(
            wrapped, x[:8], method=["gradcam", "gradcam++", "saliency"], layer=layer, targets=0
        )
        assert got[0].layer == "base/last"
        for a, b in zip(got, flat, strict=True):
            np.testing.assert_allclose(a.maps, b.maps, atol=1e-5)
    assert [lay.name for lay in wrapped.layers] == before  # not changed, not cloned


def _softmax_model(outputs: int = 3) -> tuple[keras.Model, keras.KerasTensor, keras.KerasTensor]:
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    pooled = L.GlobalAveragePooling2D(name="gap")(_convnet(inp))
    return inp, pooled, L.Dense(outputs, activation="softmax", name="cls")(pooled)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return _objects(6, seed=3)[0]


def _input_grad(fn, x: np.ndarray) -> np.ndarray:
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return tape.gradient(y, x).numpy()


def test_choosing_an_output_by_name_or_index_explains_that_output(images):
    keras.utils.set_random_seed(1)
    inp, pooled, cls = _softmax_model()
    box = L.Dense(4, name="box")(pooled)
    model = keras.Model(inp, {"cls": cls, "box": box})
    alone = explain(keras.Model(inp, box), images, targets=2, head="linear")
    by_name = explain(model, images, output="box", targets=2, head="linear")
    assert by_name.score_kind == "output"
    np.testing.assert_allclose(by_name.maps, alone.maps, atol=1e-6)
    np.testing.assert_allclose(
        by_name.scores, model.predict(images, verbose=0)["box"][:, 2], atol=1e-5
    )
    logits = explain(model, images, output="cls", targets=1)
    assert logits.score_kind == "logits"
    with pytest.raises(InputError, match="'box'.*'cls'"):
        explain(model, images, output="boxes")


def test_regression_and_score_functions_explain_their_exact_gradient(images):
    keras.utils.set_random_seed(2)
    inp, pooled, cls = _softmax_model()
    reg = keras.Model(inp, L.Dense(1, name="value")(pooled))
    exp = explain(reg, images, method="saliency")
    assert exp.targets.tolist() == [0] * len(images)
    np.testing.assert_allclose(exp.scores, reg.predict(images, verbose=0)[:, 0], atol=1e-5)
    want = np.abs(_input_grad(lambda t: reg(t)[:, 0], images)).max(-1)
    np.testing.assert_allclose(exp.maps, want / want.max((1, 2), keepdims=True), atol=1e-5)

    model = keras.Model(inp, cls)
    score = lambda probs: probs[:, 0] - probs[:, 2]  # noqa: E731  (probabilities: nothing stripped)
    exp = explain(model, images, method="saliency", score=score)
    want = np.abs(_input_grad(lambda t: score(model(t)), images)).max(-1)
    np.testing.assert_allclose(exp.maps, want / want.max((1, 2), keepdims=True), atol=1e-5)
    with pytest.raises(InputError, match=r"\[0, 0\]"):
        explain(model, images, score=score, targets=1)


def test_multi_label_sigmoid_uses_independent_probabilities(images):
    keras.utils.set_random_seed(3)
    inp, pooled, _ = _softmax_model()
    model = keras.Model(inp, L.Dense(4, activation="sigmoid")(pooled))
    exp = explain(model, images, method="saliency", targets=3)
    np.testing.assert_allclose(exp.scores, model.predict(images, verbose=0)[:, 3], atol=1e-5)
    assert exp.logits.shape == (len(images), 4) and exp.score_kind == "logits"


def test_multi_input_holds_the_other_inputs(images):
    keras.utils.set_random_seed(4)
    inp, pooled, _ = _softmax_model()
    meta = keras.Input((5,), name="meta")
    mixed = L.Concatenate()([pooled, L.Dense(8, activation="tanh")(meta)])
    model = keras.Model([inp, meta], L.Dense(3, activation="softmax")(mixed))
    rows = np.random.default_rng(0).normal(size=(len(images), 5)).astype(np.float32) * 3
    together = explain(
        model, images, method=["gradcam", "saliency"], inputs={"meta": rows}, targets=1
    )
    for i in range(len(images)):
        alone = explain(
            model, images[i], method=["gradcam", "saliency"], inputs={"meta": rows[i]}, targets=1
        )
        for a, b in zip(together, alone, strict=True):
            np.testing.assert_allclose(a.maps[i], b.maps[0], atol=1e-5)
    probs = model.predict([images, rows], verbose=0)[:, 1]
    np.testing.assert_allclose(together[0].scores, probs, atol=1e-5)
    with pytest.raises(InputError, match="'image'.*'meta'"):
        explain(model, images)
    with pytest.raises(InputError, match="No input 'metadata'"):
        explain(model, images, inputs={"metadata": rows})


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv0 = L.Conv2D(8, 3, padding="same", activation="relu", name="conv0")
        self.conv1 = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")
        self.pool = L.GlobalAveragePooling2D(name="gap")
        self.head = L.Dense(3, name="logits")

    def call(self, x):
        return self.head(self.pool(self.conv1(self.conv0(x))))


def test_subclassed_model_by_layer_name_equals_its_functional_twin(images):
    keras.utils.set_random_seed(5)
    sub = Subclassed()
    sub(images)

    def functional():
        inp = keras.Input((SIZE, SIZE, 3))
        h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv0")(inp)
        h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(h)
        return keras.Model(inp, L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(h)))

    twin = _twin(sub, functional)
    names = ["gradcam", "layercam", "guided_backprop", "integrated_gradients"]
    for layer in ("conv1", sub.conv1):
        got = explain(sub, images, method=names, layer=layer, targets=2)
        want = explain(twin, images, method=names, targets=2)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.maps, b.maps, atol=1e-5)
    assert "call" not in sub.conv1.__dict__  # the recording wrapper is gone again
    with pytest.raises(LayerError, match="conv0, conv1"):
        explain(sub, images)


def test_mixed_precision_gives_float32_maps_equal_to_float32_model(binary_task):
    model, (x, _, _) = binary_task

    def build():
        inp = keras.Input((SIZE, SIZE, 3))
        pooled = L.GlobalAveragePooling2D()(_convnet(inp))
        return keras.Model(
            inp, L.Dense(1, activation="sigmoid", name="out", dtype="float32")(pooled)
        )

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = _twin(model, build)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert half.get_layer("last").compute_dtype == "float16"
    names = ["gradcam", "gradcam++", "layercam", "scorecam", "saliency", "integrated_gradients"]
    for target in (0, 1):
        pairs = zip(
            explain(half, x[:12], method=names, targets=target),
            explain(model, x[:12], method=names, targets=target),
            strict=True,
        )
        for a, b in pairs:
            assert a.maps.dtype == np.float32 and np.isfinite(a.raw).all()
            corr = np.corrcoef(a.maps.ravel(), b.maps.ravel())[0, 1]
            assert corr > 0.99, f"{a.method}: mixed precision map correlates {corr:.4f}"


def test_uint8_model_with_preprocessing_inside(images):
    keras.utils.set_random_seed(7)

    def build(dtype):
        inp = keras.Input((SIZE, SIZE, 3), dtype=dtype)
        h = _convnet(L.Rescaling(1 / 255, name="scale")(inp))
        return keras.Model(
            inp, L.Dense(3, activation="softmax", name="cls")(L.GlobalAveragePooling2D()(h))
        )

    u8 = build("uint8")
    floats = _twin(u8, lambda: build("float32"))
    pixels = (images * 255).astype(np.uint8)
    for name in ("gradcam", "saliency", "integrated_gradients"):
        a, b = (
            explain(u8, pixels, method=name),
            explain(floats, pixels.astype(np.float32), method=name),
        )
        assert a.maps.max() == 1.0
        np.testing.assert_allclose(a.maps, b.maps, atol=1e-5)


def _vit(tokens_side: int = 8, class_token: bool = False, extra: int = 0) -> keras.Model:
    """A small ViT: patch embedding, two attention blocks, mean of the tokens, dense head."""
    inp = keras.Input((SIZE, SIZE, 3))
    patch = SIZE // tokens_side
    t = L.Reshape((tokens_side**2, 16))(L.Conv2D(16, patch, strides=patch, name="patch")(inp))
    if class_token or extra:
        t = L.ZeroPadding1D((int(class_token) + extra, 0), name="cls_token")(t)
    for i in range(2):
        t = L.LayerNormalization(name=f"norm{i}a")(t + L.MultiHeadAttention(2, 8)(t, t))
        mlp = L.Dense(16)(L.Dense(32, activation="gelu")(t))
        t = L.LayerNormalization(name=f"norm{i}b")(t + mlp)
    return keras.Model(inp, L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(t)))


def test_token_layers_are_reshaped_to_the_patch_grid(images):
    keras.utils.set_random_seed(8)
    model = _vit()
    exp = explain(model, images, method=["gradcam", "layercam", "scorecam"])
    assert exp[0].layer == "norm1b" and exp[0].raw.shape == (len(images), 8, 8)

    def by_hand(tokens):
        return tf.reshape(tokens, (-1, 8, 8, tokens.shape[-1]))

    same = explain(model, images, method=["gradcam", "layercam", "scorecam"], reshape=by_hand)
    for a, b in zip(exp, same, strict=True):
        assert np.isfinite(a.maps).all() and a.maps.max() == 1
        np.testing.assert_allclose(a.maps, b.maps, atol=1e-6)

    with_cls = explain(_vit(class_token=True), images)
    assert with_cls.raw.shape == (len(images), 8, 8)
    # 66 tokens: no square, nor a square after one class token; the patch embedding's 8x8
    # grid says that 2 prefix tokens come first, as a hand-made reshape would drop them.
    odd = _vit(extra=2)
    auto = explain(odd, images, layer="norm1b")
    grid = explain(
        odd, images, layer="norm1b", reshape=lambda t: tf.reshape(t[:, 2:], (-1, 8, 8, 16))
    )
    assert auto.raw.shape == grid.raw.shape == (len(images), 8, 8)
    np.testing.assert_allclose(auto.raw, grid.raw, atol=1e-6)
    # 70 prefix tokens (more than any model's class, distillation and register tokens), 134 in
    # all: no grid of the model accounts for them, so the user must reshape.
    many = _vit(extra=70)
    with pytest.raises(LayerError, match="reshape"):
        explain(many, images, layer="norm1b")


def test_tf_data_images_equal_arrays(images):
    keras.utils.set_random_seed(9)
    inp, _, cls = _softmax_model()
    model = keras.Model(inp, cls)
    labels = np.arange(len(images)) % 3
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    np.testing.assert_allclose(explain(model, ds).maps, explain(model, images).maps, atol=1e-6)


def test_maps_do_not_depend_on_the_batch_they_come_in(images):
    """BatchNorm and Dropout run in inference mode: an image's map is the same alone, in any
    batch, and in the padded last batch."""
    from xai_keras.config import ModelConfig
    from xai_keras.models import build_cnn

    keras.utils.set_random_seed(10)
    model = build_cnn(ModelConfig(), (SIZE, SIZE, 3), 3)
    names = ["gradcam", "saliency", "scorecam"]
    batched = explain(model, images, method=names, batch_size=4)
    for i in (0, len(images) - 1):
        alone = explain(model, images[i], method=names)
        for a, b in zip(batched, alone, strict=True):
            np.testing.assert_allclose(a.maps[i], b.maps[0], atol=1e-5)


def test_several_methods_share_layer_and_options_where_they_apply(images):
    keras.utils.set_random_seed(11)
    inp, _, cls = _softmax_model()
    model = keras.Model(inp, cls)
    names = ["gradcam", "integrated_gradients", "scorecam"]
    together = explain(model, images, method=names, layer="conv1", steps=8, max_channels=4)
    separate = [
        explain(model, images, method="gradcam", layer="conv1"),
        explain(model, images, method="integrated_gradients", steps=8),
        explain(model, images, method="scorecam", layer="conv1", max_channels=4),
    ]
    for a, b in zip(together, separate, strict=True):
        assert a.layer == b.layer
        np.testing.assert_allclose(a.maps, b.maps, atol=1e-6)
    with pytest.raises(InputError, match="stpes"):
        explain(model, images, method=names, stpes=8)


def test_cli_explains_a_binary_model_for_either_class(binary_task, tmp_path, capsys):
    import cv2

    from xai_keras.cli import main

    model, (x, _, _) = binary_task
    path = tmp_path / "binary.keras"
    model.save(path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), (x[0][..., ::-1] * 255).round().astype(np.uint8))
    for target in ("0", "1"):
        out = tmp_path / f"out{target}"
        args = ["explain", str(folder), "--model", str(path), "--target", target, "--out", str(out)]
        assert main([*args, "--quiet"]) == 0
        assert (out / "a_gradcam.png").exists()
    assert main(["explain", str(folder), "--model", str(path), "--output", "scores"]) == 2
    assert "No output 'scores'" in capsys.readouterr().err


def test_tiny_gradients_give_the_same_maps_as_normal_ones(images):
    """Scaling the logits by 1e-21 (as wide untrained networks do) must not change any
    normalised map; guided Grad-CAM once multiplied two ~1e-21 factors and underflowed to 0."""
    keras.utils.set_random_seed(12)
    inp, pooled, _ = _softmax_model()
    normal = keras.Model(inp, L.Dense(3, name="logits")(pooled))
    tiny = _twin(normal, lambda: keras.Model(inp, L.Dense(3, name="logits")(pooled)))
    kernel, bias = normal.get_layer("logits").get_weights()
    tiny.get_layer("logits").set_weights([kernel * 1e-21, bias * 1e-21])
    names = ["gradcam", "guided_backprop", "guided_gradcam", "layercam", "saliency"]
    for a, b in zip(
        explain(tiny, images, method=names, targets=1),
        explain(normal, images, method=names, targets=1),
        strict=True,
    ):
        assert a.maps.max() == 1.0, a.method
        np.testing.assert_allclose(a.maps, b.maps, atol=1e-4, err_msg=a.method)
