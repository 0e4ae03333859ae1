"""Explanations as TensorBoard image and text summaries, grouped by method and class.

Tags: `explanations/<method>/<class>` (overlays, captioned with method, layer, class and
scores), `explanations/<method>/info` (a text table) and `inputs/explained` (the images), so
the Images tab, which sorts groups by name, shows the explanations first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.explainers.api import explain
from xai_keras.explainers.base import get_method
from xai_keras.explainers.explanation import Explanation
from xai_keras.explainers.sag import SAG
from xai_keras.explainers.session import MODEL_FORM_ARGS, Session

__all__ = [
    "ExplainCallback",
    "log_explanation",
    "log_explanations",
    "log_figure",
    "log_sag",
    "log_text",
]


def _tag_part(text: str) -> str:
    """A class or method name as one part of a summary tag ('/' would nest it, spaces blur it)."""
    return re.sub(r"[\s/]+", "_", text.strip()) or "_"


def _class_name(exp: Explanation, i: int) -> str:
    t = int(exp.targets[i])
    return exp.class_names[t] if exp.class_names else f"class {t}"


def _summarise(exp: Explanation, name: str | None, step: int) -> None:
    """Write one explanation into the default writer: per explained class one image card,
    `explanations/<method>/<class>`, of the overlays explaining that class, captioned with the
    method, layer, class and each sample's score; and all samples as the text table
    `explanations/<method>/info`. The "explanations" group sorts before "inputs", so
    TensorBoard's Images tab opens on the explanations, one method after another."""
    tag = f"explanations/{name or exp.method}"
    where = f" @ `{exp.layer}`" if exp.layer else ""
    sign = " Red: for the class, blue: against." if exp.signed else ""
    overlays = exp.overlay()
    by_class: dict[str, list[int]] = {}
    for i in range(len(exp)):
        by_class.setdefault(_class_name(exp, i), []).append(i)
    for cls, samples in by_class.items():
        scores = ", ".join(f"sample {i}: {exp.scores[i]:.2f}" for i in samples)
        caption = f"**{exp.method}**{where} explaining class **{cls}**; score of {scores}.{sign}"
        tf.summary.image(
            f"{tag}/{_tag_part(cls)}",
            overlays[samples],
            step=step,
            max_outputs=len(samples),
            description=caption,
        )
    rows = [
        f"| {i} | {exp.label(i)} | {exp.method} | {exp.layer or '-'} |" for i in range(len(exp))
    ]
    table = "| image | class (score) | method | layer |\n|---|---|---|---|\n"
    tf.summary.text(f"{tag}/info", table + "\n".join(rows), step=step)


def _log_inputs(exp: Explanation, step: int) -> None:
    """The explained images themselves as `inputs/explained`, captioned with each sample's
    explained class and score (after the explanations in the Images tab)."""
    samples = "; ".join(f"sample {i}: {exp.label(i)}" for i in range(len(exp)))
    tf.summary.image(
        "inputs/explained",
        exp.display_images().astype(np.uint8),
        step=step,
        max_outputs=len(exp),
        description=f"The images explained under explanations/, class (score): {samples}.",
    )


def log_explanations(
    log_dir: str | os.PathLike, explanations: Sequence[Explanation], step: int = 0
) -> None:
    """Log explanations as image cards `explanations/<method>/<class>` (captioned with method,
    layer, class and scores), a text table `explanations/<method>/info` each, and the images
    of the first as `inputs/explained`."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for exp in explanations:
            _summarise(exp, None, step)
        if explanations:
            _log_inputs(explanations[0], step)
    writer.close()


def log_explanation(
    log_dir: str | os.PathLike, exp: Explanation, step: int = 0, name: str | None = None
) -> None:
    """Log one explanation as `explanations/<name>/<class>` (default name: its method) image
    cards, its `explanations/<name>/info` table and its images as `inputs/explained`."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        _summarise(exp, name, step)
        _log_inputs(exp, step)
    writer.close()


_DATASET_IMAGES = 8  # images taken from a dataset or folder unless `max_images` says


class ExplainCallback(keras.callbacks.Callback):
    """Log explanations of fixed images during `model.fit`, so attention can be watched per epoch.

    Each logged epoch writes `explanations/<method>/<class>` overlays (one card per explained
    class, captioned with method, layer, class and scores) and `explanations/<method>/info`
    text at step = epoch; the images go once to `inputs/explained`. With `targets=None` an
    image's card follows its top class, which can change between epochs; `targets="labels"`
    keeps each image in one card. The explain kernels are compiled once for the model and
    reused every epoch (they read the current weights), and the writer is created on first
    use, so a run that never reaches a logged epoch leaves no empty event file.

    The images can be the validation `tf.data.Dataset` itself: its first `max_images` images
    are read once, when training begins (so a reshuffling dataset still gives the same images
    every epoch, and a dataset that does not fit the model fails before the first epoch).

    Args:
        images: (N, H, W, C) images to explain, e.g. a few validation images; or a
            `tf.data.Dataset` (batched or not) of images, `(images, labels)`,
            `(images, labels, weights)` or dicts with an "image"/"images" key (and
            "label"/"labels"); or a folder of images (one sub-folder per class gives labels).
        methods: registered method names.
        log_dir: where the event files go (e.g. the TensorBoard callback's dir + "/explain").
        every_n_epochs: log every this many epochs.
        targets: classes to explain: None explains the top class, a list gives one class
            per image, and "labels" takes the labels of the dataset (or folder).
        class_names: names for the text summaries (default: a folder's class names).
        batch_size: images per compiled batch.
        max_images: explain at most this many images; default all of an array and the
            first 8 of a dataset or folder.
        **model_form: `output`, `head`, `score`, `inputs`, `reshape`, `value_range`: what is
            explained and how, as in `explain` (e.g. `output="age", head="linear"`).

    Raises:
        InputError: bad arguments; from `on_train_begin`, a dataset that does not fit the
            model, is empty, or has no labels while targets="labels".

    Example:
        >>> model.fit(train, validation_data=val, callbacks=[
        ...     ExplainCallback(val, ("gradcam", "saliency"), targets="labels",
        ...                     log_dir="logs/run/explain")])
    """

    def __init__(
        self,
        images: np.ndarray | tf.data.Dataset | str | os.PathLike,
        methods: Sequence[str] = ("gradcam",),
        log_dir: str | os.PathLike = "logs/explain",
        every_n_epochs: int = 1,
        targets: Sequence[int] | str | None = None,
        class_names: Sequence[str] | None = None,
        batch_size: int = 32,
        max_images: int | None = None,
        **model_form: Any,
    ):
        super().__init__()
        unknown = sorted(set(model_form) - set(MODEL_FORM_ARGS))
        if unknown:
            raise InputError(
                f"ExplainCallback got unknown argument(s) {', '.join(unknown)}; the model form "
                f"is given by {', '.join(MODEL_FORM_ARGS)}."
            )
        if (
            isinstance(every_n_epochs, bool)
            or not isinstance(every_n_epochs, int)
            or every_n_epochs < 1
        ):
            raise InputError(
                f"The `every_n_epochs` argument must be an int >= 1. Received: {every_n_epochs!r}."
            )
        if max_images is not None and (
            isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
        ):
            raise InputError(
                f"The `max_images` argument must be a positive int or None. Received: "
                f"{max_images!r}."
            )
        if isinstance(targets, str) and targets != "labels":
            raise InputError(
                f'The `targets` argument must be None, class indices or "labels". '
                f"Received: {targets!r}."
            )
        self._source = images if _is_source(images) else None
        self.images = None
        if self._source is None:
            if isinstance(targets, str):  # "labels"
                raise InputError(
                    'targets="labels" needs labelled images: pass a tf.data.Dataset of '
                    "(images, labels) (or a folder with one sub-folder per class), or pass the "
                    "labels themselves as `targets`."
                )
            self.images = np.asarray(images, np.float32)[:max_images]
        self.methods = [get_method(m).name for m in methods]
        self.log_dir, self.every_n_epochs = str(log_dir), every_n_epochs
        self.targets, self.class_names = targets, class_names
        self.max_images = max_images
        self._model_form = dict(model_form, batch_size=batch_size)
        self._session: Session | None = None  # prepared on first use, for `self.model`
        self._writer = None
        self._inputs_logged = False  # the images go to TensorBoard once

    def _session_for_model(self) -> Session:
        """The session for the model being trained, prepared once."""
        if self._session is None or self._session.model is not self.model:
            self._session = Session.of(self.model, **self._model_form)
        return self._session

    def _read_source(self) -> None:
        """Take the first images (and labels) of the dataset or folder, once."""
        source = self._session_for_model().source(self._source)
        k = self.max_images or _DATASET_IMAGES
        first = next(iter(source.elements.take(k).batch(k)), None)
        if first is None:
            raise InputError(
                "The `images` dataset given to ExplainCallback is empty: it must yield at "
                "least one image."
            )
        self.images = first[0].numpy()
        if isinstance(self.targets, str):  # "labels"
            if not source.has_labels:
                raise InputError(
                    f'targets="labels" but the `images` {source.kind} has no labels: '
                    "it must yield (images, labels) (or dicts with a 'label' key), or be a "
                    "folder with one sub-folder per class."
                )
            self.targets = first[1].numpy()
        if self.class_names is None and source.class_names:
            self.class_names = source.class_names
        self._source = None  # read once: the same images every epoch

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.images is None:
            self._read_source()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        if self.images is None:  # on_train_begin was not called (a hand-driven loop)
            self._read_source()
        session = self._session_for_model()
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for method in self.methods:
                exp = explain(
                    session,
                    self.images,
                    method=method,
                    targets=self.targets,
                    class_names=self.class_names,
                )
                _summarise(exp, None, epoch)
            if not self._inputs_logged:
                _log_inputs(exp, epoch)
                self._inputs_logged = True
        self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _is_source(images: object) -> bool:
    """Whether `images` is read through `as_source` (a dataset or a folder) and not an array."""
    return isinstance(images, (tf.data.Dataset, str, os.PathLike))


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
