"""Perturbation methods that sample masks: RISE, LIME and KernelSHAP.

Each image is scored under many masks. The masked images are built inside one compiled kernel
from a small tensor (RISE: the (n, cells, cells) low-resolution grids; LIME and KernelSHAP:
the (n, segments) coalitions and the image's superpixel labels) and scored in fixed-size
chunks of `batch_size` masks, so a kernel traces once per input shape. Every image gets the
same draws from `seed`, so an image's map does not depend on the batch it is in.

LIME and KernelSHAP explain the score `forward` returns for the target class: the logit where
a final softmax/sigmoid was stripped (as occlusion and the gradient methods do), the model's
output otherwise; their maps are signed. RISE explains the class probability, as in the paper
(and as Score-CAM does): its map is an expected score, read without a sign, so the score must
not be shifted by an arbitrary constant as logits are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from threadpoolctl import threadpool_limits

from xai_keras.checks import INT32_MAX, check_choice, check_int, check_number
from xai_keras.errors import InputError
from xai_keras.explainers.base import BatchResult, Method, register
from xai_keras.explainers.baselines import BASELINES, make_baseline
from xai_keras.explainers.session import Session

__all__ = [
    "SEGMENTATIONS",
    "Rise",
    "Lime",
    "KernelShap",
    "SuperpixelMethod",
    "rise_masks",
    "superpixels",
    "shapley_coalitions",
    "shapley_kernel",
]

SEGMENTATIONS = ("slic", "quickshift")
LIME_KERNEL_WIDTH = 0.25  # the lime package's default for images (on cosine distance)


# -- shared -------------------------------------------------------------------------------------
def _check_baseline(baseline: Any, where: str) -> Any:
    if isinstance(baseline, str):
        check_choice(baseline, "baseline", BASELINES, where=where)
    return baseline


# -- RISE ---------------------------------------------------------------------------------------
def _upsample(grids: tf.Tensor, shifts: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """(n, cells, cells) binary grids -> (n, h, w) soft masks: each grid resized bilinearly to
    (cells + 1) * ceil(side / cells) pixels and cropped at its own shift (Petsiuk et al.)."""
    cells = int(grids.shape[1])
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    up = tf.image.resize(grids[..., None], ((cells + 1) * ch, (cells + 1) * cw), "bilinear")
    rows = shifts[:, :1] + tf.range(h)[None]
    cols = shifts[:, 1:] + tf.range(w)[None]
    up = tf.gather(up[..., 0], rows, axis=1, batch_dims=1)
    return tf.gather(up, cols, axis=2, batch_dims=1)


def _draw_grids(h: int, w: int, masks: int, cells: int, p_keep: float, seed: int) -> tuple:
    """The low-resolution grids (masks, cells, cells) float32 and shifts (masks, 2) int32."""
    rng = np.random.default_rng(seed)
    grids = (rng.random((masks, cells, cells)) < p_keep).astype(np.float32)
    high = [math.ceil(h / cells), math.ceil(w / cells)]
    shifts = rng.integers(0, high, size=(masks, 2)).astype(np.int32)
    return grids, shifts


def rise_masks(
    size: tuple[int, int], masks: int = 2000, cells: int = 7, p_keep: float = 0.5, seed: int = 0
) -> np.ndarray:
    """The (masks, H, W) soft masks `Rise` uses for images of `size` (for tests and pictures).

    Example:
        >>> m = rise_masks((32, 32), masks=100)   # m[i] weights the image in masked pass i
    """
    grids, shifts = _draw_grids(*size, masks, cells, p_keep, seed)
    return _upsample(tf.constant(grids), tf.constant(shifts), *size).numpy()


def _rise_sums(runner, image, fill, target, grids, shifts, valid):
    """sum_i score(masked_i) * mask_i over one chunk of masks, (H, W)."""
    m = _upsample(grids, shifts, int(image.shape[0]), int(image.shape[1]))
    batch = fill[None] + m[..., None] * (image - fill)[None]
    scores = runner.squash(runner.forward(batch)[1])[:, target] * valid
    return tf.einsum("n,nhw->hw", scores, m)


@register("rise")
class Rise(Method):
    """RISE: the expected target probability over random masks that keep each pixel.

    `masks` binary grids of `cells` x `cells` cells (each kept with probability `p_keep`) are
    upsampled bilinearly to (cells + 1) * ceil(side / cells) and cropped at a random shift, so
    the masks are smooth and not aligned to the grid. The masked image is
    `m * x + (1 - m) * baseline` (`x * m` for the default black baseline of a [0, 1] model) and

        saliency = sum_i p(masked_i) * m_i / (masks * p_keep),

    with p the target probability (the values themselves for linear heads and `score=`
    functions): the paper's Monte Carlo estimate of E[p | pixel kept]. xplique divides by the
    sum of the masks at each pixel instead (about masks * p_keep): the same map in expectation
    (attenuation-corrected correlation 1.00 on the shapes CNN), with less seed-to-seed noise
    (correlation between seeds 0.96 against 0.84 here at 2000 masks; see
    scripts/compare_perturbation.py). The masked images are built inside
    the compiled kernel from the small grids and scored `batch_size` masks at a time; every
    image gets the same masks.

    Args:
        masks: the number of masks (Monte Carlo samples); the paper uses 4000-8000.
        cells: the low-resolution grid side.
        p_keep: the probability that a cell is kept.
        seed: the random draw of masks and shifts.
        baseline: what a removed pixel shows: "black" (default), "mean", "blur", a number or
            an array.

    Reference: Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018.
    """

    family = "perturbation"
    reference = "Petsiuk et al., BMVC 2018"
    zero_map_cause = "the target score was zero under every mask"

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        masks: int = 2000,
        cells: int = 7,
        p_keep: float = 0.5,
        seed: int = 0,
        baseline: str | float | np.ndarray = "black",
    ):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        self.masks = check_int(masks, "masks", low=1, where=where)
        self.cells = check_int(cells, "cells", low=1, where=where)
        self.p_keep = check_number(
            p_keep, "p_keep", low=0, high=1, low_open=True, high_open=True, where=where
        )
        self.seed = check_int(seed, "seed", low=0, high=INT32_MAX, where=where)
        self.baseline = _check_baseline(baseline, where)
        self.value_range = session.value_range
        self._sums = self.runner.kernel("rise", functools.partial(_rise_sums, self.runner))

    def attribute(self, x, targets):
        h, w = int(x.shape[1]), int(x.shape[2])
        grids, shifts = _draw_grids(h, w, self.masks, self.cells, self.p_keep, self.seed)
        valid = np.ones(self.masks, np.float32)
        logits = self.runner.forward_fn(x)
        targets = self.runner.resolve_targets(logits, targets)
        self.runner.squash(logits)  # decide, eagerly, whether outputs need a softmax
        fill = make_baseline(x, self.baseline, self.value_range)
        maps = []
        for i in range(x.shape[0]):
            sums = self.session.map_batches(
                functools.partial(self._sums, x[i], fill[i], targets[i]),
                grids,
                shifts,
                valid,
                pad=(np.zeros_like(grids[0]), np.zeros_like(shifts[0]), 0.0),  # weight 0
                combine="sum",
            )
            maps.append(sums / (self.masks * self.p_keep))
        return BatchResult(tf.stack(maps), logits, targets)


# -- superpixels --------------------------------------------------------------------------------
def superpixels(
    image: np.ndarray, segments: int = 50, segmentation: str | Callable = "slic"
) -> np.ndarray:
    """(H, W) int32 superpixel labels 0..M-1 of one (H, W, C) image.

    The image is scaled to [0, 1] (its own min and max) first, so the model's value range does
    not matter. "slic": scikit-image SLIC aiming at `segments` regions (compactness 1 on the
    scaled channels, no Lab conversion: it keeps close to `segments` regions even on noise).
    "quickshift": scikit-image quickshift with the lime package's settings (kernel_size=4,
    max_dist=200, ratio=0.2; Lab for 3 channels); the count follows the image, not
    `segments`. A callable gets the image as given and returns (H, W) integer labels.
    """
    from skimage.segmentation import quickshift, slic  # imported when used: slow to import

    image = np.asarray(image, np.float64)
    if callable(segmentation):
        labels = np.asarray(segmentation(image))
        if labels.shape != image.shape[:2] or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(
                f"A callable `segmentation` must return integer labels of shape "
                f"{image.shape[:2]}. Received: dtype {labels.dtype}, shape {labels.shape}."
            )
    else:
        low, high = image.min(), image.max()
        scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
        if segmentation == "slic":
            labels = slic(
                scaled,
                n_segments=segments,
                compactness=1.0,
                convert2lab=False,
                start_label=0,
                channel_axis=-1,
            )
        else:
            labels = quickshift(
                scaled,
                kernel_size=4,
                max_dist=200,
                ratio=0.2,
                convert2lab=image.shape[-1] == 3,
                channel_axis=-1,
            )
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)


def _segment_scores(runner, image, fill, labels, target, coalitions):
    """Target scores of `image` with the superpixels off in each coalition showing `fill`."""
    keep = tf.gather(coalitions, labels, axis=1)[..., None]  # (n, H, W, 1)
    batch = fill[None] + keep * (image - fill)[None]
    return runner.forward(batch)[1][:, target]


class SuperpixelMethod(Method):
    """Base of LIME and KernelSHAP: coalitions of superpixels are sampled, the masked images
    scored through one compiled kernel, and a linear model fitted; a subclass says how
    coalitions are drawn (`coalitions`) and the model fitted (`fit`)."""

    family = "perturbation"
    signed = True
    zero_map_cause = "the target score did not change when superpixels were removed"
    default_samples: int = 1000

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        segments: int = 50,
        samples: int | None = None,
        baseline: str | float | np.ndarray = "mean",
        segmentation: str | Callable = "slic",
        seed: int = 0,
    ):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        self.segments = check_int(segments, "segments", low=1, where=where)
        samples = self.default_samples if samples is None else samples
        self.samples = check_int(samples, "samples", low=2, where=where)
        self.baseline = _check_baseline(baseline, where)
        if not callable(segmentation):
            check_choice(segmentation, "segmentation", SEGMENTATIONS, where=where)
        self.segmentation = segmentation
        self.seed = check_int(seed, "seed", low=0, high=INT32_MAX, where=where)
        self.value_range = session.value_range
        self._scores = self.runner.kernel(
            "superpixels", functools.partial(_segment_scores, self.runner)
        )

    def coalitions(self, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(rows (n, m) of 0/1, a weight per row) for an image with `m` superpixels."""
        raise NotImplementedError

    def fit(self, z: np.ndarray, weights: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(m,) coefficient of each superpixel from the coalitions and their scores."""
        raise NotImplementedError

    def attribute(self, x, targets):
        logits = self.runner.forward_fn(x)
        targets = self.runner.resolve_targets(logits, targets)
        fill = make_baseline(x, self.baseline, self.value_range)
        maps = []
        for i in range(x.shape[0]):
            labels = superpixels(x[i].numpy(), self.segments, self.segmentation)
            m = int(labels.max()) + 1
            z, weights = self.coalitions(m, np.random.default_rng(self.seed))
            width = max(8, 1 << (m - 1).bit_length())  # padded: few widths, few traces
            rows = np.zeros((len(z), width), np.float32)
            rows[:, :m] = z
            segments = tf.constant(labels)
            y = self.session.map_batches(
                functools.partial(self._scores, x[i], fill[i], segments, targets[i]),
                rows,
            )
            y = y.numpy().astype(np.float64)
            with threadpool_limits(1):  # a small fit: BLAS threads would fight TF's
                coef = self.fit(z.astype(np.float64), weights, y)
            maps.append(tf.constant(coef[labels], tf.float32))
        return BatchResult(tf.stack(maps), logits, targets)


_SUPERPIXEL_ARGS = """segments: the number of superpixels SLIC aims for.
        samples: the number of coalitions (masked images) per image.
        baseline: what a removed superpixel shows: "mean" (the image's mean colour, default),
            "black", "blur", a number or an array.
        segmentation: "slic" (default), "quickshift" (the lime package's settings; ignores
            `segments`), or a function (H, W, C) image -> (H, W) integer labels.
        seed: the random draw of coalitions (each image gets the same draw)."""


@register("lime")
class Lime(SuperpixelMethod):
    """LIME: a weighted ridge regression of the target score on which superpixels are kept.

    As the lime package does for images: coalitions are uniform random (each superpixel kept
    with probability 1/2), the first keeps everything; each is weighted by
    sqrt(exp(-d^2 / 0.25^2)) with d its cosine distance to the all-kept coalition; the
    surrogate is `sklearn.linear_model.Ridge(alpha=1)` with an intercept. The map shows each
    pixel's superpixel coefficient (signed).

    Args:
        {args}

    Reference: Ribeiro et al., "'Why Should I Trust You?': Explaining the Predictions of Any
    Classifier", KDD 2016.
    """

    reference = "Ribeiro et al., KDD 2016"
    default_samples = 1000

    def coalitions(self, m, rng):
        z = rng.integers(0, 2, (self.samples, m))
        z[0] = 1
        kept = z.sum(axis=1)
        distance = 1.0 - np.sqrt(kept / m)  # cosine distance to all ones (1 for all off)
        return z, np.sqrt(np.exp(-(distance**2) / LIME_KERNEL_WIDTH**2))

    def fit(self, z, weights, y):
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1.0).fit(z, y, sample_weight=weights).coef_


def shapley_kernel(m: int, sizes: np.ndarray) -> np.ndarray:
    """The Shapley kernel weight (m - 1) / (C(m, s) s (m - s)) of coalitions of `sizes`
    (0 < s < m), Lundberg & Lee 2017, Theorem 2."""
    sizes = np.asarray(sizes)
    comb = np.array([math.comb(m, int(s)) for s in sizes.ravel()], np.float64)
    return (m - 1) / (comb.reshape(sizes.shape) * sizes * (m - sizes))


def shapley_coalitions(m: int, samples: int, rng: np.random.Generator) -> tuple:
    """KernelSHAP's coalitions: rows (n, m) of 0/1, all-kept first and all-removed second,
    and a weight per row (the two first are constraints, weight 0).

    When the 2^m coalitions fit in `samples` they are all taken with their exact kernel
    weights (the fit is then exactly the Shapley values); otherwise `samples - 2` coalitions
    are drawn with size s in proportion to the kernel's total weight of that size,
    (m - 1) / (s (m - s)), members uniform, each paired with its complement, weight 1.
    """
    ends = np.stack([np.ones(m, np.int64), np.zeros(m, np.int64)])
    if m <= 20 and 2**m <= samples:
        codes = np.arange(1, 2**m - 1)
        inner = (codes[:, None] >> np.arange(m)) & 1
        weights = shapley_kernel(m, inner.sum(axis=1))
    else:
        n = samples - 2
        sizes = np.arange(1, m)
        p = (m - 1) / (sizes * (m - sizes))
        half = (n + 1) // 2
        s = rng.choice(sizes, size=half, p=p / p.sum())
        ranks = np.argsort(np.argsort(rng.random((half, m)), axis=1), axis=1)
        first = (ranks < s[:, None]).astype(np.int64)
        inner = np.concatenate([first, 1 - first])[:n]
        weights = np.ones(len(inner))
    return np.concatenate([ends, inner]), np.concatenate([[0.0, 0.0], weights])


@register("kernelshap")
class KernelShap(SuperpixelMethod):
    """KernelSHAP: Shapley values of the superpixels, by the Shapley-kernel weighted
    regression with the efficiency constraint.

    The all-kept and all-removed coalitions are always scored, and the fit is constrained so
    the values sum to f(x) - f(baseline) (solved by eliminating the last superpixel, as the
    shap package does). With 2^segments <= `samples` every coalition is enumerated and the
    result equals the exact Shapley values; otherwise coalitions are sampled from the kernel
    (see `shapley_coalitions`). The map shows each pixel's superpixel value (signed).

    Args:
        {args}

    Reference: Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions",
    NeurIPS 2017.
    """

    reference = "Lundberg & Lee, NeurIPS 2017"
    default_samples = 2048

    def coalitions(self, m, rng):
        return shapley_coalitions(m, self.samples, rng)

    def fit(self, z, weights, y):
        f_empty, total = y[1], y[0] - y[1]
        if z.shape[1] == 1:
            return np.array([total])
        z, weights, y = z[2:], weights[2:], y[2:] - f_empty
        a = (z[:, :-1] - z[:, -1:]) * np.sqrt(weights)[:, None]
        b = (y - z[:, -1] * total) * np.sqrt(weights)
        rest = np.linalg.lstsq(a, b, rcond=None)[0]
        return np.append(rest, total - rest.sum())


for _cls in (Lime, KernelShap):  # the shared argument text, written once
    if _cls.__doc__:  # None under python -OO
        _cls.__doc__ = _cls.__doc__.replace("{args}", _SUPERPIXEL_ARGS)
del _cls
