"""Explanations as TensorBoard image and text summaries, grouped by method."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.explain.api import explain
from xai_keras.explain.base import get_method
from xai_keras.explain.explanation import Explanation
from xai_keras.explain.sag import SAG

__all__ = [
    "ExplainCallback",
    "log_explanation",
    "log_explanations",
    "log_figure",
    "log_sag",
    "log_text",
]


def _summarise(exp: Explanation, name: str | None, step: int) -> None:
    """Write one explanation into the default writer: overlays and a class/score table."""
    tag = f"explain/{name or exp.method}"
    tf.summary.image(tag, exp.overlay(), step=step, max_outputs=len(exp))
    rows = [
        f"| {i} | {exp.label(i)} | {exp.method} | {exp.layer or '-'} |" for i in range(len(exp))
    ]
    table = "| image | class (score) | method | layer |\n|---|---|---|---|\n"
    tf.summary.text(f"{tag}/info", table + "\n".join(rows), step=step)


def log_explanations(
    log_dir: str | os.PathLike, explanations: Sequence[Explanation], step: int = 0
) -> None:
    """Log each explanation's overlays as `explain/<method>` images plus a text summary.

    The text summary `explain/<method>/info` lists, per image, the class, score, method and layer.
    """
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for exp in explanations:
            _summarise(exp, None, step)
    writer.close()


def log_explanation(
    log_dir: str | os.PathLike, exp: Explanation, step: int = 0, name: str | None = None
) -> None:
    """Log one explanation as `explain/<name>` (default: its method) images and text."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        _summarise(exp, name, step)
    writer.close()


class ExplainCallback(keras.callbacks.Callback):
    """Log explanations of fixed images during `model.fit`, so attention can be watched per epoch.

    Each logged epoch writes `explain/<method>` overlays and `explain/<method>/info` text at
    step = epoch. The explain kernels are compiled once for the model and reused every epoch
    (they read the current weights), and the writer is created on first use, so a run that
    never reaches a logged epoch leaves no empty event file.

    Args:
        images: (N, H, W, C) images to explain, e.g. a few validation images.
        methods: registered method names.
        log_dir: where the event files go (e.g. the TensorBoard callback's dir + "/explain").
        every_n_epochs: log every this many epochs.
        targets: classes to explain (e.g. the true labels); None explains the top class.
        class_names: names for the text summaries.
        batch_size: images per compiled batch.

    Example:
        >>> model.fit(train, callbacks=[ExplainCallback(x_val[:8], ("gradcam", "saliency"),
        ...                                             log_dir="logs/run/explain")])
    """

    def __init__(
        self,
        images: np.ndarray,
        methods: Sequence[str] = ("gradcam",),
        log_dir: str | os.PathLike = "logs/explain",
        every_n_epochs: int = 1,
        targets: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        batch_size: int = 32,
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise InputError(
                f"The `every_n_epochs` argument must be >= 1. Received: {every_n_epochs}."
            )
        self.images = np.asarray(images, np.float32)
        self.methods = [get_method(m).name for m in methods]
        self.log_dir, self.every_n_epochs = str(log_dir), every_n_epochs
        self.targets, self.class_names, self.batch_size = targets, class_names, batch_size
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for method in self.methods:
                exp = explain(
                    self.model,
                    self.images,
                    method=method,
                    targets=self.targets,
                    batch_size=self.batch_size,
                    class_names=self.class_names,
                )
                _summarise(exp, None, epoch)
        self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def log_figure(log_dir: str | os.PathLike, tag: str, png: bytes, step: int = 0) -> None:
    """Log a rendered PNG (e.g. `xai_keras.io.figure_to_png(fig)`) as one image summary."""
    image = tf.image.decode_png(png, channels=3)[None]
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.image(tag, np.asarray(image), step=step)
    writer.close()


def log_text(log_dir: str | os.PathLike, tag: str, text: str, step: int = 0) -> None:
    """Log Markdown `text` as one text summary (TensorBoard's Text tab renders it)."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.text(tag, text, step=step)
    writer.close()


def log_sag(log_dir: str | os.PathLike, graph: SAG, step: int = 0, tag: str = "sag") -> None:
    """Log a SAG's picture as `<tag>/graph` and its roots and confidences as `<tag>/info`."""
    from xai_keras.io import figure_to_png

    log_figure(log_dir, f"{tag}/graph", figure_to_png(graph.plot()), step)
    name = graph.class_name or f"class {graph.target}"
    lines = [
        f"class **{name}**, probability {graph.probability:.3f}, grid {graph.grid}, "
        f"{graph.n_forward} masked forward passes",
        "",
        "| root | confidence |",
        "|---|---|",
    ]
    lines += [f"| {list(r)} | {graph.confidence(r):.3f} |" for r in graph.roots]
    if graph.message:
        lines.append(f"\n{graph.message}")
    log_text(log_dir, f"{tag}/info", "\n".join(lines), step)
