"""Images made from two others by a map's pixel ranking, scored in one compiled kernel.

The deletion and insertion curves (`xai_keras.evaluate`) and `layer="auto"` both ask: what
is the target probability when the k top-ranked pixels of a map come from one image and the
rest from another? `curve_scores` answers for many (image, k) rows at once, in the session's
padded batches, so the kernel traces once per input shape and batch size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from xai_keras.explainers.baselines import REMOVAL_ORDER, auto_removal, make_baseline
from xai_keras.explainers.graph import ModelRunner
from xai_keras.explainers.session import Session

__all__ = ["curve_kernel", "curve_scores", "pixel_ranks", "removal_baseline"]


def pixel_ranks(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) int32 rank of each pixel in decreasing map order (0 = most important).

    A stable sort of -map: equal values keep row-major order.
    """
    flat = maps.reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None], axis=1)
    return ranks.reshape(maps.shape).astype(np.int32)


def _masked_probabilities(runner: ModelRunner, first, second, ranks, k, targets):
    """(B,) target probability of images taking the pixels of rank < k from `first` and the
    others from `second`. first, second (B, H, W, C); ranks (B, H, W); k, targets (B,)."""
    take = (ranks < k[:, None, None])[..., None]
    probs = runner.squash(runner.forward(tf.where(take, first, second))[1])
    return tf.gather(probs, targets, batch_dims=1)


def curve_kernel(runner: ModelRunner) -> Callable:
    """The compiled kernel, built once per runner (so once per model)."""
    return runner.kernel("faithfulness", functools.partial(_masked_probabilities, runner))


def curve_scores(
    session: Session,
    first: tf.Tensor,
    second: tf.Tensor,
    ranks: np.ndarray,
    rows_image: np.ndarray,
    rows_k: np.ndarray,
    rows_target: np.ndarray,
) -> np.ndarray:
    """(R,) target probability of each row: image `rows_image[r]` with its `rows_k[r]`
    top-ranked pixels (by `ranks`) from `first` and the others from `second`.

    `first`, `second` (N, H, W, C) and `ranks` (N, H, W) are indexed by `rows_image`; the rows
    go through the session's padded batches.
    """
    ranks = tf.constant(ranks)
    kernel = curve_kernel(session.runner)

    def batch(idx: tf.Tensor, k: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        return kernel(tf.gather(first, idx), tf.gather(second, idx), tf.gather(ranks, idx), k, t)

    rows = (np.asarray(a, np.int32) for a in (rows_image, rows_k, rows_target))
    return session.map_batches(batch, *rows).numpy().astype(np.float64)


def removal_baseline(
    session: Session, x: tf.Tensor, targets: np.ndarray, clean: np.ndarray
) -> tf.Tensor:
    """The "auto" baseline of deletion and insertion: per image, `auto_removal`'s choice with
    "removed" meaning below half the clean target probability.
    The choice depends on the image alone, never on a map, so curves of different maps stay
    paired."""
    fills = [make_baseline(x, kind, session.value_range) for kind in REMOVAL_ORDER]
    rows = np.arange(len(targets))
    kept = np.stack([session.probabilities(f)[rows, targets] for f in fills])  # (K, N)
    choice = auto_removal(kept, 0.5 * clean)
    return tf.stack([fills[k][i] for i, k in enumerate(choice)])
