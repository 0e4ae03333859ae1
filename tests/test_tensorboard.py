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
    events, captions = _events(tmp_path), _descriptions(tmp_path)
    names = ["a", "b", "c"]
    for method in ("gradcam", "saliency"):
        for k, name in enumerate(names):
            samples = [i for i in range(5) if y[i] == k]
            tag = f"explanations/{method}/{name}"
            if not samples:
                assert tag not in events
                continue
            assert [step for step, _ in events[tag]] == [1, 3]  # epochs 2 and 4
            value = events[tag][0][1]
            assert len(tf.make_ndarray(value.tensor)) == 2 + len(samples)  # width, height, PNGs
            assert _image_shape(value) == (32, 32, 3)
            # The card's caption names the method, the class and each of its samples' score.
            assert captions[tag].startswith(f"**{method}**")
            assert f"explaining class **{name}**; score of sample {samples[0]}: " in captions[tag]
            assert all(f"sample {i}: " in captions[tag] for i in samples)
        text = tf.make_ndarray(events[f"explanations/{method}/info"][0][1].tensor).item().decode()
        assert "| 0 |" in text and method in text
    # The images themselves once, after the explanations in the Images tab's order.
    assert [step for step, _ in events["inputs/explained"]] == [1]
    assert len(tf.make_ndarray(events["inputs/explained"][0][1].tensor)) == 2 + 5
    assert f"sample 0: {names[y[0]]} (" in captions["inputs/explained"]
    images = sorted(tag for tag in events if not tag.endswith("/info"))
    assert images[-1] == "inputs/explained" and images[0].startswith("explanations/")
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
    names = ["cat", "big dog", "a/b", "d"]  # a space and a slash become "_" in the tag
    exp = explain(gap_model, images32[:4], method="gradcam++", targets=[1, 0, 1, 2],
                  class_names=names)
    log_explanation(tmp_path, exp, step=7, name="val/gradcam++")
    events, captions = _events(tmp_path), _descriptions(tmp_path)
    cards = {"big_dog": [0, 2], "cat": [1], "a_b": [3]}
    assert set(events) == {*(f"explanations/val/gradcam++/{c}" for c in cards),
                           "explanations/val/gradcam++/info", "inputs/explained"}
    overlays = exp.overlay()
    for card, samples in cards.items():
        tag = f"explanations/val/gradcam++/{card}"
        assert [s for s, _ in events[tag]] == [7]
        # The card holds exactly its class's overlays, in order, and says their scores.
        pngs = tf.make_ndarray(events[tag][0][1].tensor)[2:]
        decoded = np.stack([tf.image.decode_png(p).numpy() for p in pngs])
        np.testing.assert_array_equal(decoded, overlays[samples])
        name = names[exp.targets[samples[0]]]
        scores = ", ".join(f"sample {i}: {exp.scores[i]:.2f}" for i in samples)
        assert captions[tag] == (
            f"**gradcam++** @ `{exp.layer}` explaining class **{name}**; score of {scores}."
        )


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
        cards = [t for t in events if t.startswith(f"explanations/{method}/") and "info" not in t]
        assert {t.rsplit("/", 1)[1] for t in cards} == {names[k] for k in y[:5]}
        assert all([step for step, _ in events[t]] == [0] for t in cards)
        # the first 5 images, across batches, spread over the cards of their classes
        assert sum(len(tf.make_ndarray(events[t][0][1].tensor)) - 2 for t in cards) == 5
        assert _image_shape(events[cards[0]][0][1]) == (16, 16, 3)
        text = tf.make_ndarray(events[f"explanations/{method}/info"][0][1].tensor).item().decode()
        for i in range(5):  # each row explains the image's label, not its top class
            assert f"| {i} | {names[y[i]]} (" in text
    np.testing.assert_array_equal(callback.images, x[:5])
