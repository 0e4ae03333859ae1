"""The data set's images that excite a unit most, found in one streamed pass.

Only the running top-k per unit is kept (plus the batch being scored), so memory does not grow
with the data set. For spatial layers each example also gets the place where the unit fired
most and the input box that place depends on: the bounding box of the input gradient of the
unit at that place (its receptive field as it acts on this image; zero padding and inactive
ReLUs can make it smaller than the theoretical one).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from xai_keras.errors import InputError
from xai_keras.explainers.base import runner_for
from xai_keras.explainers.graph import ModelRunner
from xai_keras.features.plot import tile_figure
from xai_keras.features.units import UnitLayer, parse_units, unit_layer
from xai_keras.sources import as_source

__all__ = [
    "TopExamples",
    "TopK",
    "image_batches",
    "top_examples",
    "top_examples_figure",
    "top_examples_many",
]


class TopK:
    """The k largest scores seen so far with their items; never holds more than k of them.

    Ties keep the earlier item, so the result equals a stable sort of everything seen.
    """

    def __init__(self, k: int):
        self.k = k
        self.values = np.empty(0, np.float32)
        self.items: dict[str, np.ndarray] = {}

    def update(self, values: np.ndarray, **items: np.ndarray) -> None:
        """Merge a batch of scores (and same-length item arrays) into the top k."""
        values = np.concatenate([self.values, np.asarray(values, np.float32)])
        merged = {
            name: np.concatenate([self.items[name], item]) if name in self.items else item
            for name, item in items.items()
        }
        keep = np.argsort(-values, kind="stable")[: self.k]
        self.values = values[keep]
        self.items = {name: item[keep] for name, item in merged.items()}

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class TopExamples:
    """The k images of a data set on which one unit is largest.

    Attributes:
        layer: the layer's path.
        unit: the unit (channel) index.
        images: (k, H, W, C) the images, highest first.
        values: (k,) the unit's value on each (max or mean over positions for spatial layers).
        indices: (k,) each image's position in the stream (0 = first image of the data set).
        labels: (k,) their labels where the data set had them, else None.
        locations: (k, 2) (row, col) of the strongest position in the layer's map (spatial).
        boxes: (k, 4) (y0, x0, y1, x1) input pixels that position depends on (spatial).
    """

    layer: str
    unit: int
    images: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    labels: np.ndarray | None = None
    locations: np.ndarray | None = None
    boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    def patches(self) -> list[np.ndarray]:
        """The boxed part of each image (the whole image for non-spatial layers)."""
        if self.boxes is None:
            return list(self.images)
        return [im[y0:y1, x0:x1] for im, (y0, x0, y1, x1) in zip(self.images, self.boxes)]

    def labels_text(self) -> list[str]:
        out = []
        for i in range(len(self)):
            label = f", y={self.labels[i]}" if self.labels is not None else ""
            out.append(f"#{self.indices[i]}{label}\n{self.values[i]:.3g}")
        return out

    def grid(self, cols: int | None = None) -> Figure:
        """The images with their values and, for spatial layers, the boxes in red."""
        boxes = None if self.boxes is None else [tuple(b) for b in self.boxes]
        title = f"{self.layer} unit {self.unit}: top {len(self)} examples"
        return tile_figure(self.images, self.labels_text(), title, cols=cols, boxes=boxes)

    def save(self, path: str | os.PathLike) -> Path:
        from xai_keras.io import save_figure

        return save_figure(self.grid(), path)


def top_examples_figure(results: Sequence[TopExamples]) -> Figure:
    """One row per unit, its top examples left to right."""
    images = np.concatenate([r.images for r in results])
    labels = [f"u{r.unit} {t}" for r in results for t in r.labels_text()]
    boxes = None
    if all(r.boxes is not None for r in results):
        boxes = [tuple(b) for r in results for b in r.boxes]
    k = max(len(r) for r in results)
    title = f"{results[0].layer}: top {k} examples per unit"
    return tile_figure(images, labels, title, cols=k, boxes=boxes)


# -- streaming -----------------------------------------------------------------------------
def image_batches(
    data: Any, model: keras.Model, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(images, labels or None) batches of whatever `explain_dataset` accepts: a tf.data
    dataset (batched or not, images or (images, labels)), arrays, or an image folder."""
    source = as_source(data, model)
    for x, y in source.elements.batch(batch_size).as_numpy_iterator():
        yield x, y if source.has_labels else None


def _score(runner: ModelRunner, x: tf.Tensor, units: tf.Tensor, spatial: bool, reduce: str):
    """Per image and unit: value (B, U) and the (row, col) of the strongest position, each
    (B, U) (-1 for dense layers)."""
    activation, logits = runner.forward(x)
    if activation is None:
        activation = logits
    a = tf.gather(activation, units, axis=-1)
    if not spatial:
        a = tf.reshape(a, (tf.shape(a)[0], -1))
        none = -tf.ones_like(a, tf.int32)
        return a, none, none
    flat = tf.reshape(a, (tf.shape(a)[0], -1, tf.shape(a)[-1]))  # (B, h*w, U)
    value = tf.reduce_max(flat, 1) if reduce == "max" else tf.reduce_mean(flat, 1)
    where = tf.argmax(flat, 1, output_type=tf.int32)
    return value, where // tf.shape(a)[2], where % tf.shape(a)[2]


def _support(runner: ModelRunner, x: tf.Tensor, units: tf.Tensor, rows, cols) -> tf.Tensor:
    """|d unit at its position / d input| summed over colour channels: (K, H, W)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        activation, _ = runner.forward(x)
        picked = tf.gather_nd(activation, tf.stack([tf.range(tf.shape(x)[0]), rows, cols], 1))
        value = tf.reduce_sum(tf.gather(picked, units, batch_dims=1))
    return tf.reduce_sum(tf.abs(tape.gradient(value, x)), -1)


def _boxes(support: np.ndarray) -> np.ndarray:
    """Bounding box (y0, x0, y1, x1) of each map's non-zero part (the whole map if none)."""
    boxes = []
    for s in support:
        ys, xs = np.nonzero(s > 0)
        if len(ys) == 0:
            boxes.append((0, 0, s.shape[0], s.shape[1]))
        else:
            boxes.append((ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
    return np.asarray(boxes, np.int32)


def top_examples_many(
    model: keras.Model,
    layer: str | Any,
    units: str | int | Sequence[int],
    dataset: Any,
    k: int = 9,
    reduce: str = "max",
    batch_size: int = 64,
) -> list[TopExamples]:
    """`top_examples` for several units (indices or a spec like "0-7") of one layer, in a
    single pass over the data; one `TopExamples` per unit, in the order given."""
    if k < 1:
        raise InputError(f"k must be >= 1. Received: k={k}.")
    if reduce not in ("max", "mean"):
        raise InputError(f"reduce must be 'max' or 'mean'. Received: {reduce!r}.")
    target = unit_layer(model, layer)
    units = parse_units(units, target.n_units, target.path)
    runner = runner_for(model, target.layer)
    score = runner.kernel(
        f"features:top:{target.spatial}:{reduce}",
        functools.partial(_score, runner, spatial=target.spatial, reduce=reduce),
    )
    tops = [TopK(k) for _ in units]
    seen = 0
    u = tf.constant(units, tf.int32)
    for x, y in image_batches(dataset, model, batch_size):
        values, rows, cols = (t.numpy() for t in score(tf.constant(x), u))
        index = np.arange(seen, seen + len(x))
        for j, top in enumerate(tops):
            extra = {} if y is None else {"label": y}
            top.update(values[:, j], image=x, index=index, row=rows[:, j], col=cols[:, j], **extra)
        seen += len(x)
    if seen == 0:
        raise InputError("dataset is empty: no images to rank.")
    return [_finish(runner, target, unit, top) for unit, top in zip(units, tops, strict=True)]


def _finish(runner: ModelRunner, target: UnitLayer, unit: int, top: TopK) -> TopExamples:
    """Turn a unit's running top-k into a result, with positions and boxes if spatial."""
    images = top.items["image"]
    result = TopExamples(
        target.path, unit, images, top.values, top.items["index"], top.items.get("label")
    )
    if target.spatial:
        rows, cols = top.items["row"], top.items["col"]
        support = runner.kernel("features:support", functools.partial(_support, runner))
        grads = support(
            tf.constant(images),
            tf.fill([len(images)], unit),
            tf.constant(rows, tf.int32),
            tf.constant(cols, tf.int32),
        ).numpy()
        result.locations = np.stack([rows, cols], 1)
        result.boxes = _boxes(grads)
    return result


def top_examples(
    model: keras.Model,
    layer: str | Any,
    unit: int,
    dataset: Any,
    k: int = 9,
    reduce: str = "max",
    batch_size: int = 64,
) -> TopExamples:
    """The k images of `dataset` on which `unit` of `layer` is largest, in one streamed pass.

    Args:
        model: a Keras model.
        layer: name, nested path or layer object.
        unit: channel (spatial layer) or unit (dense layer) index.
        dataset: a tf.data.Dataset of image batches or (images, labels) batches (unbatched
            images are batched here), a numpy array of images, or an (images, labels) pair.
        k: how many to keep.
        reduce: for spatial layers, rank images by the channel's "max" or "mean" over positions.
        batch_size: batch size for unbatched inputs.

    Raises:
        InputError: unit out of range (the message gives the range), or bad data.
        LayerError: unknown layer (the message lists candidates).
    """
    return top_examples_many(model, layer, [unit], dataset, k, reduce, batch_size)[0]
