"""Occlusion: slide a patch over the image and record how much the target score drops."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import tensorflow as tf

from xai_keras.checks import check_choice, check_int
from xai_keras.errors import InputError
from xai_keras.explainers.base import BatchResult, Method, register
from xai_keras.explainers.baselines import BASELINES, make_baseline
from xai_keras.explainers.session import Session

__all__ = ["Occlusion", "patch_corners"]


def patch_corners(size: int, patch: int, stride: int) -> np.ndarray:
    """Start offsets along one side so that patches cover every pixel."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return np.array(starts, np.int32)


def _occluded_scores(runner, image, fill, corners, target, patch):
    """Sum over patches of (target score x coverage) and the coverage count, (H, W) each."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ys = tf.range(h)[None, :, None]
    xs = tf.range(w)[None, None, :]
    cy, cx = corners[:, 0, None, None], corners[:, 1, None, None]
    inside = (ys >= cy) & (ys < cy + patch) & (xs >= cx) & (xs < cx + patch)
    batch = tf.where(inside[..., None], fill[None], image[None])
    scores = runner.forward(batch)[1][:, target]
    valid = tf.cast(corners[:, 0] >= 0, tf.float32)[:, None, None]  # padding rows are -1
    cover = tf.cast(inside, tf.float32) * valid
    return tf.einsum("b,bhw->hw", scores, cover), tf.reduce_sum(cover, axis=0)


@register("occlusion")
class Occlusion(Method):
    """Occlusion sensitivity: each pixel's score is the mean drop of the target logit over the
    patches covering it. The occluded images run in compiled, fixed-size batches.

    Args:
        patch: patch side in pixels (default: 1/8 of the image side).
        stride: step between patches (default: half the patch).
        baseline: what fills the patch: "mean", "black", "blur", a number or an array.

    Reference: Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014.
    """

    family = "perturbation"
    signed = True
    reference = "Zeiler & Fergus, ECCV 2014"

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        patch: int | None = None,
        stride: int | None = None,
        baseline: str | float | np.ndarray = "mean",
    ):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        patch = check_int(patch, "patch", low=1, where=where, allow_none=True)
        stride = check_int(stride, "stride", low=1, where=where, allow_none=True)
        if isinstance(baseline, str):
            check_choice(baseline, "baseline", BASELINES, where=where)
        self.patch, self.stride, self.baseline = patch, stride, baseline
        self.value_range = session.value_range
        self._scores = self.runner.kernel(
            "occlusion", functools.partial(_occluded_scores, self.runner)
        )

    def attribute(self, x, targets):
        h, w = int(x.shape[1]), int(x.shape[2])
        patch = self.patch or max(2, min(h, w) // 8)
        stride = self.stride or max(1, patch // 2)
        if not 0 < patch <= min(h, w):
            raise InputError(
                f"The occlusion `patch` must be in [1, {min(h, w)}]. Received: patch={patch}."
            )
        grid = np.stack(
            np.meshgrid(patch_corners(h, patch, stride), patch_corners(w, patch, stride)),
            axis=-1,
        ).reshape(-1, 2)
        logits = self.runner.forward_fn(x)
        targets = self.runner.resolve_targets(logits, targets)
        clean = tf.gather(logits, targets, batch_dims=1)
        fill = make_baseline(x, self.baseline, self.value_range)
        size, maps = tf.constant(patch), []
        for i in range(x.shape[0]):
            weighted, count = self.session.map_batches(
                functools.partial(self._scores, x[i], fill[i], target=targets[i], patch=size),
                grid.astype(np.int32),
                pad=(np.array([-1, -1], np.int32),),  # a corner of -1 occludes nothing
                combine="sum",
            )
            maps.append(clean[i] - weighted / tf.maximum(count, 1.0))
        return BatchResult(tf.stack(maps), logits, targets)
