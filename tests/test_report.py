"""Tests for `xai_keras.report`: numbers against a hand-computed example, files, TensorBoard."""

from __future__ import annotations

import json
import os
import stat
import warnings

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.io import figure_to_png
from xai_keras.report import (
    classification_report,
    confusion_matrix_figure,
    evaluate_accuracy,
    log_report,
    to_markdown,
    write_report,
)

NAMES = ["a", "b", "c"]
# 9 samples, 3 classes. Counted by hand, rows = true, columns = predicted:
#   true a: predicted a, a, b        -> [2, 1, 0]
#   true b: predicted b, b           -> [0, 2, 0]
#   true c: predicted c, c, a, a     -> [2, 0, 2]
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 2, 2, 0, 0]
EXPECTED_CM = [[2, 1, 0], [0, 2, 0], [2, 0, 2]]
# precision = diagonal / column sum (4, 3, 2); recall = diagonal / row sum (3, 2, 4).
EXPECTED = {
    "a": {"precision": 2 / 4, "recall": 2 / 3, "f1": 4 / 7, "support": 3},
    "b": {"precision": 2 / 3, "recall": 2 / 2, "f1": 4 / 5, "support": 2},
    "c": {"precision": 2 / 2, "recall": 2 / 4, "f1": 2 / 3, "support": 4},
}


@pytest.fixture
def report() -> dict:
    return classification_report(Y_TRUE, Y_PRED, NAMES)


def test_report_matches_hand_computed_example(report):
    assert report["confusion_matrix"] == EXPECTED_CM
    assert report["accuracy"] == pytest.approx(6 / 9)
    assert report["num_samples"] == 9
    assert report["class_names"] == NAMES
    assert list(report["per_class"]) == NAMES
    for name, expected in EXPECTED.items():
        got = report["per_class"][name]
        assert got["support"] == expected["support"]
        for key in ("precision", "recall", "f1"):
            assert got[key] == pytest.approx(expected[key]), (name, key)
    assert report["macro_avg"]["precision"] == pytest.approx(13 / 18)
    assert report["macro_avg"]["recall"] == pytest.approx(13 / 18)
    assert report["macro_avg"]["f1"] == pytest.approx((4 / 7 + 4 / 5 + 2 / 3) / 3)


def test_report_is_json_ready_with_python_types(report):
    assert isinstance(report["accuracy"], float)
    assert isinstance(report["num_samples"], int)
    assert all(type(v) is int for row in report["confusion_matrix"] for v in row)
    assert json.loads(json.dumps(report)) == report


def test_report_accepts_numpy_and_integral_float_labels(report):
    from_numpy = classification_report(
        np.array(Y_TRUE, np.int32), np.array(Y_PRED, np.float32), tuple(NAMES)
    )
    assert from_numpy == report


def test_zero_division_gives_zeros_without_warnings():
    # Class "c" has no samples and is never predicted; class "b" is never predicted.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = classification_report([0, 0, 1], [0, 0, 0], NAMES)
    assert report["confusion_matrix"] == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert report["per_class"]["a"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["macro_avg"]["f1"] == pytest.approx(0.8 / 3)
    assert not any(np.isnan(v) for m in report["per_class"].values() for v in m.values())


@pytest.mark.parametrize(
    "y_true, y_pred, names, match",
    [
        ([0, 1, 1], [0, 1], NAMES, r"same length. Received: len\(y_true\)=3, len\(y_pred\)=2"),
        ([0, 3], [0, 1], NAMES, r"`y_true` .* in \[0, 2\] .* Received: y_true\[1\]=3"),
        ([0, 1], [-1, 1], NAMES, r"`y_pred` .* in \[0, 2\] .* Received: y_pred\[0\]=-1"),
        ([[0, 1]], [[0, 1]], NAMES, r"`y_true` argument must be a 1-D array .* shape \(1, 2\)"),
        ([0.5, 1.0], [0, 1], NAMES, r"`y_true` argument must hold integer .* float64"),
        (["a", "b"], [0, 1], NAMES, r"`y_true` argument must hold integer"),
        ([], [], NAMES, r"at least one label"),
        ([0, 1], [0, 1], [], r"`class_names` argument must not be empty"),
        ([0, 1], [0, 1], "ab", r"`class_names` argument must be a list of strings"),
        ([0, 1], [0, 1], ["a", "a"], r"must not repeat a name.*\['a'\]"),
    ],
)
def test_classification_report_input_errors(y_true, y_pred, names, match):
    with pytest.raises(InputError, match=match):
        classification_report(y_true, y_pred, names)


def test_functions_reject_something_that_is_not_a_report(tmp_path):
    for fn in (to_markdown, confusion_matrix_figure):
        with pytest.raises(InputError, match="must be a dict from `classification_report`"):
            fn({"accuracy": 1.0})
    with pytest.raises(InputError, match="must be a dict from `classification_report`"):
        write_report([1, 2], tmp_path)


def test_markdown_has_accuracy_per_class_table_and_confusion_matrix(report):
    md = to_markdown(report)
    assert "**Accuracy: 66.67%** (6 of 9 test images correct)." in md
    assert "| class | precision | recall | F1 | support |" in md
    assert "| a | 0.500 | 0.667 | 0.571 | 3 |" in md
    assert "| c | 1.000 | 0.500 | 0.667 | 4 |" in md
    assert "| true \\ predicted | a | b | c |" in md
    assert "| **c** | 2 | 0 | 2 |" in md


def test_markdown_escapes_pipes_in_class_names():
    md = to_markdown(classification_report([0, 1], [0, 1], ["x|y", "z"]))
    assert "| x\\|y | 1.000 |" in md


def test_write_report_writes_both_files_atomically(report, tmp_path):
    out = tmp_path / "nested" / "run"
    json_path, md_path = write_report(report, out)
    assert json_path == out / "report.json"
    assert md_path == out / "report.md"
    loaded = json.loads(json_path.read_text())
    assert loaded["accuracy"] == pytest.approx(6 / 9)
    assert loaded == report
    assert md_path.read_text() == to_markdown(report)
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]  # no temp files


def test_write_report_files_follow_the_umask(report, tmp_path):
    umask = os.umask(0o022)
    try:
        json_path, md_path = write_report(report, tmp_path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(json_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(md_path.stat().st_mode) == 0o644


def test_write_report_to_unwritable_place_raises(report, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="report directory .* is not writable"):
        write_report(report, blocker / "out")


def test_confusion_matrix_figure_is_a_valid_png(report, tmp_path):
    fig = confusion_matrix_figure(report)
    ax = fig.axes[0]
    assert "66.7%" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        str(v) for row in EXPECTED_CM for v in row
    )
    png = figure_to_png(fig)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    path = tmp_path / "cm.png"
    path.write_bytes(png)
    image = cv2.imread(str(path))
    assert image is not None and image.ndim == 3
    assert min(image.shape[:2]) > 200
    assert image.std() > 10  # something was drawn


def _read_events(log_dir) -> dict[str, tuple[int, np.ndarray]]:
    values = {}
    for path in sorted(log_dir.iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                values[value.tag] = (event.step, tf.make_ndarray(value.tensor))
    return values


def test_log_report_writes_exactly_the_expected_tags(tmp_path):
    names = ["non face", "face", "c"]
    report = classification_report(Y_TRUE, Y_PRED, names)
    log_report(report, tmp_path / "test", step=7)
    files = list((tmp_path / "test").iterdir())
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents")
    values = _read_events(tmp_path / "test")
    assert set(values) == {
        "test/accuracy",
        "test/f1/non face",
        "test/f1/face",
        "test/f1/c",
        "test/confusion_matrix",
        "test/report",
    }
    assert {step for step, _ in values.values()} == {7}
    assert float(values["test/accuracy"][1]) == pytest.approx(6 / 9)
    assert float(values["test/f1/face"][1]) == pytest.approx(4 / 5)
    # Image summaries hold [width, height, png bytes...].
    width, height, png = values["test/confusion_matrix"][1][:3]
    assert int(width) > 200 and int(height) > 200 and png.startswith(b"\x89PNG")
    assert values["test/report"][1].item().decode() == to_markdown(report)


@pytest.mark.parametrize("step", [-1, 1.5, True])
def test_log_report_rejects_bad_step(report, tmp_path, step):
    with pytest.raises(InputError, match="`step` argument must be an int >= 0"):
        log_report(report, tmp_path, step=step)


def _channel_model() -> keras.Model:
    """Predicts the channel with the largest mean: GAP then an identity Dense layer."""
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(3, use_bias=False)
    outputs = keras.layers.Softmax()(dense(x))
    dense.set_weights([np.eye(3, dtype=np.float32)])
    return keras.Model(inputs, outputs)


def _images_predicted_as(classes) -> np.ndarray:
    images = np.zeros((len(classes), 4, 4, 3), np.float32)
    images[np.arange(len(classes)), :, :, classes] = 1.0
    return images


def test_evaluate_accuracy_with_known_predictions():
    model = _channel_model()
    images = _images_predicted_as(Y_PRED)
    labels = np.array(Y_TRUE, np.int32)
    expected = classification_report(Y_TRUE, Y_PRED, NAMES)

    batched = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    assert evaluate_accuracy(model, batched, NAMES) == expected

    # Labels and predictions come from one pass, so a reshuffling pipeline still lines up.
    shuffled = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(9, seed=1, reshuffle_each_iteration=True)
        .batch(2)
    )
    assert evaluate_accuracy(model, shuffled, NAMES) == expected

    one_hot = tf.data.Dataset.from_tensor_slices((images, np.eye(3)[labels])).batch(5)
    assert evaluate_accuracy(model, one_hot, NAMES) == expected


def test_evaluate_accuracy_errors():
    model = _channel_model()
    images = _images_predicted_as([0, 1])
    ds = tf.data.Dataset.from_tensor_slices((images, np.array([0, 1]))).batch(2)
    with pytest.raises(InputError, match=r"must output \(batch, 4\) class scores"):
        evaluate_accuracy(model, ds, ["a", "b", "c", "d"])
    with pytest.raises(InputError, match="`dataset` argument is empty"):
        evaluate_accuracy(model, ds.take(0), NAMES)
    with pytest.raises(InputError, match=r"must yield `\(images, labels\)` batches"):
        evaluate_accuracy(model, tf.data.Dataset.from_tensor_slices(images).batch(2), NAMES)
