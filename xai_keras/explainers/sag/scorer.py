"""Scoring patch sets: an image cut into a grid, hidden patches filled from a baseline, and the
target probability of each masked image from one compiled, fixed-batch forward pass."""

from __future__ import annotations

import functools
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.explainers.baselines import make_baseline
from xai_keras.explainers.session import Session

__all__ = ["Patches", "PatchScorer", "patch_index_map"]

Patches = tuple[int, ...]


def patch_index_map(height: int, width: int, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) int32: the patch id of each pixel for a `grid` of (rows, cols) patches.

    Works for sizes the grid does not divide: patch borders are rounded down.
    """
    rows, cols = grid
    if not (1 <= rows <= height and 1 <= cols <= width):
        raise InputError(
            f"The `grid` must be between (1, 1) and the image size ({height}, {width}). "
            f"Received: grid={grid}."
        )
    r = np.arange(height) * rows // height
    c = np.arange(width) * cols // width
    return (r[:, None] * cols + c[None, :]).astype(np.int32)


def _blend(keep: tf.Tensor, image: tf.Tensor, fill: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """(B, P) 0/1 keep-masks -> (B, H, W, C) images: kept patches from `image`, the rest
    from `fill`; `index` (H, W) gives each pixel's patch."""
    pixels = tf.gather(keep, index, axis=1)[..., None]
    return pixels * image[None] + (1.0 - pixels) * fill[None]


def _masked_probs(runner, keep, image, fill, index, target):
    """The compiled SAG kernel: (B,) target probability of each masked image."""
    return runner.squash(runner.forward(_blend(keep, image, fill, index))[1])[:, target]


def _keep_gradients(runner, keep, image, fill, index, target):
    """The ranking kernel: (B, P) gradient of the target's score with respect to each patch's
    keep weight at each row of `keep`. The score is taken before the softmax where the runner
    removed it, so a confident prediction does not flatten the gradient to zero."""
    with tf.GradientTape() as tape:
        tape.watch(keep)
        scores = runner.forward(_blend(keep, image, fill, index))[1][:, target]
        if runner.kind not in _SCORE_KINDS and runner.outputs_are_probabilities:
            scores = tf.math.log(scores + 1e-12)
    return tape.gradient(scores, keep)


_SCORE_KINDS = ("softmax", "sigmoid", "linear", "score")  # forward returns logits or values


class PatchScorer:
    """Scores patch sets of one image with a compiled, fixed-batch masked forward pass.

    Args:
        model: the classifier, or a `Session` (its head, held inputs, value range: "black" is
            its minimum, and batch size: masked images per forward pass).
        image: (H, W, C) float32.
        target: the class whose probability is measured.
        grid: (rows, cols).
        baseline: what hidden patches show ("blur", "blur_strong", "black", "mean", a number
            or an array).
    """

    def __init__(
        self,
        model: keras.Model | Session,
        image: np.ndarray,
        target: int,
        grid: tuple[int, int],
        baseline: Any = "blur",
    ):
        self.session = session = Session.of(model)
        self.runner = session.runner
        self.image = tf.constant(image, tf.float32)
        self.fill = make_baseline(self.image[None], baseline, session.value_range)[0]
        self.index = tf.constant(patch_index_map(image.shape[0], image.shape[1], grid))
        self.n_patches = grid[0] * grid[1]
        self.target = tf.constant(int(target), tf.int32)
        self.batch_size = session.batch_size
        self.cache: dict[frozenset, float] = {}
        self.n_forward = 0
        self.n_gradient = 0
        self._kernel = self.runner.kernel("sag", functools.partial(_masked_probs, self.runner))

    def patch_gradients(self, keep: np.ndarray) -> np.ndarray:
        """(B, P) gradient of the target's score with respect to each patch's keep weight, at
        each row of `keep` (B, P) in [0, 1] (1: the image, 0: the baseline); compiled forward
        and backward passes of up to `batch_size` rows. `n_gradient` counts the rows."""
        kernel = self.runner.kernel("sag_rank", functools.partial(_keep_gradients, self.runner))
        grads = self.session.map_batches(
            lambda rows: kernel(rows, self.image, self.fill, self.index, self.target),
            tf.constant(keep, tf.float32),
        )
        self.n_gradient += len(keep)
        return grads.numpy()

    def masked_images(self, sets: list[Patches]) -> np.ndarray:
        """The inputs as the model sees them for each patch set, (N, H, W, C)."""
        return _blend(self._keep(sets), self.image, self.fill, self.index).numpy()

    def _keep(self, sets: list[Patches]) -> tf.Tensor:
        keep = np.zeros((len(sets), self.n_patches), np.float32)
        for i, s in enumerate(sets):
            keep[i, list(s)] = 1.0
        return tf.constant(keep)

    def probabilities(self, sets: list[Patches]) -> np.ndarray:
        """Target probability for each set, scoring only sets not seen before.

        Full batches, then the rest as one batch, which the session pads up to a power of two
        (`batch_buckets`) rather than to `batch_size`: this runs thousands of times per image,
        so the few sets the minimisation and graph steps ask for should cost little padding;
        the kernel traces at most log2(batch_size) + 1 shapes.
        """
        todo = list(dict.fromkeys(frozenset(s) for s in sets if frozenset(s) not in self.cache))
        whole = len(todo) - len(todo) % self.batch_size
        for part in (todo[:whole], todo[whole:]):
            if part:
                probs = self.session.map_batches(
                    lambda k: self._kernel(k, self.image, self.fill, self.index, self.target),
                    self._keep([tuple(s) for s in part]),
                )
                self.n_forward += len(part)
                self.cache.update(zip(part, probs.numpy().tolist()))
        return np.array([self.cache[frozenset(s)] for s in sets], np.float64)
