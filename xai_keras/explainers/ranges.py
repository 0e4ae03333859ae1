"""The model's input value range: how pixels (0-255, RGB) map to what the model takes.

One notion used everywhere an image is made or unmade: reading an image file, the "black"
baseline of Integrated Gradients, occlusion, SAG and the faithfulness metrics (black is the
range's minimum, not 0: for a model that takes [-1, 1], 0 is mid-grey), and showing images.

    resolve_value_range((-1, 1))      # a (low, high) pair: pixel 0 -> low, 255 -> high
    resolve_value_range("tf")         # keras.applications' preprocessing modes: "tf" [-1, 1],
    resolve_value_range("torch")      # "torch" (ImageNet mean/std), "caffe" (BGR, mean-centred)
    resolve_value_range("unit")       # [0, 1]; "pixels" is [0, 255]
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError

__all__ = ["VALUE_RANGES", "ValueRange", "ValueRangeWarning", "check_values", "resolve_value_range"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class ValueRange:
    """Model values = pixels (0-255, channels in the model's order) * scale + offset.

    Attributes:
        name: how it was given, for messages ("(-1, 1)", "tf", ...).
        scale, offset: per channel (one value broadcasts to every channel).
        bgr: the model takes BGR (caffe mode): pixel files are flipped from RGB first.
    """

    name: str
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    bgr: bool = False

    def _coeffs(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        scale, offset = np.asarray(self.scale, np.float32), np.asarray(self.offset, np.float32)
        if scale.size not in (1, channels):
            raise InputError(
                f"The value range {self.name!r} has {scale.size} channels but the images have "
                f"{channels}. Give a (low, high) pair, which fits any number of channels."
            )
        return scale, offset

    @property
    def low(self) -> np.ndarray:
        """Per-channel value of a black pixel."""
        return np.asarray(self.offset, np.float32)

    @property
    def high(self) -> np.ndarray:
        """Per-channel value of a white pixel."""
        return np.asarray(self.offset, np.float32) + 255.0 * np.asarray(self.scale, np.float32)

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(..., C) RGB (or grey) pixels in [0, 255] -> the model's values, float32."""
        pixels = np.asarray(pixels, np.float32)
        if self.bgr and pixels.shape[-1] == 3:
            pixels = pixels[..., ::-1]
        scale, offset = self._coeffs(pixels.shape[-1])
        return (pixels * scale + offset).astype(np.float32)

    def to_pixels(self, values: np.ndarray) -> np.ndarray:
        """The model's values -> RGB (or grey) pixels in [0, 255], float32 (for pictures)."""
        values = np.asarray(values, np.float32)
        scale, offset = self._coeffs(values.shape[-1])
        pixels = (values - offset) / scale
        if self.bgr and pixels.shape[-1] == 3:
            pixels = pixels[..., ::-1]
        return pixels.astype(np.float32)

    def black(self, x: tf.Tensor) -> tf.Tensor:
        """A batch like `x` (B, H, W, C) in which every pixel is black."""
        scale, offset = self._coeffs(int(x.shape[-1]))
        low = tf.constant(np.broadcast_to(offset, (int(x.shape[-1]),)), x.dtype)
        return tf.broadcast_to(low, tf.shape(x))


def _pair(low: float, high: float, name: str) -> ValueRange:
    return ValueRange(name, ((high - low) / 255.0,), (float(low),))


VALUE_RANGES: dict[str, ValueRange] = {
    "unit": _pair(0.0, 1.0, "unit"),
    "pixels": _pair(0.0, 255.0, "pixels"),
    "tf": _pair(-1.0, 1.0, "tf"),
    "torch": ValueRange(
        "torch",
        tuple(1.0 / (255.0 * s) for s in _IMAGENET_STD),
        tuple(-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)),
    ),
    "caffe": ValueRange("caffe", (1.0,), tuple(-m for m in _CAFFE_MEAN_BGR), bgr=True),
}


def resolve_value_range(value_range: Any) -> ValueRange | None:
    """A `ValueRange` from a (low, high) pair, a "LOW,HIGH" string, a name in `VALUE_RANGES`
    or a `ValueRange`; None stays None (unknown: "black" is 0, as for [0, 1] and [0, 255]).

    Raises:
        InputError: anything else, or low >= high.
    """
    if value_range is None or isinstance(value_range, ValueRange):
        return value_range
    if isinstance(value_range, str):
        key = value_range.strip().lower()
        if key in VALUE_RANGES:
            return VALUE_RANGES[key]
        value_range = key.split(",")
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        low = high = None
    if low is None or not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise InputError(
            "The `value_range` argument must be a (low, high) pair with low < high, e.g. "
            f"(-1, 1), or one of {', '.join(VALUE_RANGES)}. Received: "
            f"value_range={value_range!r}."
        )
    return _pair(low, high, f"({low:g}, {high:g})")


def _caller_level() -> int:
    """The `stacklevel` of the first frame outside this package: the user's call."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("xai_keras"):
        frame, level = frame.f_back, level + 1
    return level


class ValueRangeWarning(UserWarning):
    """Images that do not look like the model's declared input range (see `check_values`)."""


def check_values(
    dtype: Any, x: tf.Tensor, value_range: ValueRange | None, model_dtype: Any, name: str
) -> None:
    """Warn (one line, `ValueRangeWarning`) where images cannot be in the range they go in:
    values outside the declared `value_range` (uint8 0..255 images with (-1, 1), float 0..255
    with "unit"), or uint8 images for a float model when no range is declared (they are fed as
    they are, not rescaled). `dtype`: the images' dtype as given (None: unknown); `x`: them
    as float32; `model_dtype`: the dtype of the model's image input (None: unknown)."""
    dtype = getattr(dtype, "as_numpy_dtype", dtype)  # a tf.DType
    try:
        integer = dtype is not None and np.issubdtype(np.dtype(dtype), np.integer)
    except TypeError:
        integer = False
    low_x, high_x = float(tf.reduce_min(x)), float(tf.reduce_max(x))
    if value_range is not None:
        low, high = float(np.min(value_range.low)), float(np.max(value_range.high))
        slack = 0.02 * (high - low)
        if low_x < low - slack or high_x > high + slack:
            given = "uint8 images" if integer else "images"
            warnings.warn(
                f"`{name}`: {given} with values in [{low_x:g}, {high_x:g}] fall outside "
                f"value_range={value_range.name} ([{low:g}, {high:g}]); they are not rescaled. "
                "Map them into that range first (x / 127.5 - 1 for (-1, 1), x / 255 for "
                '"unit") or pass the range they are in.',
                ValueRangeWarning,
                stacklevel=_caller_level(),
            )
        return
    float_model = model_dtype is not None and "float" in str(model_dtype)
    if integer and float_model and high_x > 1:
        warnings.warn(
            f"`{name}`: uint8 images (0..255) go to a {model_dtype} model as they are, not "
            "rescaled. If it was trained on another range, convert them (x / 255 for [0, 1]) "
            'or declare it with value_range=; value_range="pixels" says 0..255 is right.',
            ValueRangeWarning,
            stacklevel=_caller_level(),
        )
