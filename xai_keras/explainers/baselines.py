"""Reference images that stand for "no information": what a removed pixel is replaced with.

Shared by Integrated Gradients, occlusion, SAG masking and the deletion/insertion metrics, so
"blur" means the same thing everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.explainers.ranges import ValueRange

__all__ = ["BASELINES", "REMOVAL_ORDER", "auto_removal", "gaussian_blur", "make_baseline"]

BASELINES = ("black", "mean", "blur", "blur_strong")
# What "auto" tries, in order, to remove a class's evidence: the gentlest first (a blurred copy
# stays closest to natural images), black (the model's range minimum) last.
REMOVAL_ORDER = ("blur", "blur_strong", "mean", "black")


def auto_removal(kept: Any, limit: Any) -> np.ndarray:
    """The "auto" rule, shared by deletion/insertion, `layer="auto"` and SAG: the index in
    `REMOVAL_ORDER` of the first baseline under which the kept score falls below `limit`, else
    of the one under which it falls most.

    Args:
        kept: (K, ...) scores under the first K baselines of `REMOVAL_ORDER` (a column per
            image).
        limit: what "removed" means, broadcast against one row of `kept`.

    Returns:
        The index per column, shaped like one row of `kept`.
    """
    kept = np.asarray(kept, np.float64)
    removes = kept < limit
    return np.where(removes.any(axis=0), removes.argmax(axis=0), kept.argmin(axis=0))


def gaussian_blur(x: tf.Tensor, sigma: float) -> tf.Tensor:
    """Blur a (B, H, W, C) batch with a separable Gaussian of std `sigma` pixels."""
    radius = max(1, int(3 * sigma))
    t = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * (t / sigma) ** 2)
    k = k / tf.reduce_sum(k)
    channels = x.shape[-1]
    kx = tf.tile(tf.reshape(k, (1, -1, 1, 1)), (1, 1, channels, 1))
    ky = tf.tile(tf.reshape(k, (-1, 1, 1, 1)), (1, 1, channels, 1))
    pad = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
    y = tf.pad(x, pad, mode="SYMMETRIC")
    y = tf.nn.depthwise_conv2d(y, kx, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(y, ky, [1, 1, 1, 1], "VALID")


def _constant(kind: Any) -> tf.Tensor:
    """A number or array baseline as a float32 tensor, refusing what is not a finite number
    (None, NaN, inf, bools, strings inside arrays, objects) in one line."""
    ok = not isinstance(kind, (bool, np.bool_))
    try:
        array = np.asarray(kind, np.float32) if ok else None
    except (TypeError, ValueError):
        array = None
    if array is None or array.size == 0 or not np.isfinite(array).all():
        shown = f"an array of shape {np.shape(kind)}" if hasattr(kind, "shape") else repr(kind)
        raise InputError(
            f"The baseline must be one of {', '.join(BASELINES)}, a finite number, or a finite "
            f"array broadcastable to the images. Received: baseline={shown[:80]}."
        )
    return tf.constant(array)


def make_baseline(
    x: tf.Tensor,
    kind: str | float | np.ndarray = "black",
    value_range: ValueRange | None = None,
) -> tf.Tensor:
    """A baseline batch like `x`.

    Args:
        x: (B, H, W, C) images.
        kind: "black" (the darkest value of `value_range`; 0 when it is None, as for
            models that take [0, 1] or [0, 255]), "mean" (each image's channel means),
            "blur" (a Gaussian blur with sigma = 1/10 of the image side), "blur_strong"
            (sigma = 1/4 of the side), a number (a constant image), or an array
            broadcastable to `x`.
        value_range: the model's input range (see `xai_keras.explainers.ranges`).
    """
    if isinstance(kind, str):
        if kind == "black":
            return tf.zeros_like(x) if value_range is None else value_range.black(x)
        if kind == "mean":
            return tf.broadcast_to(tf.reduce_mean(x, axis=(1, 2), keepdims=True), tf.shape(x))
        if kind == "blur":
            return gaussian_blur(x, max(1.0, x.shape[1] / 10))
        if kind == "blur_strong":
            return gaussian_blur(x, max(1.0, x.shape[1] / 4))
        raise InputError(
            f"Unknown baseline {kind!r}. Use one of {', '.join(BASELINES)}, a number, or an "
            "array broadcastable to the images."
        )
    value = tf.cast(_constant(kind), x.dtype)
    try:
        return tf.broadcast_to(value, tf.shape(x))
    except (ValueError, tf.errors.InvalidArgumentError):
        raise InputError(
            f"The baseline of shape {tuple(value.shape)} cannot be broadcast to a batch of "
            f"images of shape {tuple(x.shape)}: give one baseline image (H, W, C) for all "
            "images (batches are padded to a few fixed sizes, so one baseline row per image "
            "is not supported; explain such images one at a time)."
        ) from None
