"""The input-source layer: what a user hands over as images, as one stream of `(image, label)`.

`explain` (a `tf.data.Dataset` of images), `explain_dataset`, `ExplainCallback`, the benchmark's
user data and the feature tools read their inputs here; it depends on nothing above it.

Datasets, arrays and image folders all become an *unbatched* `tf.data.Dataset` of
`(float32 (H, W, C) image, int32 label)` with label -1 where none is known, so the runner
can batch, pad, enumerate and skip (for resuming) in one place, whatever the source. Image
folders add a third component, the index of the image's file in `Source.files`: files that
cannot be decoded are dropped from the stream (`ignore_errors`), and the runner finds them as
gaps in those indices, to name them (refusing) or record them (`skip_bad=True`).
Nothing is read into memory here: arrays are sliced lazily and folders are decoded as the
stream is consumed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.data.folder import IMAGE_SUFFIXES
from xai_keras.errors import InputError

__all__ = ["Source", "as_source", "check_image_shape", "element_parts", "file_error"]

_IMAGE_KEYS = ("image", "images", "x", "input", "inputs")
_LABEL_KEYS = ("label", "labels", "y", "target", "targets")
_MASK_KEYS = ("mask", "masks", "segmentation")


@dataclass
class Source:
    """An unbatched stream of `(image, label)` and what is known about it.

    Attributes:
        elements: unbatched `tf.data.Dataset` of (float32 (H, W, C), int32 label or -1).
        has_labels: whether the labels are real (else all -1).
        size: number of images, or None when the stream does not say (e.g. a generator).
        class_names: class names where the source has them (image folders).
        files: one path per image, for image folders.
        kind: "dataset", "array" or "folder", for messages and the manifest.
        indexed: whether elements carry a third component, the file index (folders).
        items: `items(first, stop)` is the stream of items [first, stop) (array rows or
            files, readable or not) as `(image, label, item index)` elements, unreadable
            files dropped as in `elements`: how a worker of a distributed engine reads its
            part without reading what comes before it. None for a `tf.data.Dataset`, which
            can only be read from its start.
    """

    elements: tf.data.Dataset
    has_labels: bool
    size: int | None
    class_names: list[str] | None = None
    files: list[str] | None = None
    kind: str = "dataset"
    indexed: bool = False
    items: Callable[[int, int], tf.data.Dataset] | None = None


def _expected_shape(model: keras.Model, index: int = 0) -> tuple:
    return tuple(model.inputs[index].shape[1:])


_RESIZE_DATASET = "dataset.map(lambda x, y: (tf.image.resize(x, (H, W)), y))"


def check_image_shape(
    shape: tuple, expected: tuple, what: str, model: keras.Model, resize: str = _RESIZE_DATASET
) -> None:
    """Raise unless the known dimensions of `shape` (H, W, C) match the model's input
    `expected`, saying how to resize (`resize`, e.g. "tf.image.resize")."""
    for got, want in zip(shape, expected):
        if got is not None and want is not None and got != want:
            raise InputError(
                f"{what} have shape {shape} but model {model.name!r} expects {expected} "
                f"(H, W, C). Resize the images (e.g. {resize}) or check the channels "
                "(grayscale vs RGB)."
            )


def _check_shape(shape: tuple, expected: tuple, what: str, model: keras.Model) -> None:
    """Raise unless `shape` (H, W, C) is an image the model's input takes."""
    if len(shape) != len(expected):
        raise InputError(
            f"{what} must be images of shape {expected} (H, W, C) for model {model.name!r}, "
            f"or batches of them. Received element shape {shape}."
        )
    check_image_shape(shape, expected, what, model)


def _labels_to_int(labels: tf.Tensor, num_classes: int | None) -> tf.Tensor:
    """Class indices from indices or one-hot rows (any width > 1 when the classes are not
    known)."""
    width = labels.shape[0] if labels.shape.rank == 1 else None
    if width is not None and width > 1 and width == (num_classes or width):
        return tf.argmax(labels, axis=-1, output_type=tf.int32)
    return tf.cast(tf.reshape(labels, ()), tf.int32)


def element_parts(spec: Any) -> tuple[Any, Any, Any] | None:
    """Where the image, label and mask sit in a dataset element (its `element_spec`): dict
    keys, or positions among the tuple's parts (a lone tensor is part 0); None where a part is
    absent. None for an element with no image."""
    if isinstance(spec, tf.TensorSpec):
        return 0, None, None
    if isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3:
        return 0, (1 if len(spec) > 1 else None), (2 if len(spec) > 2 else None)
    if isinstance(spec, dict):
        image, label, mask = (
            next((k for k in keys if k in spec), None)
            for keys in (_IMAGE_KEYS, _LABEL_KEYS, _MASK_KEYS)
        )
        if image is not None:
            return image, label, mask
    return None


def _split_element(spec: Any) -> tuple[Any, Any, str]:
    """Pick the image and label specs (or paths into the element) out of an element spec."""
    parts = element_parts(spec)
    if parts is not None:
        image, label, _ = parts
        if isinstance(spec, dict):
            return spec[image], (spec[label] if label else None), f"dict:{image}:{label}"
        if isinstance(spec, tf.TensorSpec):
            return spec, None, "tensor"
        return spec[0], (spec[1] if label is not None else None), "tuple"
    raise InputError(
        "The `dataset` must yield images, (images, labels) pairs or dicts with an 'image' "
        f"key (and optionally 'label'). Received elements with spec {spec}."
    )


def _from_dataset(
    ds: tf.data.Dataset, model: keras.Model, num_classes: int | None, index: int
) -> Source:
    expected = _expected_shape(model, index)
    image_spec, label_spec, layout = _split_element(ds.element_spec)
    if not isinstance(image_spec, tf.TensorSpec) or image_spec.shape.rank is None:
        raise InputError(
            f"The `dataset` images must be tensors of known rank; received spec {image_spec}."
        )
    if not (image_spec.dtype.is_floating or image_spec.dtype.is_integer):
        raise InputError(
            f"The `dataset` images must hold numbers. Received dtype {image_spec.dtype.name}."
        )
    rank = image_spec.shape.rank
    batched = rank == len(expected) + 1
    if rank not in (len(expected), len(expected) + 1):
        raise InputError(
            f"The `dataset` must yield images (H, W, C) = {expected} or batches (N, H, W, C) of "
            f"them for model {model.name!r}. Received images of shape {image_spec.shape}."
        )
    dims = tuple(image_spec.shape)[1:] if batched else tuple(image_spec.shape)
    _check_shape(dims, expected, "The `dataset` images", model)
    if label_spec is not None:
        if not isinstance(label_spec, tf.TensorSpec) or not (
            label_spec.dtype.is_integer or label_spec.dtype.is_floating
        ):
            raise InputError(
                f"The `dataset` labels must be class indices or one-hot rows. Received spec "
                f"{label_spec}."
            )
        label_rank = label_spec.shape.rank
        if label_rank is not None and label_rank - batched not in (0, 1):
            raise InputError(
                "The `dataset` labels must be one class index (or one one-hot row) per "
                f"image. Received labels of shape {label_spec.shape}."
            )

    def pick(*element):
        if layout == "tensor":
            return element[0], None
        if layout == "tuple":
            return element[0], (element[1] if len(element) > 1 else None)
        _, image_key, label_key = layout.split(":")
        item = element[0]
        return item[image_key], (item[label_key] if label_key != "None" else None)

    def normalise(*element):
        image, label = pick(*element)
        image = tf.ensure_shape(tf.cast(image, tf.float32), expected)
        label = tf.constant(-1, tf.int32) if label is None else _labels_to_int(label, num_classes)
        return image, label

    size = int(ds.cardinality()) if not batched else -1
    if batched:
        ds = ds.unbatch()
    elements = ds.map(normalise, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return Source(elements, label_spec is not None, size if size >= 0 else None, kind="dataset")


def _from_arrays(
    images: Any, labels: Any, model: keras.Model, num_classes: int | None, index: int
) -> Source:
    x = np.asarray(images)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InputError(f"The `dataset` array must hold numbers. Received dtype {x.dtype}.")
    expected = _expected_shape(model, index)
    if x.ndim != len(expected) + 1:
        raise InputError(
            f"The `dataset` array must be a batch (N, *{expected}) of images for model "
            f"{model.name!r}. Received shape {x.shape}."
        )
    _check_shape(x.shape[1:], expected, "The `dataset` images", model)
    if len(x) == 0:
        raise InputError("The `dataset` array is empty: pass at least one image.")
    y = None
    if labels is not None:
        y = np.asarray(labels)
        if y.ndim == 2 and y.shape[1] == (num_classes or y.shape[1]):
            y = y.argmax(axis=1)
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise InputError(
                f"The labels must be {len(x)} class indices (N,) or one-hot rows "
                f"(N, {num_classes}). Received shape {y.shape}, dtype {y.dtype}."
            )
    chunk = 256

    def chunks():  # slices of the caller's array: no copy of the whole array into TF
        for start in range(0, len(x), chunk):
            part = (
                y[start : start + chunk]
                if y is not None
                else np.full(min(chunk, len(x) - start), -1)
            )
            yield x[start : start + chunk].astype(np.float32), part.astype(np.int32)

    spec = (
        tf.TensorSpec((None, *x.shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.int32),
    )
    ds = tf.data.Dataset.from_generator(chunks, output_signature=spec).unbatch()
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(x)))

    def items(first: int, stop: int) -> tf.data.Dataset:
        rows = x[first:stop].astype(np.float32)
        labels = y[first:stop] if y is not None else np.full(len(rows), -1)
        index = np.arange(first, first + len(rows), dtype=np.int64)
        return tf.data.Dataset.from_tensor_slices((rows, labels.astype(np.int32), index))

    return Source(ds, y is not None, len(x), kind="array", items=items)


def _from_folder(path: Path, model: keras.Model, index: int) -> Source:
    expected = _expected_shape(model, index)
    if path.is_file():
        what = "an image file" if path.suffix.lower() in IMAGE_SUFFIXES else "a file"
        raise InputError(
            f"The `dataset` argument must be a folder of images (optionally one sub-folder per "
            f"class), a tf.data.Dataset or an array; {path} is {what}. Put the images in a "
            "folder and pass that (for a few single images, use `explain`)."
        )
    if not path.is_dir():
        raise InputError(
            f"The `dataset` folder {path} does not exist. Pass a folder of images (optionally "
            "one sub-folder per class), a tf.data.Dataset or an array."
        )
    if len(expected) != 3 or None in expected[:2] or expected[2] not in (1, 3, 4):
        raise InputError(
            f"Model {model.name!r} takes inputs of shape {expected}; reading a folder needs a "
            "fixed (H, W) and 1, 3 or 4 channels. Pass a tf.data.Dataset instead."
        )
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    classes = [
        p.name for p in subdirs if any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.rglob("*"))
    ]
    labelled = bool(classes) and not loose
    mode = {1: "grayscale", 3: "rgb", 4: "rgba"}[expected[2]]
    try:
        ds = keras.utils.image_dataset_from_directory(
            str(path),
            labels="inferred" if labelled else None,
            class_names=classes if labelled else None,
            color_mode=mode,
            image_size=tuple(expected[:2]),
            batch_size=None,
            shuffle=False,
            verbose=False,
        )
    except Exception as err:  # keras raises bare ValueErrors for unreadable folders
        raise InputError(f"Cannot read the image folder {path}: {err}") from None
    files = list(ds.file_paths)
    if not files:
        raise InputError(
            f"The folder {path} holds no {'/'.join(IMAGE_SUFFIXES)} images (directly or in "
            "one sub-folder per class)."
        )

    if labelled:
        labels = [classes.index(Path(f).relative_to(path).parts[0]) for f in files]
    else:
        labels = [-1] * len(files)
    size, channels = tuple(expected[:2]), int(expected[2])

    def items(first: int, stop: int) -> tf.data.Dataset:
        return _decoded(files[first:stop], labels[first:stop], first, size, channels)

    elements = _decoded(files, labels, 0, size, channels)
    return Source(
        elements,
        labelled,
        len(files),
        class_names=classes if labelled else None,
        files=files,
        kind="folder",
        indexed=True,
        items=items,
    )


def _decoded(
    files: list[str], labels: list[int], first: int, size: tuple, channels: int
) -> tf.data.Dataset:
    """(image, label, file index) of `files` (numbered from `first`), decoded as
    `keras.utils.image_dataset_from_directory` decodes; unreadable files are dropped."""

    def load(file, label, index):
        image = tf.io.decode_image(tf.io.read_file(file), channels=channels,
                                   expand_animations=False)  # fmt: skip
        image = tf.image.resize(image, size, method="bilinear")
        image = tf.ensure_shape(image, (*size, channels))
        return image / 255.0, label, index

    return (
        tf.data.Dataset.from_tensor_slices(
            (
                tf.constant(files, tf.string),
                tf.constant(labels, tf.int32),
                tf.range(first, first + len(files), dtype=tf.int64),
            )
        )  # fmt: skip
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()  # unreadable files become gaps in the file indices: see explain_dataset
    )


def file_error(file: str) -> str:
    """Why TensorFlow cannot read an image file: the first line of its decoder's error."""
    try:
        tf.io.decode_image(tf.io.read_file(file), expand_animations=False)
    except (tf.errors.OpError, OSError) as err:
        message = getattr(err, "message", None) or str(err)
        message = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:\w+\].*$", "", message.strip())
        lines = message.strip().splitlines()
        return lines[0].strip() if lines else type(err).__name__
    return "unreadable when it was read (the file may have changed since)"


def as_source(
    dataset: Any, model: keras.Model, image_input: int = 0, num_classes: int | None = None
) -> Source:
    """Wrap a `tf.data.Dataset`, an array (or `(images, labels)` arrays) or a folder path.

    Args:
        dataset: what to read.
        model: the model the images are for (their shape is checked against its input).
        image_input: which input of the model takes the images.
        num_classes: the classes (one-hot labels are recognised by this width), if known.

    Raises:
        InputError: the images do not fit the model, the labels are not class indices, or
            the folder does not exist or holds no images.
    """
    if isinstance(dataset, tf.data.Dataset):
        return _from_dataset(dataset, model, num_classes, image_input)
    if isinstance(dataset, (str, os.PathLike)):
        return _from_folder(Path(dataset).expanduser(), model, image_input)
    if isinstance(dataset, tuple) and len(dataset) == 2:
        return _from_arrays(dataset[0], dataset[1], model, num_classes, image_input)
    if isinstance(dataset, (np.ndarray, tf.Tensor)) or hasattr(dataset, "__array__"):
        return _from_arrays(dataset, None, model, num_classes, image_input)
    raise InputError(
        "The `dataset` must be a tf.data.Dataset, a numpy array of images (or an "
        "(images, labels) tuple of arrays) or a folder path. Received "
        f"{type(dataset).__name__}."
    )
