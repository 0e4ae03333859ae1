"""tf.data wherever images go in: the TensorBoard callback, `evaluate_model`, CLI folders."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras.config import ModelConfig
from xai_keras.errors import InputError
from xai_keras.evaluate import deletion, evaluate_model, insertion, pointing_game
from xai_keras.explainers import explain
from xai_keras.models import build_cnn
from xai_keras.tensorboard import ExplainCallback


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(0)
    model = build_cnn(ModelConfig(filters=[8]), (16, 16, 3), 3)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(24, 16, 16, 3)).astype("float32"), rng.integers(0, 3, 24)
    return model, x, y


# -- ExplainCallback ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layout",
    ["images", "pairs_batched", "triples_with_weights", "dicts", "one_hot"],
)
def test_callback_reads_every_dataset_layout(small, layout, tmp_path):
    model, x, y = small
    w = np.ones(len(x), "float32")
    ds = {
        "images": lambda: tf.data.Dataset.from_tensor_slices(x),
        "pairs_batched": lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(5),
        "triples_with_weights": lambda: tf.data.Dataset.from_tensor_slices((x, y, w)).batch(7),
        "dicts": lambda: tf.data.Dataset.from_tensor_slices({"image": x, "label": y}),
        "one_hot": lambda: tf.data.Dataset.from_tensor_slices((x, np.eye(3)[y])).batch(4),
    }[layout]()
    targets = None if layout == "images" else "labels"
    callback = ExplainCallback(ds, log_dir=tmp_path, targets=targets)
    callback.set_model(model)
    callback.on_train_begin()
    np.testing.assert_array_equal(callback.images, x[:8])  # the first 8 by default
    if targets:
        np.testing.assert_array_equal(callback.targets, y[:8])
    callback.on_epoch_end(0)
    callback.on_train_end()
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_callback_reads_a_reshuffling_dataset_once(small, tmp_path):
    model, x, y = small
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(24, seed=1).batch(8)
    callback = ExplainCallback(ds, log_dir=tmp_path, targets="labels", max_images=3)
    callback.set_model(model)
    callback.on_train_begin()
    first = callback.images.copy()
    callback.on_epoch_end(0)
    callback.on_epoch_end(1)
    np.testing.assert_array_equal(callback.images, first)  # not re-read per epoch
    assert len(first) == 3


def test_callback_errors_name_what_is_wrong(small, tmp_path):
    model, x, y = small
    with pytest.raises(InputError, match='targets="labels" needs labelled images'):
        ExplainCallback(x[:4], log_dir=tmp_path, targets="labels")
    with pytest.raises(InputError, match="max_images"):
        ExplainCallback(x[:4], log_dir=tmp_path, max_images=0)
    with pytest.raises(InputError, match="targets"):
        ExplainCallback(x[:4], log_dir=tmp_path, targets="truth")
    unlabelled = ExplainCallback(
        tf.data.Dataset.from_tensor_slices(x), log_dir=tmp_path, targets="labels"
    )
    unlabelled.set_model(model)
    with pytest.raises(InputError, match="has no labels"):
        unlabelled.on_train_begin()
    wrong = ExplainCallback(
        tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 3), "float32")), log_dir=tmp_path
    )
    wrong.set_model(model)
    with pytest.raises(InputError, match=r"expects \(16, 16, 3\)"):
        wrong.on_train_begin()
    empty = ExplainCallback(tf.data.Dataset.from_tensor_slices(x[:0]), log_dir=tmp_path)
    empty.set_model(model)
    with pytest.raises(InputError, match="empty"):
        empty.on_train_begin()
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_callback_reads_a_class_folder_with_its_names(small, tmp_path):
    import cv2

    model, x, _ = small
    for i, cls in enumerate(["cat", "dog", "eel"]):
        (tmp_path / "val" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "val" / cls / f"{i}.png"), (x[i] * 255).astype("uint8"))
    callback = ExplainCallback(tmp_path / "val", log_dir=tmp_path / "logs", targets="labels")
    callback.set_model(model)
    callback.on_train_begin()
    assert callback.images.shape == (3, 16, 16, 3)
    assert callback.targets.tolist() == [0, 1, 2]
    assert callback.class_names == ["cat", "dog", "eel"]


# -- evaluate_model -----------------------------------------------------------------------------
_TIMING = ("ms_per_image", "forward_equivalents")


def _same(a: dict, b: dict) -> None:
    assert a["n"] == b["n"] and a["accuracy"] == b["accuracy"]
    assert a["methods"].keys() == b["methods"].keys()
    for method, row in a["methods"].items():
        assert row.keys() == b["methods"][method].keys()
        for key, value in row.items():
            if key not in _TIMING:
                assert b["methods"][method][key] == pytest.approx(value, abs=1e-6), (method, key)


def test_evaluate_model_on_a_dataset_equals_arrays_and_the_metrics(trained_shapes):
    model = trained_shapes.model
    test = trained_shapes.splits.test_arrays
    x, y, m = test.images[:30], test.labels[:30], test.masks[:30]
    options = dict(method_names=["gradcam", "saliency", "random"], n=24, n_sanity=2)
    ds = tf.data.Dataset.from_tensor_slices((x, y, m)).batch(7)  # batches cut across n
    from_ds = evaluate_model(model, ds, **options)
    from_arrays = evaluate_model(model, (x, y, m), **options)
    _same(from_ds, from_arrays)
    assert from_ds["n"] == 24 and from_ds["accuracy"] > 0.6
    rows = from_ds["methods"]
    assert {"deletion_auc", "insertion_auc", "pointing_game", "energy_pointing"} <= rows[
        "gradcam"
    ].keys()
    assert "sanity_spearman" in rows["gradcam"] and "sanity_spearman" not in rows["random"]
    assert rows["gradcam"]["pointing_game"] > rows["random"]["pointing_game"]
    # Significance against three seeded random maps, paired by image.
    assert rows["gradcam"]["beats_random"] and rows["gradcam"]["p_deletion"] < 0.01
    assert not rows["random"]["beats_random"]
    assert rows["gradcam"]["wins_insertion"] > 12
    # The same numbers as the metric functions on the arrays.
    exp = explain(model, x[:24], method="gradcam")
    assert rows["gradcam"]["deletion_auc"] == pytest.approx(
        deletion(model, x[:24], exp.maps, exp.targets, batch_size=32).auc.mean(), abs=1e-6
    )
    assert rows["gradcam"]["insertion_auc"] == pytest.approx(
        insertion(model, x[:24], exp.maps, exp.targets, batch_size=32).auc.mean(), abs=1e-6
    )
    assert rows["gradcam"]["pointing_game"] == pytest.approx(
        pointing_game(exp.maps, m[:24], max(1, round(15 / 224 * x.shape[1]))).mean()
    )


def test_evaluate_model_dicts_unbatched_and_label_targets(trained_shapes):
    model = trained_shapes.model
    test = trained_shapes.splits.test_arrays
    x, y, m = test.images[:10], test.labels[:10], test.masks[:10]
    ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y, "mask": m[..., None]})
    options = dict(method_names=["gradcam"], n=10, n_sanity=0, targets="labels")
    _same(evaluate_model(model, ds, **options), evaluate_model(model, (x, y, m), **options))
    # No masks, no labels: faithfulness only, accuracy unknown.
    plain = evaluate_model(
        model, tf.data.Dataset.from_tensor_slices(x).batch(4), ["gradcam"], 10, n_sanity=0
    )
    assert plain["accuracy"] is None and "pointing_game" not in plain["methods"]["gradcam"]


def test_evaluate_model_errors(small):
    model, x, y = small
    with pytest.raises(InputError, match="has no labels"):
        evaluate_model(model, x, targets="labels", n_sanity=0)
    with pytest.raises(InputError, match=r"expects \(16, 16, 3\)"):
        evaluate_model(model, tf.data.Dataset.from_tensor_slices(np.zeros((3, 8, 8, 3))))
    with pytest.raises(InputError, match="labels must be"):
        evaluate_model(model, (x, y + 5), n_sanity=0)
    with pytest.raises(InputError, match="masks"):
        evaluate_model(model, (x, y, np.zeros((24, 8, 8), bool)), n_sanity=0)
    with pytest.raises(InputError, match="empty"):
        evaluate_model(model, tf.data.Dataset.from_tensor_slices((x[:0], y[:0])))
    with pytest.raises(InputError, match="The `data` must be"):
        evaluate_model(model, {"image": x})
    with pytest.raises(InputError, match="Unknown method"):
        evaluate_model(model, x, ["nope"])


# -- CLI image folders --------------------------------------------------------------------------
def test_cli_explain_reads_nested_folders_and_names_outputs_apart(tmp_path):
    import cv2

    from xai_keras.cli import main

    keras.utils.set_random_seed(0)
    build_cnn(ModelConfig(filters=[8]), (16, 16, 3), 3).save(tmp_path / "m.keras")
    pixels = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype("uint8")
    for rel in ("imgs/a/1.png", "imgs/b/1.jpg", "imgs/b/deep/2.webp", "imgs/b/deep/3.TIF"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(tmp_path / rel), pixels)
    (tmp_path / "imgs/.ipynb_checkpoints").mkdir()
    cv2.imwrite(str(tmp_path / "imgs/.ipynb_checkpoints/1-checkpoint.png"), pixels)
    (tmp_path / "imgs/a/._1.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    args = ["explain", "--model", str(tmp_path / "m.keras"), str(tmp_path / "imgs")]
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*_gradcam.png"))
    assert written == [
        "a_1_gradcam.png",
        "b_1_gradcam.png",
        "b_deep_2_gradcam.png",
        "b_deep_3_gradcam.png",
    ]


def test_cli_reads_gray_and_rgba_files_for_any_model_channels(tmp_path):
    import cv2

    from xai_keras.cli import read_images
    from xai_keras.explainers.ranges import resolve_value_range

    gray = np.full((6, 6), 255, "uint8")
    bgra = np.dstack([np.zeros((6, 6, 2), "uint8"), np.full((6, 6, 2), 255, "uint8")])
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    cv2.imwrite(str(tmp_path / "c.png"), bgra)
    files = [tmp_path / "g.png", tmp_path / "c.png"]
    rgba = read_images(files, (4, 4, 4), resolve_value_range("unit"))
    assert rgba.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(rgba[0], 1.0)  # gray -> opaque white
    np.testing.assert_allclose(rgba[1, 0, 0], [1, 0, 0, 1])  # BGRA red -> RGBA red
    assert read_images(files, (4, 4, 1), resolve_value_range("unit")).shape == (2, 4, 4, 1)
    assert read_images(files, (4, 4, 3), resolve_value_range("unit")).shape == (2, 4, 4, 3)
    with pytest.raises(InputError, match="2-channel"):
        read_images(files, (4, 4, 2), resolve_value_range("unit"))
