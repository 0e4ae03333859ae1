"""TensorBoard: the explain callback during fit, and explanation summaries read back."""

from __future__ import annotations

from collections import defaultdict

import keras
import numpy as np
import tensorflow as tf

from xai_keras import explain
from xai_keras.config import ModelConfig
from xai_keras.explainers.base import runner_for
from xai_keras.models import build_cnn
from xai_keras.tensorboard import ExplainCallback, log_explanation


def _events(log_dir) -> dict[str, list]:
    """tag -> [(step, value)] for every summary under log_dir."""
    found = defaultdict(list)
    for f in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            for v in event.summary.value:
                found[v.tag].append((event.step, v))
    return found


def _descriptions(log_dir) -> dict[str, str]:
    """tag -> the summary's description (TensorBoard's caption of the card)."""
    found = {}
    for f in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            for v in event.summary.value:
                if v.metadata.summary_description:
                    found.setdefault(v.tag, v.metadata.summary_description)
    return found


def _image_shape(value) -> tuple:
    """(H, W, C) of an image summary's first image (TF2 stores [w, h, png...] as strings)."""
    data = tf.make_ndarray(value.tensor)
    return tuple(tf.image.decode_png(data[2]).shape)


def test_callback_logs_each_method_every_n_epochs_without_retracing(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_cnn(ModelConfig(filters=[8, 16]), (32, 32, 3), 3)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(64, 32, 32, 3)).astype("float32"), rng.integers(0, 3, 64)
    callback = ExplainCallback(
        x[:5],
        ("gradcam", "saliency"),
        log_dir=tmp_path,
        every_n_epochs=2,
        targets=y[:5],
        class_names=["a", "b", "c"],
    )
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[callback])
    events = _events(tmp_path)
    for method in ("gradcam", "saliency"):
        steps = [step for step, _ in events[f"explain/{method}"]]
        assert steps == [1, 3]  # epochs 2 and 4
        value = events[f"explain/{method}"][0][1]
        assert len(tf.make_ndarray(value.tensor)) == 2 + 5  # width, height, then 5 PNGs
        assert _image_shape(value) == (32, 32, 3)
        text = tf.make_ndarray(events[f"explain/{method}/info"][0][1].tensor).item().decode()
        assert "| 0 |" in text and method in text
        # The image card's caption names the method and each sample's class and score.
        caption = _descriptions(tmp_path)[f"explain/{method}"]
        assert caption.startswith(f"**{method}**") and "sample 4: " in caption
        assert f"sample 0: {['a', 'b', 'c'][y[0]]} (" in caption
    runner = runner_for(model, model.get_layer("block2_relu1"))
    assert runner._kernels["cam:gradcam"].experimental_get_tracing_count() == 1


def test_no_event_file_before_a_logged_epoch(tmp_path):
    model = build_cnn(ModelConfig(filters=[8]), (16, 16, 3), 2)
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.zeros((4, 16, 16, 3), "float32")
    callback = ExplainCallback(x[:2], log_dir=tmp_path / "never", every_n_epochs=5)
    model.fit(x, np.zeros(4), epochs=1, verbose=0, callbacks=[callback])
    assert not (tmp_path / "never").exists()


def test_log_explanation_with_a_name(gap_model, images32, tmp_path):
    exp = explain(gap_model, images32[:3], method="gradcam++")
    log_explanation(tmp_path, exp, step=7, name="val/gradcam++")
    events = _events(tmp_path)
    assert [s for s, _ in events["explain/val/gradcam++"]] == [7]
    assert "explain/val/gradcam++/info" in events


def test_callback_takes_the_tf_data_validation_set_and_its_labels(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_cnn(ModelConfig(filters=[8]), (16, 16, 3), 3)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(40, 16, 16, 3)).astype("float32"), rng.integers(0, 3, 40)
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # what fit's validation gets
    names = ["a", "b", "c"]
    callback = ExplainCallback(
        val,
        ("gradcam", "saliency"),
        log_dir=tmp_path,
        targets="labels",
        class_names=names,
        max_images=5,
    )
    model.fit(val, validation_data=val, epochs=1, verbose=0, shuffle=False, callbacks=[callback])
    events = _events(tmp_path)
    for method in ("gradcam", "saliency"):
        assert [step for step, _ in events[f"explain/{method}"]] == [0]
        value = events[f"explain/{method}"][0][1]
        assert len(tf.make_ndarray(value.tensor)) == 2 + 5  # the first 5 images, across batches
        assert _image_shape(value) == (16, 16, 3)
        text = tf.make_ndarray(events[f"explain/{method}/info"][0][1].tensor).item().decode()
        for i in range(5):  # each row explains the image's label, not its top class
            assert f"| {i} | {names[y[i]]} (" in text
    np.testing.assert_array_equal(callback.images, x[:5])
