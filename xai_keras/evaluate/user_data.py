"""The user's own data for `evaluate_model`: images, labels and object masks from a
`tf.data.Dataset` (batched or not; tuples or dicts) or from arrays, checked against the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from xai_keras.checks import check_masks
from xai_keras.errors import InputError
from xai_keras.explainers.session import Session
from xai_keras.sources import element_parts

__all__ = ["DATA_FORMS", "read_user_data"]

DATA_FORMS = (
    "a tf.data.Dataset (batched or not) of (image, label) or (image, label, mask) elements, "
    "or dicts with 'image', 'label' and 'mask' keys; or arrays: images, (images, labels) or "
    "(images, labels, masks)"
)


def _parts(spec: Any) -> tuple[Any, Any, Any]:
    """Where the image, label and mask sit in an element: keys or tuple positions (or None)."""
    parts = element_parts(spec)
    if parts is None:
        raise InputError(f"The `data` must be {DATA_FORMS}. Received elements with spec {spec}.")
    return parts


def _take(data: tf.data.Dataset, session: Session, n: int) -> tuple:
    """The first n (images, labels or None, masks or None) of a dataset, read in one pass."""

    spec = data.element_spec
    keys = _parts(spec)

    def pick(*element):  # (image, label, mask), without the missing ones
        item = element[0] if isinstance(spec, dict) else element
        return tuple(item[k] for k in keys if k is not None)

    # The image and label checks (shapes, dtypes, batched or not) of explain_dataset; this
    # reads nothing, and names what does not fit the model.
    session.source(data.map(lambda *e: pick(*e)[: 1 + (keys[1] is not None)]))
    rank = pick(*_as_args(spec))[0].shape.rank
    ds = data.map(pick)
    image_input = session.model.inputs[session.head.image_input]
    if rank == len(image_input.shape):  # batched: the batch axis plus the image's
        ds = ds.unbatch()
    chunks = list(ds.take(n).batch(min(n, 256)).as_numpy_iterator())
    if not chunks:
        raise InputError("The `data` dataset is empty: it must yield at least one image.")
    arrays = [np.concatenate(part) for part in zip(*chunks)]
    images = arrays.pop(0)
    labels = arrays.pop(0) if keys[1] is not None else None
    masks = arrays.pop(0) if keys[2] is not None else None
    return images, labels, masks


def _as_args(spec: Any) -> tuple:
    """An element spec as the positional arguments `Dataset.map` passes."""
    return tuple(spec) if isinstance(spec, (tuple, list)) else (spec,)


def read_user_data(data: Any, session: Session, n: int) -> tuple:
    """The first `n` images of `data` in any of its forms (see `DATA_FORMS`), checked against
    the session's model: (images (k, H, W, C) float32, labels (k,) int or None, masks
    (k, H, W) bool or None)."""
    if isinstance(data, tf.data.Dataset):
        images, labels, masks = _take(data, session, n)
    elif isinstance(data, (tuple, list)) and 1 <= len(data) <= 3:
        images, labels, masks = (*data, None, None)[:3]
    elif isinstance(data, (np.ndarray, tf.Tensor)):
        images, labels, masks = data, None, None
    else:
        raise InputError(f"The `data` must be {DATA_FORMS}. Received {type(data).__name__}.")
    images = np.asarray(session.images(np.asarray(images)[:n], "data images")[0])
    k = len(images)
    num_classes = max(2, session.num_scores())  # one sigmoid unit: classes 0, 1
    if labels is not None:
        labels = np.asarray(labels)[:k]
        if labels.ndim == 2 and labels.shape[1] == num_classes > 1:  # one-hot rows
            labels = labels.argmax(axis=1)
        elif labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        numeric = np.issubdtype(labels.dtype, np.number) and not np.issubdtype(
            labels.dtype, np.complexfloating
        )
        whole = numeric and np.array_equal(labels, np.round(labels))
        if labels.shape != (k,) or not whole or labels.min() < 0 or labels.max() >= num_classes:
            raise InputError(
                f"The `data` labels must be {k} class indices in [0, {num_classes - 1}] or "
                f"one-hot rows (N, {num_classes}), one per image. Received shape "
                f"{labels.shape}, dtype {labels.dtype}."
            )
        labels = labels.astype(np.int32)
    if masks is not None:
        masks = np.asarray(masks)[:k]
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        masks = check_masks(masks, images.shape[:3], "data masks")
    return images, labels, masks
