"""Reference maps that ignore the model: every metric needs a floor to compare against.

`random` is a smooth random field (the same for every image, fixed by `seed`) and `centre` a
Gaussian bump in the middle of the image, the "centre bias" that a naive map would show.
A method that does no better than these on a metric has not shown anything.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from xai_keras.explain.base import BatchResult, Method, register

__all__ = ["RandomMap", "CentreMap"]


class _ReferenceMap(Method):
    family = "baseline"

    def field(self, height: int, width: int) -> tf.Tensor:
        """(h, w) map, the same for every image."""
        raise NotImplementedError

    def attribute(self, x, targets):
        logits = self.runner.forward_fn(x)
        top = tf.argmax(logits, axis=-1, output_type=tf.int32)
        raw = self.field(int(x.shape[1]), int(x.shape[2]))
        raw = tf.tile(raw[None], (x.shape[0], 1, 1))
        return BatchResult(raw, logits, tf.where(targets < 0, top, targets))


@register("random")
class RandomMap(_ReferenceMap):
    """A smooth random map: a `cells` x `cells` uniform field, resized bilinearly."""

    def __init__(self, model: keras.Model, layer: Any = None, seed: int = 0, cells: int = 7):
        super().__init__(model, layer)
        self.seed, self.cells = seed, cells

    def field(self, height, width):
        # The raw map stays coarse; `explain` resizes it to the image bilinearly.
        return tf.random.stateless_uniform((self.cells, self.cells), seed=(self.seed, 0))


@register("centre")
class CentreMap(_ReferenceMap):
    """A Gaussian bump at the image centre with std `sigma` x the image side."""

    def __init__(self, model: keras.Model, layer: Any = None, sigma: float = 0.25):
        super().__init__(model, layer)
        self.sigma = sigma

    def field(self, height, width):
        y = (tf.range(height, dtype=tf.float32) + 0.5) / height - 0.5
        x = (tf.range(width, dtype=tf.float32) + 0.5) / width - 0.5
        return tf.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * self.sigma**2))
