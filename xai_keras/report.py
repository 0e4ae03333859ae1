"""How well a classifier does on the test split, in numbers a person can check.

Explanations are only worth reading for a model whose accuracy is known, so every trained model
gets a report: accuracy, per-class precision/recall/F1, macro averages and the confusion matrix.
The report is a plain JSON-ready dict, written as `report.json` (for scripts) and `report.md`
(for people), drawn as a confusion-matrix figure and logged to TensorBoard.

Example:
    >>> report = classification_report([0, 1, 1], [0, 1, 0], ["cat", "dog"])
    >>> report["accuracy"]
    0.6666666666666666
    >>> report["confusion_matrix"]
    [[1, 0], [1, 1]]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xai_keras.errors import InputError
from xai_keras.io import ensure_writable_dir, figure_to_png, write_json, write_text

__all__ = [
    "classification_report",
    "evaluate_accuracy",
    "to_markdown",
    "write_report",
    "confusion_matrix_figure",
    "log_report",
]

_REPORT_KEYS = (
    "accuracy",
    "num_samples",
    "class_names",
    "confusion_matrix",
    "per_class",
    "macro_avg",
)


def _check_class_names(class_names: Any) -> list[str]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise InputError(
            "The `class_names` argument must be a list of strings. "
            f"Received: class_names={class_names!r}."
        )
    names = [str(c) for c in class_names]
    if not names:
        raise InputError("The `class_names` argument must not be empty. Received: class_names=[].")
    if len(set(names)) != len(names):
        duplicates = sorted({c for c in names if names.count(c) > 1})
        raise InputError(
            "The `class_names` argument must not repeat a name (per-class metrics are keyed by "
            f"name). Received duplicates: {duplicates}."
        )
    return names


def _check_labels(labels: Any, name: str, num_classes: int) -> np.ndarray:
    """Return `labels` as a 1-D int64 array of class indices, or raise an `InputError`."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InputError(
            f"The `{name}` argument must be a 1-D array of class indices. "
            f"Received: {name} with shape {arr.shape}."
        )
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iub":
        raise InputError(
            f"The `{name}` argument must hold integer class indices. "
            f"Received: {name} with dtype {arr.dtype}."
        )
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise InputError(
            f"The `{name}` argument must hold class indices in [0, {num_classes - 1}] "
            f"({num_classes} class names were given). Received: {name}[{np.argmax(bad)}]="
            f"{arr[np.argmax(bad)]}."
        )
    return arr


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with 0.0 where den == 0 (a class never predicted or never present)."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def classification_report(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of predicted labels.

    A class that is never predicted has precision 0.0, and a class with no samples has recall
    0.0 (no NaN, no warning); both still count in the macro average.

    Args:
        y_true: (N,) true class indices.
        y_pred: (N,) predicted class indices.
        class_names: one name per class; index `i` names class `i`.

    Returns:
        A JSON-ready dict with `accuracy`, `num_samples`, `class_names`, `confusion_matrix`
        (rows = true class, columns = predicted class), `per_class`
        (name -> precision, recall, f1, support) and `macro_avg` (precision, recall, f1).

    Raises:
        InputError: the labels are not 1-D integer arrays of one length, a label is outside
            `[0, len(class_names))`, or `class_names` is empty or repeats a name.

    Example:
        >>> classification_report([0, 1], [1, 1], ["a", "b"])["per_class"]["b"]["precision"]
        0.5
    """
    names = _check_class_names(class_names)
    n = len(names)
    true = _check_labels(y_true, "y_true", n)
    pred = _check_labels(y_pred, "y_pred", n)
    if len(true) != len(pred):
        raise InputError(
            "The `y_true` and `y_pred` arguments must have the same length. "
            f"Received: len(y_true)={len(true)}, len(y_pred)={len(pred)}."
        )
    if len(true) == 0:
        raise InputError("The `y_true` argument must hold at least one label. Received: 0.")

    cm = np.bincount(true * n + pred, minlength=n * n).reshape(n, n)
    correct = np.diag(cm)
    support = cm.sum(axis=1)
    precision = _safe_divide(correct, cm.sum(axis=0))
    recall = _safe_divide(correct, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {
        "accuracy": float(correct.sum() / len(true)),
        "num_samples": int(len(true)),
        "class_names": names,
        "confusion_matrix": cm.astype(int).tolist(),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "macro_avg": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
        },
    }


def _check_report(report: Any) -> dict[str, Any]:
    if not isinstance(report, dict) or any(k not in report for k in _REPORT_KEYS):
        found = sorted(report) if isinstance(report, dict) else type(report).__name__
        raise InputError(
            "The `report` argument must be a dict from `classification_report` with keys "
            f"{', '.join(_REPORT_KEYS)}. Received: {found}."
        )
    return report


def evaluate_accuracy(
    model: Any, dataset: Iterable[Any], class_names: Sequence[str]
) -> dict[str, Any]:
    """Predict every batch of `dataset` with `model` and report the results.

    Labels and predictions are collected in one pass over the dataset, so the report stays
    right for a pipeline that reshuffles on every iteration.

    Args:
        model: a Keras classifier whose output is (batch, num_classes) scores (probabilities
            or logits: only the argmax is used).
        dataset: batched `(images, labels)` pairs, e.g. a `tf.data.Dataset`; labels are class
            indices (batch,) or one-hot (batch, num_classes). Extra elements (sample weights)
            are ignored.
        class_names: one name per class.

    Returns:
        The `classification_report` dict.

    Raises:
        InputError: the dataset is empty or not made of `(images, labels)` batches, or the
            model's output does not have one score per class.
    """
    import keras

    names = _check_class_names(class_names)
    y_true: list[np.ndarray] = []
    y_pred: list[np.ndarray] = []
    for element in dataset:
        if not isinstance(element, (tuple, list)) or len(element) < 2:
            raise InputError(
                "The `dataset` argument must yield `(images, labels)` batches. "
                f"Received an element of type {type(element).__name__}."
            )
        images, labels = element[0], element[1]
        scores = model(images, training=False)
        scores = np.asarray(keras.ops.convert_to_numpy(scores))
        if scores.ndim != 2 or scores.shape[-1] != len(names):
            raise InputError(
                f"The model must output (batch, {len(names)}) class scores, one per class "
                f"name. Received: output shape {scores.shape}."
            )
        labels = np.asarray(keras.ops.convert_to_numpy(labels))
        if labels.ndim == 2 and labels.shape[-1] == len(names):  # one-hot labels
            labels = labels.argmax(axis=-1)
        y_true.append(labels.reshape(-1))
        y_pred.append(scores.argmax(axis=-1))
    if not y_true:
        raise InputError("The `dataset` argument is empty: there is nothing to evaluate.")
    return classification_report(np.concatenate(y_true), np.concatenate(y_pred), names)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(report: dict[str, Any]) -> str:
    """Render a report as Markdown: accuracy, a per-class table and the confusion matrix.

    Args:
        report: a dict from `classification_report`.

    Returns:
        The Markdown text, ending with a newline.
    """
    report = _check_report(report)
    names = [_md_escape(n) for n in report["class_names"]]
    cm = report["confusion_matrix"]
    n = report["num_samples"]
    correct = sum(cm[i][i] for i in range(len(cm)))
    lines = [
        "# Test report",
        "",
        f"**Accuracy: {report['accuracy']:.2%}** ({correct} of {n} test images correct).",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, raw in zip(names, report["class_names"]):
        m = report["per_class"][raw]
        lines.append(
            f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} "
            f"| {m['support']} |"
        )
    macro = report["macro_avg"]
    lines.append(
        f"| *macro avg* | {macro['precision']:.3f} | {macro['recall']:.3f} "
        f"| {macro['f1']:.3f} | {n} |"
    )
    lines += [
        "",
        "## Confusion matrix",
        "",
        "Rows are the true class, columns the predicted class.",
        "",
        "| true \\ predicted | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for name, row in zip(names, cm):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `report.json` and `report.md` into `out_dir`, each atomically.

    Args:
        report: a dict from `classification_report`.
        out_dir: the folder to write to; created if missing.

    Returns:
        The paths of `report.json` and `report.md`.

    Raises:
        InputError: `out_dir` cannot be written to, or `report` is not a report.
    """
    report = _check_report(report)
    out = ensure_writable_dir(out_dir, "report directory")
    json_path = write_json(out / "report.json", report)
    md_path = write_text(out / "report.md", to_markdown(report))
    return json_path, md_path


def confusion_matrix_figure(report: dict[str, Any]) -> Any:
    """Draw the confusion matrix with its counts, class names and accuracy.

    The figure is a bare `matplotlib.figure.Figure`, so no pyplot state or backend is touched;
    save it with `xai_keras.io.save_figure` or `figure_to_png`.

    Args:
        report: a dict from `classification_report`.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    report = _check_report(report)
    names = list(report["class_names"])
    cm = np.asarray(report["confusion_matrix"])
    k = len(names)
    side = min(max(4.5, 0.65 * k + 2.5), 20.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="images")
    cbar.locator = MaxNLocator(integer=True)
    cbar.update_ticks()
    fontsize = max(6, min(12, 130 // max(k, 1)))
    threshold = cm.max() / 2
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if cm[i, j] > threshold else "black",
            )
    ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        f"Confusion matrix: accuracy {report['accuracy']:.1%} on {report['num_samples']} images"
    )
    return fig


def log_report(report: dict[str, Any], log_dir: str | os.PathLike, step: int = 0) -> None:
    """Log the report to TensorBoard so it sits beside the training curves.

    Writes the scalars `test/accuracy` and `test/f1/<class>`, the image
    `test/confusion_matrix` and the Markdown text `test/report`.

    Args:
        report: a dict from `classification_report`.
        log_dir: the TensorBoard run folder to write an event file into.
        step: the step to log at (e.g. the number of epochs trained).

    Raises:
        InputError: `report` is not a report or `step` is not a non-negative int.
    """
    import tensorflow as tf

    report = _check_report(report)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise InputError(f"The `step` argument must be an int >= 0. Received: step={step!r}.")
    png = figure_to_png(confusion_matrix_figure(report))
    image = tf.image.decode_png(png, channels=3)[tf.newaxis]
    writer = tf.summary.create_file_writer(str(log_dir))
    try:
        with writer.as_default(step=int(step)):
            tf.summary.scalar("test/accuracy", report["accuracy"])
            for name, metrics in report["per_class"].items():
                tf.summary.scalar(f"test/f1/{name}", metrics["f1"])
            tf.summary.image("test/confusion_matrix", image)
            tf.summary.text("test/report", to_markdown(report))
        writer.flush()
    finally:
        writer.close()
