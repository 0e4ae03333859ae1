"""See what units learn: activation maximisation, feature maps, filters and top examples."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras.config import ModelConfig
from xai_keras.data import generate_shapes
from xai_keras.errors import InputError, LayerError
from xai_keras.explainers.graph import LayerTaps
from xai_keras.features import (
    TopK,
    colour_matrix,
    feature_maps,
    filters,
    log_features,
    maximize,
    parse_units,
    top_examples,
    top_examples_many,
    units_figure,
    visualize_units,
)
from xai_keras.features import top as top_module
from xai_keras.models import build_cnn

FAST = {"steps": 64, "chunk": 16}


@pytest.fixture(scope="module")
def small_cnn() -> keras.Model:
    """The project's CNN at 32x32, trained for a few seconds on shapes (units that mean
    something, but cheap)."""
    keras.utils.set_random_seed(0)
    data = generate_shapes(600, 32, seed=0)
    model = build_cnn(ModelConfig(filters=[8, 16, 16], dropout=0.0), (32, 32, 3), 5)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.images, data.labels, epochs=4, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def shapes200() -> np.ndarray:
    return generate_shapes(200, 32, seed=3)


def _edge_model(size: int = 24) -> keras.Model:
    """One conv layer set by hand: filter 0 is a vertical-edge Sobel kernel (d/dx) on every
    colour channel, filter 1 the horizontal-edge one (d/dy)."""
    x = inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(2, 3, use_bias=False, name="edges")
    y = keras.layers.ReLU(name="edges_relu")(conv(x))
    y = keras.layers.GlobalAveragePooling2D()(y)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(y))
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)  # rows are y
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[..., 0] = sobel_x[..., None]
    kernel[..., 1] = sobel_x.T[..., None]
    conv.set_weights([kernel])
    return model


def _energy(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared horizontal (d/dx) and vertical (d/dy) differences of the grey image."""
    grey = images.mean(-1)
    ex = (np.diff(grey, axis=2) ** 2).mean(axis=(1, 2))
    ey = (np.diff(grey, axis=1) ** 2).mean(axis=(1, 2))
    return ex, ey


def _tv(images: np.ndarray) -> np.ndarray:
    dy = np.abs(np.diff(images, axis=1)).mean(axis=(1, 2, 3))
    dx = np.abs(np.diff(images, axis=2)).mean(axis=(1, 2, 3))
    return dx + dy


# -- unit specs and errors --------------------------------------------------------------
def test_parse_units():
    assert parse_units("0-3") == [0, 1, 2, 3]
    assert parse_units("0,3,7") == [0, 3, 7]
    assert parse_units(" 0-3, 9 ") == [0, 1, 2, 3, 9]
    assert parse_units("2,2,1-2") == [2, 1]
    assert parse_units(5) == [5] and parse_units([4, 1]) == [4, 1]
    assert parse_units("all", 3) == [0, 1, 2]
    with pytest.raises(InputError, match="'3-1'.*write '1-3'"):
        parse_units("3-1")
    with pytest.raises(InputError, match="neither an index nor a range"):
        parse_units("0-3,x")
    with pytest.raises(InputError, match="0..15"):
        parse_units("10-16", 16)
    with pytest.raises(InputError, match="integers"):
        parse_units([1.5])


def test_bad_layer_and_unit_errors(small_cnn):
    with pytest.raises(LayerError, match="No layer named 'block9'.*block2_relu1"):
        maximize(small_cnn, "block9", 0, steps=1)
    with pytest.raises(InputError, match=r"'block2_relu1' has 16 units, so use 0\.\.15"):
        maximize(small_cnn, "block2_relu1", [3, 16], steps=1)
    with pytest.raises(InputError, match=r"'logits' has 5 units, so use 0\.\.4"):
        top_examples(small_cnn, "logits", 7, np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(LayerError, match="the model's input.*block3_relu1"):
        maximize(small_cnn, "image", 0, steps=1)
    with pytest.raises(InputError, match="objective"):
        maximize(small_cnn, "block2_relu1", 0, steps=1, objective="mean")


# -- activation maximisation ---------------------------------------------------------------
def test_maximisation_beats_every_dataset_image(small_cnn, shapes200):
    units = [0, 1, 2, 3, 4, 5]
    result = maximize(small_cnn, "block2_relu1", units, steps=128)
    assert result.images.shape == (6, 32, 32, 3)
    assert result.images.min() > 0 and result.images.max() < 1
    # The reported activations are the layer's own, recomputed independently here.
    taps = LayerTaps(small_cnn, ["block2_relu1"])
    acts = taps(result.images)[0][0].numpy().mean(axis=(1, 2))  # (image, channel)
    np.testing.assert_allclose(result.activations, acts[np.arange(6), units], rtol=1e-4)
    data = taps(shapes200.images)[0][0].numpy().mean(axis=(1, 2))
    for i, u in enumerate(units):
        assert acts[i, u] > 1.5 * data[:, u].max(), (u, acts[i, u], data[:, u].max())
        # Each unit is raised most by its own image, more than by the other units' images.
        others = [acts[j, u] for j in range(6) if j != i]
        assert acts[i, u] > max(others)


def test_class_logit_maximisation(small_cnn, shapes200):
    result = maximize(small_cnn, "logits", "0-4", **FAST)
    assert result.objective == "unit"
    logits = keras.Model(small_cnn.input, small_cnn.get_layer("logits").output)
    synth, real = logits(result.images).numpy(), logits(shapes200.images).numpy()
    np.testing.assert_allclose(result.activations, synth.diagonal(), rtol=1e-4, atol=1e-4)
    for c in range(5):  # each class's image beats every real image and the other images
        assert synth[c, c] > real[:, c].max()
        assert synth[c, c] == synth[:, c].max()
    # The softmax layer itself is read as its logits (the runner strips it).
    probs = maximize(small_cnn, "probs", [2], **FAST)
    assert probs.activations[0] == pytest.approx(logits(probs.images).numpy()[0, 2], rel=1e-4)


def test_step_is_traced_once_across_calls(small_cnn):
    a = maximize(small_cnn, "block3_relu1", [0, 1, 2], steps=40, chunk=16, seed=1)
    b = maximize(small_cnn, "block3_relu1", [5, 6, 7], steps=24, chunk=16, seed=2)
    assert a.traces == 1 and b.traces == 1  # chunks of 16 and 8 steps, two calls: one trace
    c = maximize(small_cnn, "block3_relu1", [5], steps=8, objective="neuron", value_range=(-1, 1))
    assert c.traces == 1 and c.images.min() > -1 and c.images.max() < 1
    assert c.images.min() < 0  # the range really is (-1, 1)


def test_regularisers_lower_total_variation(small_cnn):
    plain = {"param": "pixel", "steps": 64, "seed": 3, "blur_every": 0}
    rough = maximize(small_cnn, "block2_relu1", [0, 1, 2], **plain)
    smooth = maximize(small_cnn, "block2_relu1", [0, 1, 2], **{**plain, "tv": 1.0, "blur_every": 4})
    assert (_tv(smooth.images) < 0.7 * _tv(rough.images)).all()
    again = maximize(small_cnn, "block2_relu1", [0, 1, 2], **plain)
    np.testing.assert_allclose(again.images, rough.images, atol=1e-5)  # same seed, same images


@pytest.mark.parametrize(("param", "ratio"), [("fourier", 1.5), ("pixel", 5.0)])
def test_edge_filters_give_edges_of_their_orientation(param, ratio):
    model = _edge_model()
    result = maximize(model, "edges_relu", [0, 1], steps=96, param=param)
    ex, ey = _energy(result.images)
    # The Fourier prior also spends some of the image on low-frequency blobs (which carry no
    # orientation), so its ratio is lower than for free pixels; swapped axes would give < 1.
    assert ex[0] > ratio * ey[0], (ex, ey)  # vertical-edge filter: intensity changes along x
    assert ey[1] > ratio * ex[1], (ex, ey)  # horizontal-edge filter: changes along y
    assert (result.activations > 1).all()


def test_grid_and_logging(tmp_path, small_cnn):
    result = maximize(small_cnn, "block3_relu1", [0, 1, 2], steps=8)
    fig = result.grid()
    assert len([ax for ax in fig.axes if ax.images]) == 3
    assert "unit 2" in fig.axes[2].get_title()
    path = result.save(tmp_path / "units.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    log_features(tmp_path / "tb", result, "features/test")
    assert list((tmp_path / "tb").glob("events.out.tfevents*"))


# -- feature maps and filters ---------------------------------------------------------------
def test_feature_map_tiles(small_cnn, shapes200):
    maps = feature_maps(small_cnn, shapes200.images[0])
    assert maps.layers == ["block1_relu1", "block2_relu1", "block3_relu1"]  # one per scale
    for i, (channels, side) in enumerate([(8, 32), (16, 16), (16, 8)]):
        tiles = maps.tiles(i)
        assert tiles.shape == (channels, side, side, 3) and tiles.dtype == np.uint8
        means = maps.maps[i].mean(axis=(0, 1))[maps.order[i]]
        assert (np.diff(means) <= 1e-6).all()  # most active first
    chosen = feature_maps(small_cnn, shapes200.images[:1], layers=["block2_bn1"])
    assert chosen.layers == ["block2_bn1"] and chosen.tiles(0).shape == (16, 16, 16, 3)
    assert len(maps.grid().axes) == 4  # the input, then one mosaic per layer
    with pytest.raises(InputError, match="one image"):
        feature_maps(small_cnn, shapes200.images[:2])
    with pytest.raises(LayerError, match="not a spatial"):
        feature_maps(small_cnn, shapes200.images[0], layers=["logits"])


def test_filter_patches(small_cnn):
    bank = filters(small_cnn)
    assert bank.layers == ["block1_conv1", "block2_conv1", "block3_conv1"]
    assert bank.kinds == ["rgb", "norm", "norm"]
    assert bank.tiles(0).shape == (8, 3, 3, 3)  # one RGB patch per first-layer filter
    assert bank.tiles("block3_conv1").shape == (16, 3, 3, 3)
    # Zero weight is mid-grey in the RGB patches; each patch uses the full range.
    kernel = small_cnn.get_layer("block1_conv1").get_weights()[0]
    f = int(np.abs(kernel).reshape(-1, 8).max(0).argmax())
    patch = bank.tiles(0)[f].astype(float)
    assert patch.max() == 255 or patch.min() == 0
    norm = bank.tiles(1)
    assert (norm.max(axis=(1, 2, 3)) == 255).all()  # each filter's strongest tap is white
    one = filters(small_cnn, ["block2_conv1"])
    assert one.kinds == ["norm"]
    with pytest.raises(LayerError, match="not a 2-D convolution"):
        filters(small_cnn, ["block2_relu1"])


# -- top-activating examples ----------------------------------------------------------------
def test_top_examples_match_brute_force(small_cnn, shapes200):
    images, labels = shapes200.images, shapes200.labels
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(7)  # odd batches
    top = top_examples(small_cnn, "block2_relu1", 3, data, k=5)
    acts = LayerTaps(small_cnn, ["block2_relu1"])(images)[0][0].numpy()[..., 3]
    values = acts.reshape(len(images), -1).max(-1)
    expected = np.argsort(-values, kind="stable")[:5]
    np.testing.assert_array_equal(top.indices, expected)
    np.testing.assert_allclose(top.values, values[expected], rtol=1e-5)
    np.testing.assert_array_equal(top.labels, labels[expected])
    np.testing.assert_array_equal(top.images, images[expected])
    # The strongest position, and the input box it depends on: inside the theoretical
    # receptive field (3x3 conv, 2x2 pool, 3x3 conv: 8 pixels, stride 2) around it.
    for (r, c), (y0, x0, y1, x1), i in zip(top.locations, top.boxes, expected, strict=True):
        assert acts[i, r, c] == pytest.approx(values[i])
        assert 0 < y1 - y0 <= 8 and 0 < x1 - x0 <= 8
        assert y0 <= 2 * r + 1 < y1 and x0 <= 2 * c + 1 < x1
    assert all(p.shape[:2] == (b[2] - b[0], b[3] - b[1]) for p, b in zip(top.patches(), top.boxes))
    fig = top.grid()
    assert sum(len(ax.patches) for ax in fig.axes) == 5  # one box per example


def test_top_examples_dense_layer_and_arrays(small_cnn, shapes200):
    top = top_examples(small_cnn, "logits", 1, shapes200.images[:50], k=3, batch_size=16)
    logits = keras.Model(small_cnn.input, small_cnn.get_layer("logits").output)
    expected = np.argsort(-logits(shapes200.images[:50]).numpy()[:, 1], kind="stable")[:3]
    np.testing.assert_array_equal(top.indices, expected)
    assert top.boxes is None and top.labels is None


def test_streaming_keeps_only_k(small_cnn, shapes200, monkeypatch):
    rng = np.random.default_rng(0)
    tk, everything = TopK(4), []
    for _ in range(6):
        scores = rng.normal(size=10)
        everything.append(scores)
        tk.update(scores, index=np.arange(len(everything) * 10 - 10, len(everything) * 10))
        assert len(tk) <= 4 and len(tk.items["index"]) <= 4
    alls = np.concatenate(everything)
    np.testing.assert_array_equal(tk.items["index"], np.argsort(-alls, kind="stable")[:4])
    # In top_examples, nothing but the top k survives an update, whatever the data size.
    held = []
    update = TopK.update

    def spy(self, values, **items):
        update(self, values, **items)
        held.append(max(len(v) for v in self.items.values()))

    monkeypatch.setattr(top_module.TopK, "update", spy)
    top_examples(small_cnn, "block3_relu1", 0, shapes200.images, k=3, batch_size=20)
    assert len(held) == 10 and max(held) == 3


# -- the one call the CLI uses -----------------------------------------------------------------
def test_visualize_units_writes_everything(tmp_path, small_cnn, shapes200, capsys):
    data = tf.data.Dataset.from_tensor_slices((shapes200.images[:40], shapes200.labels[:40]))
    written = visualize_units(
        small_cnn, "block2_relu1", "0-2", tmp_path / "out", steps=16, dataset=data.batch(16),
        k=4, log_dir=tmp_path / "tb",
    )  # fmt: skip
    assert set(written) == {
        "maximize", "summary", "filters", "feature_maps", "top_examples", "units"
    }  # fmt: skip
    for name, path in written.items():
        assert path.exists() and path.parent == tmp_path / "out"
        if path.suffix == ".png":
            assert path.read_bytes()[:4] == b"\x89PNG", name
    assert "maximise block2_relu1" in capsys.readouterr().err  # the progress bar
    assert list((tmp_path / "tb").glob("events.out.tfevents*"))
    quiet = visualize_units(small_cnn, "logits", [0], tmp_path / "q", steps=4, progress=False)
    assert set(quiet) == {"maximize", "summary", "filters"}
    assert "maximise" not in capsys.readouterr().err


def test_units_figure_pairs_synthetic_and_real(small_cnn, shapes200):
    result = maximize(small_cnn, "block2_relu1", [1, 4], steps=4)
    tops = top_examples_many(small_cnn, "block2_relu1", [4, 1], shapes200.images[:30], k=3)
    fig = units_figure(result, tops, k=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 8  # per unit: the synthetic image, then 3 examples
    assert shown[0].get_title().startswith("unit 1: synthetic")
    assert shown[4].get_title().startswith("unit 4: synthetic")
    assert sum(len(ax.patches) for ax in shown) == 6  # boxes on the real examples only


def test_nested_layers_and_relu_on_the_input(small_cnn):
    inputs = keras.Input((32, 32, 3))
    outer = keras.Model(inputs, small_cnn(inputs), name="outer")
    nested = maximize(outer, "xai_cnn/block2_relu1", [3], steps=8)
    direct = maximize(small_cnn, "block2_relu1", [3], steps=8)
    assert nested.layer == "xai_cnn/block2_relu1"
    np.testing.assert_allclose(nested.images, direct.images, atol=1e-5)
    # A ReLU straight on the input has no layer below it to optimise: the plain ReLU is used.
    x = inputs = keras.Input((16, 16, 3))
    x = keras.layers.ReLU(name="relu_in")(x)
    y = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    result = maximize(keras.Model(inputs, y), "relu_in", [1], steps=8)
    assert result.activations[0] == pytest.approx(result.images[0, ..., 1].mean(), rel=1e-5)


def test_data_set_colours(small_cnn, shapes200):
    colours = colour_matrix(shapes200.images)
    assert colours.shape == (3, 3) and np.linalg.norm(colours, axis=0).max() == pytest.approx(1)
    result = maximize(small_cnn, "block2_relu1", [0], steps=8, colours=colours)
    assert result.settings.colours is not None and result.images.shape == (1, 32, 32, 3)
    with pytest.raises(InputError, match=r"\(3, 3\)"):
        maximize(small_cnn, "block2_relu1", [0], steps=1, colours=np.eye(2))


def test_cli_visualize_writes_the_unit_pictures(trained_shapes, tmp_path, capsys):
    from xai_keras.cli import main

    out = tmp_path / "viz"
    argv = ["visualize", "--model", str(trained_shapes.model_path), "--layer", "block2_relu1"]
    extra = ["--units", "0-3", "--steps", "16", "--dataset", "shapes", "--n", "64", "--k", "2"]
    assert main([*argv, *extra, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("maximize", "filters", "feature_maps", "top_examples", "units"):
        assert f"{name}: " in printed
    assert len(list(out.glob("*.png"))) >= 5
    assert main([*argv, "--units", "0-999", "--out", str(out)]) == 2
    assert "has 64 units, so use 0..63" in capsys.readouterr().err
