"""Reference maps that ignore the model: every metric needs a floor to compare against.

`random` is a smooth random field (drawn per image from `seed` and the image's own pixels, so
an image gets the same map alone or in any batch) and `centre` a Gaussian bump in the middle
of the image, the "centre bias" that a naive map would show.
A method that does no better than these on a metric has not shown anything.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from xai_keras.checks import INT32_MAX, check_int, check_number
from xai_keras.explainers.base import BatchResult, Method, register
from xai_keras.explainers.session import Session

__all__ = ["RandomMap", "CentreMap"]


class _ReferenceMap(Method):
    family = "baseline"

    def field(self, image: tf.Tensor) -> tf.Tensor:
        """(h, w) map for one (H, W, C) image."""
        raise NotImplementedError

    def attribute(self, x, targets):
        logits = self.runner.forward_fn(x)
        raw = tf.stack([self.field(image) for image in x])
        return BatchResult(raw, logits, self.runner.resolve_targets(logits, targets))


@register("random")
class RandomMap(_ReferenceMap):
    """A smooth random map: a `cells` x `cells` uniform field, resized bilinearly."""

    def __init__(self, session: Session, layer: Any = None, seed: int = 0, cells: int = 7):
        super().__init__(session, layer)
        seed = check_int(seed, "seed", low=0, high=INT32_MAX, where=f"method {self.name!r}")
        cells = check_int(cells, "cells", low=1, where=f"method {self.name!r}")
        self.seed, self.cells = seed, cells

    def field(self, image):
        # The image's pixel sum, bit for bit, picks the draw; the coarse map is resized to
        # the image bilinearly by `explain`.
        key = tf.bitcast(tf.reduce_sum(image), tf.int32)
        seed = tf.stack([tf.constant(self.seed, tf.int32), key])
        return tf.random.stateless_uniform((self.cells, self.cells), seed=seed)


@register("centre")
class CentreMap(_ReferenceMap):
    """A Gaussian bump at the image centre with std `sigma` x the image side."""

    def __init__(self, session: Session, layer: Any = None, sigma: float = 0.25):
        super().__init__(session, layer)
        sigma = check_number(sigma, "sigma", low=0.0, low_open=True, where=f"method {self.name!r}")
        self.sigma = sigma

    def field(self, image):
        height, width = image.shape[0], image.shape[1]
        y = (tf.range(height, dtype=tf.float32) + 0.5) / height - 0.5
        x = (tf.range(width, dtype=tf.float32) + 0.5) / width - 0.5
        return tf.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * self.sigma**2))
