"""Token models first-class: KerasHub's composite layers, prefix tokens, class-token heads and
the attached preprocessor (small KerasHub classifiers built from their constructors)."""

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

pytest.importorskip("keras_hub")

from scripts.zoo import kerashub  # noqa: E402
from xai_keras import Session, explain  # noqa: E402
from xai_keras.errors import InputError, LayerError  # noqa: E402
from xai_keras.explainers.layers import layer_shape, resolve_layer, token_layout, walk_layers  # noqa: E402

RAW = np.random.default_rng(0).integers(0, 256, (3, 45, 61, 3)).astype("uint8")


@pytest.fixture(scope="module")
def vit():
    return kerashub.build("vit")


@pytest.fixture(scope="module")
def deit():
    return kerashub.build("deit")


def _block(model, name: str):
    return next(lay for p, lay in walk_layers(model, inner=True) if p.endswith(name))


def test_blocks_inside_an_encoder_are_reachable_by_path_name_and_object(vit):
    path = f"{vit.backbone.name}/vit_encoder/transformer_block_1"  # names count up per process
    block = _block(vit, "transformer_block_1")
    assert resolve_layer(vit, path) == (path, block)
    assert resolve_layer(vit, "transformer_block_1") == (path, block)
    assert resolve_layer(vit, block) == (path, block)
    with pytest.raises(LayerError, match="ambiguous.*transformer_block_1/ln_1"):
        resolve_layer(vit, "ln_1")
    by_path = explain(vit, RAW, layer=path)
    by_object = explain(vit, RAW, layer=block)
    np.testing.assert_array_equal(by_path.raw, by_object.raw)


def test_prefix_tokens_are_read_from_the_model_not_the_count(vit, deit):
    """ViT: a class token before an 8x8 patch grid; DeiT: class and distillation tokens (66
    tokens: no square, nor a square plus one); DINOv2: a class token and register tokens."""
    registers = kerashub.build("dinov2_registers")
    cases = (
        (vit, "transformer_block_1", 1),
        (deit, "transformer_block_1", 2),
        (registers, "encoder/layers_0", 1 + registers.backbone.num_register_tokens),
    )
    for model, name, prefix in cases:
        block = _block(model, name)
        tokens, width = layer_shape(model, block)[1:]
        side = int(np.sqrt(tokens - prefix))
        assert token_layout(model, block, tokens) == (prefix, side, side)

        def by_hand(t, k=prefix, s=side, c=width):
            return tf.reshape(t[:, k:], (-1, s, s, c))

        auto = explain(model, RAW, layer=block)
        assert auto.raw.shape == (len(RAW), side, side)
        np.testing.assert_allclose(auto.raw, explain(model, RAW, layer=block, reshape=by_hand).raw)


@pytest.mark.parametrize("name", ["vit", "deit", "dinov2_registers"])
def test_class_token_head_default_is_the_input_of_the_last_block(name):
    """The head reads the class token after the final LayerNorm: the later layers' patch
    tokens get no gradient, so the default must be the residual stream entering the last
    block, and every gradient CAM gives a non-zero map there."""
    model = kerashub.build(name)
    exps = explain(model, RAW, method=["gradcam", "gradcam++", "layercam"])
    for exp in exps:
        assert np.isfinite(exp.maps).all() and (exp.maps.max(axis=(1, 2)) > 0).all()
    first = exps[0]
    assert first.layer.endswith(("transformer_block_1", "encoder/layers_0"))
    assert "prefix token" in first.layer_reason
    last_output = "/".join(first.layer.split("/")[:-1])  # the encoder: read after the last block
    with pytest.warns(RuntimeWarning, match="does not depend on the patch tokens"):
        explain(model, RAW, layer=last_output)


@pytest.mark.parametrize("name", ["vit", "deit", "dinov2_registers", "swin", "resnet"])
def test_a_vision_transformer_is_explained_with_attention_by_default(name):
    """Grad-CAM on a ViT's tokens did not reliably beat random (see `default_method`): models
    whose attention is Keras MultiHeadAttention get Chefer's method unless a layer is named;
    CNNs, and Swin (its own window attention), keep Grad-CAM. The reason is on the result."""
    model = kerashub.build(name)
    exp = explain(model, RAW[:2])
    expected = "chefer" if name in ("vit", "deit", "dinov2_registers") else "gradcam"
    assert exp.method == expected and np.isfinite(exp.maps).all()
    assert ("vision transformer" in exp.method_reason) == (expected == "chefer")
    assert explain(model, RAW[:2], method="saliency").method_reason == "given."
    if expected == "chefer":
        path = explain(model, RAW[:2], method="gradcam").layer
        assert explain(model, RAW[:2], layer=path).method == "gradcam"


def test_a_tuple_output_layer_is_explained_through_its_sequence(deit):
    encoder = _block(deit, "deit_encoder")  # returns (sequence, hidden states, attention)
    with pytest.warns(RuntimeWarning, match="prefix token"):
        exp = explain(deit, RAW, layer=encoder)
    assert exp.raw.shape == (len(RAW), 8, 8)


@pytest.mark.parametrize("name", ["vit", "resnet"])
def test_raw_images_are_explained_as_predict_sees_them(name):
    model = kerashub.build(name)
    probs = scipy.special.softmax(model.predict(RAW, verbose=0), axis=1)
    exp = explain(model, RAW, method="saliency")
    np.testing.assert_array_equal(exp.targets, probs.argmax(1))
    np.testing.assert_allclose(exp.scores, probs.max(1), atol=1e-5)
    converter = model.preprocessor.image_converter
    np.testing.assert_allclose(exp.value_range.scale, np.ravel(converter.scale))
    np.testing.assert_allclose(exp.value_range.offset, np.ravel(converter.offset))
    # The pictures show the image the model saw, back in pixels: the raw image resized.
    pixels = exp.value_range.to_pixels(exp.images)
    assert pixels.shape[1:3] == model.input.shape[1:3] and 0 <= pixels.min() < pixels.max() <= 255
    # Preprocessing by hand, as predict does (a tf.data map), and skipping the model's own
    # gives the same maps.
    mapped = tf.data.Dataset.from_tensor_slices(RAW).batch(2).map(model.preprocessor)
    inputs = np.concatenate(list(mapped.as_numpy_iterator()))
    by_hand = explain(Session(model, preprocessor=False), np.asarray(inputs), method="saliency")
    np.testing.assert_allclose(by_hand.maps, exp.maps, atol=1e-4)


def test_datasets_go_through_the_preprocessor_too(vit):
    ds = tf.data.Dataset.from_tensor_slices(RAW).batch(2)
    np.testing.assert_allclose(explain(vit, ds).maps, explain(vit, RAW).maps, atol=1e-6)


def test_preprocessor_errors_are_one_line(vit):
    with pytest.raises(InputError, match="shape"):
        explain(Session(vit, preprocessor=False), RAW)
    with pytest.raises(InputError, match="raw images"):
        explain(vit, RAW[..., 0, 0])
    with pytest.raises(InputError, match="no attached preprocessor"):
        Session(kerashub.build("vit", preprocessor=False), preprocessor=True)


def test_the_cli_explains_a_saved_kerashub_model_from_pixels(vit, tmp_path, capsys):
    """The CLI reads 0-255 pixels for a model that preprocesses itself (scaling them first
    gave a black picture and another class) and loads a saved KerasHub model."""
    import matplotlib.pyplot as plt

    from xai_keras.cli import main
    from xai_keras.cli._images import read_images

    path, image = tmp_path / "vit.keras", tmp_path / "photo.png"
    vit.save(path)
    plt.imsave(image, RAW[0])
    assert main(["explain", "--model", str(path), str(image), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "photo_chefer.png").exists()  # a ViT's default method
    pixels = read_images([image], tuple(vit.input.shape[1:]), None)
    probs = scipy.special.softmax(vit.predict(pixels, verbose=0), axis=1)[0]
    assert f"class {probs.argmax()} ({probs.max():.2f})" in capsys.readouterr().out
