"""The preprocessing a model carries: KerasHub's `model.preprocessor`.

A KerasHub `ImageClassifier` holds an `ImageClassifierPreprocessor` whose `ImageConverter`
resizes raw images to the model's size and maps pixels by `x * scale + offset`; `predict` runs
it, a plain `model(x)` does not. A session runs it on the images it is given (so `explain`
explains what `predict` predicts), and reads the model's value range from the converter's
scale and offset, so "black" baselines and pictures are right without a `value_range=`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.explainers.ranges import ValueRange

__all__ = ["Preprocessor", "attached_preprocessor"]


class Preprocessor:
    """A model's image preprocessing, applied to raw images (arrays or dataset elements).

    Args:
        fn: `fn(images) -> model inputs`, batched or single (H, W, C) images.
        value_range: the model inputs' range as a `ValueRange`, if the preprocessing says it.
        name: for messages.
    """

    def __init__(self, fn: Callable, value_range: ValueRange | None, name: str):
        self.fn, self.value_range, self.name = fn, value_range, name

    def __repr__(self) -> str:
        return f"Preprocessor({self.name!r})"

    def __call__(self, images: Any, what: str = "images", batch_size: int = 32) -> tf.Tensor:
        """Raw images (uint8 or float pixels, any size; one or a batch) -> float32 model
        inputs. They go through a `tf.data` map, as `predict` sends them: KerasHub's resizing
        differs between eager and graph execution by up to 2e-3, so this is what makes
        `explain` score exactly what `predict` scores."""
        try:
            x = tf.convert_to_tensor(images)
        except (ValueError, TypeError) as err:
            raise InputError(f"`{what}` must be an array or tensor of images: {err}") from None
        if not (x.dtype.is_floating or x.dtype.is_integer) or x.shape.rank not in (3, 4):
            raise InputError(
                f"`{what}` must be raw images (H, W, C) or (N, H, W, C) of numbers for the "
                f"model's {self.name}. Received shape {tuple(x.shape)}, dtype {x.dtype.name}."
            )
        rows = x[None] if x.shape.rank == 3 else x
        batches = self.dataset(tf.data.Dataset.from_tensor_slices(rows).batch(batch_size))
        out = tf.concat(list(batches), 0)
        return out[0] if x.shape.rank == 3 else out

    def dataset(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """The dataset with the preprocessing applied to each element's image (the element
        itself, or the first component of a tuple)."""

        def convert(*element: Any) -> Any:
            if len(element) == 1:
                return tf.cast(self.fn(element[0]), tf.float32)
            return (tf.cast(self.fn(element[0]), tf.float32), *element[1:])

        return dataset.map(convert)


def _converter_range(converter: Any) -> ValueRange | None:
    """`x * scale + offset` as a value range; None where the converter does not rescale."""
    scale, offset = getattr(converter, "scale", None), getattr(converter, "offset", None)
    if scale is None and offset is None:
        return None
    scale = tuple(np.ravel(1.0 if scale is None else scale).astype(float).tolist())
    offset = tuple(np.ravel(0.0 if offset is None else offset).astype(float).tolist())
    return ValueRange(f"{type(converter).__name__}(scale, offset)", scale, offset)


def attached_preprocessor(model: keras.Model, given: Any = None) -> Preprocessor | None:
    """The preprocessing to run: `given` when it is a callable (or a `Preprocessor`), none for
    False, else the model's own (`model.preprocessor`, as KerasHub tasks carry)."""
    if given is False:
        return None
    if isinstance(given, Preprocessor):
        return given
    found = given if given not in (None, True) else getattr(model, "preprocessor", None)
    if found is None:
        if given is True:
            raise InputError(
                f"`preprocessor=True` but model {model.name!r} has no attached preprocessor; "
                "pass the preprocessing function itself, or leave `preprocessor` unset."
            )
        return None
    if not callable(found):
        raise InputError(
            f"`preprocessor` must be a function images -> model inputs, True or False. "
            f"Received: {type(found).__name__}."
        )
    converter = getattr(found, "image_converter", found)
    return Preprocessor(found, _converter_range(converter), type(found).__name__)
