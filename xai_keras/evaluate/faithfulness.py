"""Faithfulness metrics: does the model's confidence follow the pixels the map calls important?

`deletion` and `insertion` replace (or restore) pixels in decreasing order of the map and record
the target probability after each step; `average_drop_increase` masks the image with the map.
They work on any model and any maps (N, H, W), not only on maps from `explain`.

The rest of the family (opt-in in `evaluate_model`, checked against Quantus and Captum by
`scripts/compare_metrics.py`): `faithfulness_correlation`, `faithfulness_estimate`,
`pixel_flipping`, `region_perturbation`, `irof` and `infidelity`, all reading target scores of
perturbed images through `perturbed_scores` (one compiled kernel, the session's padded loop).

All masked images are built inside one compiled kernel per model (pixels whose rank is below a
threshold come from one image, the rest from another), run in the session's padded batches, so
the kernel traces once per input shape and batch size. Each takes a model or a `Session`, and
so every model form `explain` takes (one output of several, a sigmoid unit, held inputs, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import scipy.spatial.distance
import scipy.stats
import tensorflow as tf

from xai_keras.checks import check_int, check_number, check_positive_int
from xai_keras.errors import InputError
from xai_keras.evaluate.perturbation import (
    Baseline,
    Perturbed,
    input_span,
    perturbed_scores,
)
from xai_keras.evaluate.perturbation import fill as _fill
from xai_keras.evaluate.perturbation import prepare as _prepare
from xai_keras.evaluate.registry import register_metric
from xai_keras.explainers.masking import curve_scores, pixel_ranks, removal_baseline
from xai_keras.explainers.session import Session

__all__ = [
    "Curves",
    "PerturbationCurves",
    "average_drop_increase",
    "deletion",
    "faithfulness_correlation",
    "faithfulness_estimate",
    "infidelity",
    "input_span",
    "insertion",
    "irof",
    "monotonicity",
    "monotonicity_correlation",
    "perturbed_scores",
    "pixel_flipping",
    "region_order",
    "region_perturbation",
    "sufficiency",
    "superpixels",
]


@dataclass
class Curves:
    """Deletion or insertion curves of a batch of images.

    Attributes:
        fractions: (S + 1,) fractions of the pixels removed (deletion) or inserted (insertion),
            from 0 to 1.
        scores: (N, S + 1) the target probability at each fraction.
        kind: "deletion" or "insertion".
        targets: (N,) the class whose probability is measured.
    """

    fractions: np.ndarray
    scores: np.ndarray
    kind: str
    targets: np.ndarray | None = None

    @property
    def informative(self) -> np.ndarray:
        """(N,) bool: the baseline removes at least half of the target probability (the
        fully deleted image, or the insertion canvas, scores below half the clean image).
        Elsewhere the curve is nearly flat for any map, so it says nothing about the map:
        significance tests (`beats_random`) use only these images."""
        clean, empty = (0, -1) if self.kind == "deletion" else (-1, 0)
        return self.scores[:, empty] < 0.5 * self.scores[:, clean]

    @property
    def auc(self) -> np.ndarray:
        """(N,) trapezoid area under each curve, in [0, 1] (fractions span [0, 1]).

        Lower is better for deletion (the probability falls fast), higher for insertion.
        """
        widths = np.diff(self.fractions)
        return ((self.scores[:, 1:] + self.scores[:, :-1]) / 2 * widths).sum(axis=1)


def _curves(
    kind: str,
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: Any,
    steps: int,
    baseline: Baseline,
    settings: dict,
) -> Curves:
    steps = check_positive_int(steps, "steps")
    session, x, m, tgt, clean = _prepare(model, images, maps, targets, settings)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    ks = np.floor(fractions * m.shape[1] * m.shape[2] + 0.5).astype(np.int32)  # round half up
    scores = np.zeros((len(m), steps + 1))
    for g in session.groups(len(m)):  # images that share held inputs
        if isinstance(baseline, str) and baseline == "auto":
            fill = removal_baseline(session, x[g], tgt[g], clean[g])
        else:
            fill = _fill(x[g], baseline, session.value_range)
        first, second = (fill, x[g]) if kind == "deletion" else (x[g], fill)
        n = len(tgt[g])
        rows_image = np.repeat(np.arange(n, dtype=np.int32), steps + 1)  # (image, fraction)
        rows = (rows_image, np.tile(ks, n), tgt[g][rows_image])
        scores[g] = curve_scores(session, first, second, pixel_ranks(m[g]), *rows).reshape(n, -1)
    return Curves(fractions=fractions, scores=scores, kind=kind, targets=tgt)


_RISE = (
    'Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models", '
    "BMVC 2018"
)
_CURVE_ARGS = """Args:
        model: a Keras classifier or a `Session` (see `explain` for every model form).
        images: (N, H, W, C) or one (H, W, C) image, preprocessed as the model expects.
        maps: (N, H, W) (or (H, W)) importance maps; larger is more important. Ties are broken
            in row-major order (a stable sort), so a constant map removes pixels top to bottom.
        targets: the class(es) whose probability is measured; None takes each image's top
            class on the clean image.
        steps: the number of steps; fraction f covers the round(f * H * W) top pixels.
        baseline: what a removed pixel shows: "blur" (the image blurred), "blur_strong",
            "mean", "black", "auto" (per image, the first of those that removes at least
            half of the target probability: a baseline that keeps the class makes every
            map's curve flat), a number, an array broadcastable to the images, or a callable
            images -> baseline.
        batch_size: masked images per compiled forward pass (default: the session's, 32).
        value_range: the model's input range, e.g. (-1, 1) or "tf": "black" is its minimum.
        **model_form: `output`, `head`, `score`, `inputs`, `reshape`, as in `explain`.

    Returns:
        `Curves` with `scores` (N, steps + 1) probabilities in [0, 1] and `auc` (N,).

    Raises:
        InputError: bad images, maps (shape must be (N, H, W)), targets, steps or baseline.
"""


@register_metric(
    "deletion",
    direction="lower",
    needs=("model",),
    description="area under the target probability as the top-ranked pixels are removed",
    reference=_RISE,
    key="deletion_auc",
    label="deletion AUC",
    value=lambda curves: curves.auc,
)
def deletion(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    steps: int = 20,
    baseline: Baseline = "blur",
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> Curves:
    """Deletion curves: the target probability as the most important pixels are removed.

    At fraction f the round(f * H * W) highest-ranked pixels show the baseline instead of the
    image: fraction 0 is the clean image, fraction 1 the baseline. A faithful map makes the
    probability fall fast: a low AUC.

    {args}
    Example:
        >>> exp = explain(model, images)
        >>> deletion(model, images, exp.maps).auc.mean()

    Reference: Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018.
    """
    settings = dict(model_form, batch_size=batch_size, value_range=value_range)
    return _curves("deletion", model, images, maps, targets, steps, baseline, settings)


@register_metric(
    "insertion",
    direction="higher",
    needs=("model",),
    description="area under the target probability as the top-ranked pixels are restored",
    reference=_RISE,
    key="insertion_auc",
    label="insertion AUC",
    value=lambda curves: curves.auc,
)
def insertion(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    steps: int = 20,
    baseline: Baseline = "blur",
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> Curves:
    """Insertion curves: the target probability as the most important pixels are restored.

    Starts from the baseline (fraction 0) and inserts image pixels in the deletion order, up to
    the clean image (fraction 1). A faithful map makes the probability rise fast: a high AUC.

    {args}
    Example:
        >>> insertion(model, images, explain(model, images).maps).auc.mean()

    Reference: Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018.
    """
    settings = dict(model_form, batch_size=batch_size, value_range=value_range)
    return _curves("insertion", model, images, maps, targets, steps, baseline, settings)


for _f in (deletion, insertion):  # the shared argument text, written once
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.replace("{args}", _CURVE_ARGS)
del _f


_GRADCAMPP = (
    'Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional '
    'Networks", WACV 2018'
)


# Stacked: the lower decorator registers first, so "average_drop" precedes "increase".
@register_metric(
    "increase",
    direction="higher",
    needs=("model",),
    description="whether the target probability rises on the image masked by the map",
    reference=_GRADCAMPP,
    value=lambda result: result[1],
)
@register_metric(
    "average_drop",
    direction="lower",
    needs=("model",),
    description="the relative fall of the target probability on the image masked by the map",
    reference=_GRADCAMPP,
    value=lambda result: result[0],
)
def average_drop_increase(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    **model_form: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Average Drop and Increase in Confidence, per image, with the map as a soft mask.

    With Y the target probability on the image and O on `image * map` (the map broadcast over
    channels): drop = max(0, Y - O) / Y and increase = O > Y. Their means over images are the
    paper's "Average Drop %" (x 100) and "% Increase in Confidence" (x 100).

    Args:
        model: a Keras classifier or a `Session` (see `explain` for every model form).
        images: (N, H, W, C) or one (H, W, C) image.
        maps: (N, H, W) (or (H, W)) maps in [0, 1], e.g. `Explanation.maps`.
        targets: the class(es) to measure; None takes each image's top class.
        batch_size: images per compiled forward pass (default: the session's, 32).
        **model_form: `output`, `head`, `score`, `inputs`, `reshape`, `value_range`, as in
            `explain`.

    Returns:
        `(drop, increase)`: (N,) float64 in [0, 1] and (N,) bool.

    Raises:
        InputError: bad images, targets, or maps that do not match the images or lie
            outside [0, 1].

    Example:
        >>> drop, increase = average_drop_increase(model, images, exp.maps)
        >>> drop.mean() * 100, increase.mean() * 100

    Reference: Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep
    Convolutional Networks", WACV 2018.
    """
    settings = dict(model_form, batch_size=batch_size)
    session, x, m, tgt, clean = _prepare(model, images, maps, targets, settings)
    if m.min() < 0 or m.max() > 1:
        raise InputError(
            "The `maps` argument must lie in [0, 1] to be used as a soft mask (e.g. divide "
            f"each map by its maximum). Received: min={m.min():.4g}, max={m.max():.4g}."
        )
    masked = x * tf.constant(m[..., None], tf.float32)
    probs = np.concatenate([session.probabilities(masked[g]) for g in session.groups(len(m))])
    o = probs[np.arange(len(tgt)), tgt].astype(np.float64)
    y = clean.astype(np.float64)
    drop = np.where(y > 0, np.maximum(0.0, y - o) / np.where(y > 0, y, 1.0), 0.0)
    return drop, o > y


# -- the perturbation family beyond deletion and insertion ------------------------------------
# Quantus' faithfulness metrics (and Captum's infidelity) all read one number: the target score
# of perturbed copies of each image. `Perturbed` (xai_keras.evaluate.perturbation) validates the
# inputs and scores any rows (image, step) in the session's padded batches, through one compiled
# kernel per score kind; each metric says only how row (image, step) is perturbed.


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation, NaN where either side is constant."""
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _random_subset(shape: tuple[int, int], size: int, seed: Sequence[int]) -> np.ndarray:
    """(H, W) bool with `size` pixels drawn without replacement from the generator `seed`."""
    flat = np.zeros(shape[0] * shape[1], bool)
    flat[np.random.default_rng(seed).choice(flat.size, size, replace=False)] = True
    return flat.reshape(shape)


_BHATT = (
    'Bhatt, Weller and Moura, "Evaluating and Aggregating Feature-based Model Explanations", '
    "IJCAI 2020"
)
_PERTURB_ARGS = """Args:
        model: a Keras classifier or a `Session` (see `explain` for every model form).
        images: (N, H, W, C) or one (H, W, C) image, preprocessed as the model expects.
        maps: (N, H, W) (or (H, W)) attributions, signed or not (a feature is a pixel, all its
            channels together); larger is more important.
        targets: the class(es) measured; None takes each image's top class.
        baseline: what a removed pixel shows: "black" (the model's range minimum, 0 without
            a range), "mean", "blur", "blur_strong", "uniform" (noise between the range's
            minimum and maximum), a number, an array or a callable (as in `deletion`).
        measure: the score read: "logit" (the score the methods explain: the logits where a
            final softmax or sigmoid was stripped, else the output) or "probability".
        batch_size: perturbed images per compiled forward pass (default: the session's).
        value_range: the model's input range, e.g. (-1, 1) or "tf".
        **model_form: `output`, `head`, `score`, `inputs`, `reshape`, as in `explain`."""


@register_metric(
    "faithfulness_correlation",
    direction="higher",
    needs=("model",),
    default=False,
    description="correlation of the map's sum over random pixel subsets with the score drop "
    "when they are removed",
    reference=_BHATT,
)
def faithfulness_correlation(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    runs: int = 100,
    subset_size: int | None = None,
    baseline: Baseline = "black",
    measure: str = "logit",
    seed: int = 0,
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> np.ndarray:
    """Faithfulness Correlation: Pearson's r, over `runs` random pixel subsets S, between the
    map's sum over S and the score drop f(x) - f(x with S replaced by the baseline).

    mu_F(f, g; x) = corr_S( sum_{i in S} g(x)_i , f(x) - f(x_[x_S = baseline]) ), |S| fixed.
    1 for a map whose sums predict every drop linearly (gradient x input on a linear model
    with a zero baseline), about 0 for a random map. Subsets are drawn per image from
    `numpy.random.default_rng([seed, image, run])`, so they do not depend on the batch size
    and two maps of the same image see the same subsets (paired comparisons).

    {args}
        runs: the number of random subsets per image (Quantus: 100).
        subset_size: pixels per subset; None: 5% of the pixels (Quantus' default is 224
            pixels whatever the image size, 0.45% of 224 x 224).
        seed: the subsets' seed.

    Returns:
        (N,) correlations in [-1, 1] (NaN where all drops or all sums are equal).

    Raises:
        InputError: bad images, maps, targets, runs, subset size, baseline or score.

    Example:
        >>> faithfulness_correlation(model, images, exp.maps).mean()

    Reference: Bhatt, Weller and Moura, "Evaluating and Aggregating Feature-based Model
    Explanations", IJCAI 2020. (Quantus `FaithfulnessCorrelation`, equal on the same subsets.)
    """
    runs = check_int(runs, "runs", low=2)
    seed = check_int(seed, "seed", low=0)
    p = Perturbed.of(model, images, maps, targets, measure, batch_size=batch_size,
                     value_range=value_range, **model_form)  # fmt: skip
    n, h, w = p.shape
    size = max(1, round(0.05 * h * w)) if subset_size is None else subset_size
    size = check_int(size, "subset_size", low=1, high=h * w)
    fill = p.baseline(baseline, seed)

    def subset(i: int, run: int) -> np.ndarray:
        return _random_subset((h, w), size, (seed, i, run))

    sums = np.array([[p.maps[i][subset(i, r)].sum() for r in range(runs)] for i in range(n)])
    clean = p.clean()

    def masks(idx: np.ndarray, run: np.ndarray) -> np.ndarray:
        return np.stack([subset(i, r) for i, r in zip(idx, run, strict=True)])

    drops = clean[:, None] - p.removed(runs, fill, masks)
    return np.array([_pearson(sums[i], drops[i]) for i in range(n)])


def _group_steps(pixels: int, features_in_step: int | None, default_steps: int) -> int:
    f = -(-pixels // default_steps) if features_in_step is None else features_in_step
    return check_int(f, "features_in_step", low=1, high=pixels)


def _rank_groups(
    maps: np.ndarray, features_in_step: int | None, ascending: bool
) -> tuple[np.ndarray, int]:
    """(N, H, W) group of each pixel, groups of `features_in_step` pixels (default: 64 groups)
    in decreasing map order (group 0 the most relevant) or, `ascending`, increasing (group 0
    the least); ties in row-major order. And the number of groups."""
    pixels = maps.shape[1] * maps.shape[2]
    f = _group_steps(pixels, features_in_step, 64)
    return pixel_ranks(-maps if ascending else maps) // f, -(-pixels // f)


def _group_sums(group: np.ndarray, maps: np.ndarray, steps: int) -> np.ndarray:
    """(N, steps) each group's map sum."""
    return np.stack([np.bincount(g.ravel(), m.ravel(), steps) for g, m in zip(group, maps)])


_ALVAREZ = (
    'Alvarez-Melis and Jaakkola, "Towards Robust Interpretability with Self-Explaining Neural '
    'Networks", NeurIPS 2018'
)


@register_metric(
    "faithfulness_estimate",
    direction="higher",
    needs=("model",),
    default=False,
    description="correlation of each pixel group's attribution with the score drop when that "
    "group alone is removed",
    reference=_ALVAREZ,
)
def faithfulness_estimate(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    features_in_step: int | None = None,
    baseline: Baseline = "black",
    measure: str = "logit",
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> np.ndarray:
    """Faithfulness Estimate: Pearson's r between each feature group's attribution and the
    score drop when that group alone is replaced by the baseline.

    The pixels are ranked by the map (descending, ties in row-major order) and cut into
    groups of `features_in_step` consecutive ranks (the last may be smaller); group j's
    attribution is its map sum, its drop f(x) - f(x with group j removed).

    {args}
        features_in_step: pixels per group; None: H * W / 64 rounded up (64 groups).

    Returns:
        (N,) correlations in [-1, 1] (NaN where constant).

    Example:
        >>> faithfulness_estimate(model, images, exp.maps).mean()

    Reference: Alvarez-Melis and Jaakkola, "Towards Robust Interpretability with
    Self-Explaining Neural Networks", NeurIPS 2018. (Quantus `FaithfulnessEstimate`.)
    """
    p = Perturbed.of(model, images, maps, targets, measure, batch_size=batch_size,
                     value_range=value_range, **model_form)  # fmt: skip
    n = p.shape[0]
    group, steps = _rank_groups(p.maps, features_in_step, ascending=False)
    sums = _group_sums(group, p.maps, steps)
    fill = p.baseline(baseline)
    clean = p.clean()
    drops = clean[:, None] - p.removed(steps, fill, lambda i, j: group[i] == j[:, None, None])
    return np.array([_pearson(sums[i], drops[i]) for i in range(n)])


@dataclass
class PerturbationCurves:
    """Target scores as more and more of each image is removed, most relevant first.

    Attributes:
        fractions: (N, S + 1) the share of the image's pixels (pixel flipping, region
            perturbation) or of its segments (IROF) removed at each step, from 0.
        scores: (N, S + 1) the target score at each step; column 0 is the clean image.
        kind: "pixel_flipping", "region_perturbation" or "irof".
        targets: (N,) the measured classes.
    """

    fractions: np.ndarray
    scores: np.ndarray
    kind: str
    targets: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        """(N,) trapezoid area under the score against the fraction removed (lower: the
        score falls faster)."""
        return np.trapezoid(self.scores, self.fractions, axis=1)

    @property
    def aopc(self) -> np.ndarray:
        """(N,) area over the perturbation curve (Samek et al.): the mean over steps
        0..S of f(x) - f(x after k steps); higher: the score falls faster."""
        return (self.scores[:, :1] - self.scores).mean(axis=1)

    @property
    def aoc_normalised(self) -> np.ndarray:
        """(N,) IROF: the area over the curve of the score divided by the clean score,
        against the fraction removed: 1 - area under it (higher is better)."""
        s = self.scores / np.where(self.scores[:, :1] != 0, self.scores[:, :1], 1.0)
        return 1.0 - np.trapezoid(s, self.fractions, axis=1)


def _cumulative_curves(
    p: Perturbed,
    fill: np.ndarray,
    order: np.ndarray,
    counts: np.ndarray,
    source: np.ndarray | None = None,
) -> np.ndarray:
    """(N, S + 1) scores with the pixels of `order` (N, H, W) below counts[i, k] taken from
    `fill` at step k (counts (N, S + 1); counts[:, 0] = 0 gives the unperturbed image, the
    images or `source`)."""

    def masks(idx: np.ndarray, step: np.ndarray) -> np.ndarray:
        return order[idx] < counts[idx, step][:, None, None]

    return p.removed(counts.shape[1], fill, masks, source)


@register_metric(
    "pixel_flipping",
    direction="lower",
    needs=("model",),
    default=False,
    description="area under the target score as pixels are flipped to the baseline, most "
    "relevant first",
    reference='Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions '
    'by Layer-Wise Relevance Propagation", PLOS ONE 2015',
    label="pixel flipping AUC",
    value=lambda curves: curves.auc,
)
def pixel_flipping(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    features_in_step: int | None = None,
    baseline: Baseline = "black",
    measure: str = "probability",
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> PerturbationCurves:
    """Pixel Flipping: the target score as the map's top pixels are flipped to the baseline,
    `features_in_step` more at each step, until every pixel is flipped.

    Deletion with Quantus' conventions: steps of a fixed number of pixels, a black baseline
    and the clean image as step 0. The value is the area under the curve against the
    fraction flipped, in [0, 1] for probabilities: lower is better. (Quantus' curve omits
    step 0 and its AUC is `np.trapz` with unit spacing: the same curve, another scale.)

    {args}
        features_in_step: pixels flipped per step; None: H * W / 64 rounded up.

    Returns:
        `PerturbationCurves` (`scores` (N, S + 1), `auc` (N,)).

    Example:
        >>> pixel_flipping(model, images, exp.maps).auc.mean()

    Reference: Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions
    by Layer-Wise Relevance Propagation", PLOS ONE 2015.
    """
    p = Perturbed.of(model, images, maps, targets, measure, batch_size=batch_size,
                     value_range=value_range, **model_form)  # fmt: skip
    n, h, w = p.shape
    f = _group_steps(h * w, features_in_step, 64)
    ks = np.minimum(np.arange(0, -(-(h * w) // f) + 1) * f, h * w)
    counts = np.broadcast_to(ks, (n, len(ks)))
    scores = _cumulative_curves(p, p.baseline(baseline), pixel_ranks(p.maps), counts)
    fractions = np.broadcast_to(ks / (h * w), scores.shape).copy()
    return PerturbationCurves(fractions, scores, "pixel_flipping", p.targets)


def region_order(maps: np.ndarray, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square regions on a grid, most relevant first: the image is tiled by
    patch_size x patch_size cells from the top-left corner (the last row and column of cells
    may be cut by the border), and the cells are ranked by their map sum, decreasing (ties:
    row-major order of the cells).

    Returns:
        `(order, count)`: order (N, H, W) int, the rank of the cell holding each pixel, and
        count (N,) cells per image.
    """
    n, h, w = maps.shape
    p = patch_size
    rows, cols = -(-h // p), -(-w // p)
    cell = (np.arange(h)[:, None] // p) * cols + np.arange(w)[None] // p  # (H, W) cell index
    order = np.empty((n, h, w), np.int64)
    for i in range(n):
        sums = np.bincount(cell.ravel(), maps[i].ravel(), rows * cols)
        rank = np.empty(rows * cols, np.int64)
        rank[np.argsort(-sums, kind="stable")] = np.arange(rows * cols)
        order[i] = rank[cell]
    return order, np.full(n, rows * cols, np.int64)


_SAMEK = (
    'Samek et al., "Evaluating the Visualization of What a Deep Neural Network Has Learned", '
    "IEEE TNNLS 2017"
)


@register_metric(
    "region_perturbation",
    direction="higher",
    needs=("model",),
    default=False,
    description="AOPC: mean score drop as the most relevant square regions are replaced by noise",
    reference=_SAMEK,
    key="region_aopc",
    label="region perturbation AOPC",
    value=lambda curves: curves.aopc,
)
def region_perturbation(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    patch_size: int = 8,
    regions: int = 100,
    baseline: Baseline = "uniform",
    measure: str = "logit",
    seed: int = 0,
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> PerturbationCurves:
    """Region Perturbation (MoRF) and its AOPC: the score as the most relevant square
    regions are replaced, one more per step.

    Regions are the cells of a grid ranked by their map sum (`region_order`, as Quantus
    0.6; the paper centres 9 x 9 regions on the most relevant pixels, which may overlap);
    step k replaces the first k regions. AOPC = 1/(L+1) sum_{k=0}^{L} f(x) - f(x^(k)) (the
    paper's; Quantus averages its curve over k = 1..L: the same curve with
    another normaliser), higher is better. Where an image has fewer than L regions, the last steps
    repeat the fully perturbed image. The paper fills regions with uniform noise
    (`baseline="uniform"`, drawn once per image from `[seed, image]`).

    {args}
        patch_size: the side of a region in pixels (Quantus: 8; the paper 9 on 224 x 224).
        regions: L, the number of steps (the paper and Quantus: 100).
        seed: the uniform noise's seed.

    Returns:
        `PerturbationCurves` (`scores` (N, L + 1), `aopc` (N,)).

    Example:
        >>> region_perturbation(model, images, exp.maps, patch_size=4).aopc.mean()

    Reference: Samek et al., "Evaluating the Visualization of What a Deep Neural Network Has
    Learned", IEEE TNNLS 2017.
    """
    p = Perturbed.of(model, images, maps, targets, measure, batch_size=batch_size,
                     value_range=value_range, **model_form)  # fmt: skip
    n, h, w = p.shape
    patch_size = check_int(patch_size, "patch_size", low=1, high=min(h, w))
    regions = check_int(regions, "regions", low=1)
    order, count = region_order(p.maps, patch_size)
    counts = np.minimum(np.arange(regions + 1)[None], count[:, None])
    scores = _cumulative_curves(p, p.baseline(baseline, seed), order, counts)
    removed = np.stack([np.sort(order[i].ravel()) for i in range(n)])  # region rank by pixel
    fractions = np.stack([np.searchsorted(removed[i], counts[i]) for i in range(n)]) / (h * w)
    return PerturbationCurves(fractions, scores, "region_perturbation", p.targets)


def superpixels(images: np.ndarray, segments: int = 100, seed: int = 0) -> np.ndarray:
    """(N, H, W) int SLIC superpixel labels 0..K-1 of each image (scaled to [0, 1] first),
    as IROF segments them (`skimage.segmentation.slic`, compactness 10)."""
    from skimage.segmentation import slic

    out = np.empty(images.shape[:3], np.int64)
    for i, img in enumerate(images):
        lo, hi = img.min(), img.max()
        scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        labels = slic(
            scaled.astype(np.float64), n_segments=segments, start_label=0, channel_axis=-1,
            convert2lab=img.shape[-1] == 3,
        )  # fmt: skip
        out[i] = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    return out


@register_metric(
    "irof",
    direction="higher",
    needs=("model",),
    default=False,
    description="area over the relative score curve as superpixels are removed, most "
    "relevant (highest mean) first",
    reference='Rieger and Hansen, "IROF: a low resource evaluation metric for explanation '
    'methods", ICLR Workshops 2020',
    key="irof",
    label="IROF",
    value=lambda curves: curves.aoc_normalised,
)
def irof(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    segments: int | np.ndarray = 100,
    baseline: Baseline = "mean",
    measure: str = "probability",
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> PerturbationCurves:
    """IROF (Iterative Removal Of Features): superpixels are removed in decreasing mean
    relevance; the value is the area over the curve of the score relative to the clean one
    (f(x^(k)) / f(x)) against the fraction of segments removed: 1 - its area under it.

    A map that finds the class's segments first scores near 1; a random one lower. Removed
    segments show each image's channel means (the paper's and Quantus' default).

    {args}
        segments: SLIC's target number of superpixels (`superpixels`), or (N, H, W) integer
            labels of your own segmentation.

    Returns:
        `PerturbationCurves` (`scores` (N, K_max + 1), `aoc_normalised` (N,)); images with
        fewer segments than the most repeat their last step.

    Example:
        >>> irof(model, images, exp.maps).aoc_normalised.mean()

    Reference: Rieger and Hansen, "IROF: a low resource evaluation metric for explanation
    methods", ICLR Workshops 2020. (Quantus `IROF` integrates with unit spacing over the
    segments and omits step 0; the curve is the same.)
    """
    p = Perturbed.of(model, images, maps, targets, measure, batch_size=batch_size,
                     value_range=value_range, **model_form)  # fmt: skip
    n, h, w = m_shape = p.shape
    m = p.maps
    if isinstance(segments, (int, np.integer)) and not isinstance(segments, bool):
        labels = superpixels(p.x, check_int(segments, "segments", low=1))
    else:
        labels = np.asarray(segments)
        if labels.shape != m_shape or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(
                f"The `segments` argument must be an int or integer labels of shape {m_shape}. "
                f"Received: {type(segments).__name__} of shape {np.shape(segments)}."
            )
        labels = np.stack([np.unique(lab, return_inverse=True)[1].reshape(h, w) for lab in labels])
    k = labels.reshape(n, -1).max(axis=1) + 1
    order = np.empty_like(labels)
    for i in range(n):  # rank of each segment by its mean relevance, highest first
        means = np.bincount(labels[i].ravel(), m[i].ravel()) / np.bincount(labels[i].ravel())
        rank = np.empty(k[i], np.int64)
        rank[np.argsort(-means, kind="stable")] = np.arange(k[i])
        order[i] = rank[labels[i]]
    counts = np.minimum(np.arange(k.max() + 1)[None], k[:, None])
    scores = _cumulative_curves(p, p.baseline(baseline), order, counts)
    return PerturbationCurves(counts / k[:, None], scores, "irof", p.targets)


_YEH = 'Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019'


@register_metric(
    "infidelity",
    direction="lower",
    needs=("model",),
    default=False,
    description="mean squared error between the map's prediction of the score change under "
    "Gaussian noise and the change",
    reference=_YEH,
)
def infidelity(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    samples: int = 50,
    noise: float = 0.1,
    normalize: bool = True,
    measure: str = "logit",
    seed: int = 0,
    perturbations: Any = None,
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> np.ndarray:
    """Infidelity: E_I[(I . phi(x) - (f(x) - f(x - I)))^2] over random perturbations I.

    I is Gaussian noise of standard deviation `noise` times the input span (the model's
    value range, or the image's own max - min), one value per pixel shared by its channels
    (a map has one value per pixel), drawn from `[seed, image, sample]`. With `normalize`
    the map is first scaled by the beta minimising the error (Captum's `normalize=True`),
    so maps normalised to [0, 1] are not punished for their scale: then 0 means the map
    predicts every change exactly, and the value is at most E[(f(x) - f(x - I))^2].
    On a linear model, the gradient summed over channels has infidelity 0.

    {args}
        samples: perturbations per image (Captum's `n_perturb_samples`, default 10).
        noise: the noise's standard deviation as a fraction of the input span.
        normalize: scale each map by the optimal beta first (Captum: off by default; on
            here, since explanations are compared after normalising).
        seed: the noise's seed.
        perturbations: (N, S, H, W) perturbations I of your own (e.g. those another tool
            drew) instead of the Gaussian ones; `samples`, `noise` and `seed` are then unused.

    Returns:
        (N,) non-negative errors (in score units squared).

    Example:
        >>> infidelity(model, images, exp.maps).mean()

    Reference: Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS
    2019. (Captum `infidelity` with this perturbation and the same noise is equal.)
    """
    samples = check_int(samples, "samples", low=1)
    noise = check_number(noise, "noise", low=0.0)
    seed = check_int(seed, "seed", low=0)
    p = Perturbed.of(model, images, maps, targets, measure, batch_size=batch_size,
                     value_range=value_range, **model_form)  # fmt: skip
    n, h, w = p.shape
    std = noise * input_span(p.session, p.x)
    given = None
    if perturbations is not None:
        given = np.asarray(perturbations, np.float64)
        if given.ndim != 4 or given.shape[0] != n or given.shape[2:] != (h, w):
            raise InputError(
                f"The `perturbations` argument must have shape (N, S, H, W) with (N, H, W) = "
                f"{(n, h, w)}. Received: perturbations.shape={given.shape}."
            )
        samples = given.shape[1]

    def perturbation(i: int, s: int) -> np.ndarray:
        if given is not None:
            return given[i, s]
        return std[i] * np.random.default_rng([seed, i, s]).standard_normal((h, w))

    dots = np.array([[(perturbation(i, s) * p.maps[i]).sum() for s in range(samples)]
                     for i in range(n)])  # fmt: skip

    def build(idx: np.ndarray, sample: np.ndarray) -> np.ndarray:
        noise = np.stack([perturbation(i, s) for i, s in zip(idx, sample, strict=True)])
        return p.x[idx] - noise[..., None]

    clean = p.clean()
    change = clean[:, None] - p.scores(samples, build)
    if normalize:  # beta = E[dot * change] / E[dot^2], Captum's `normalize=True`
        den = (dots * dots).mean(axis=1, keepdims=True)
        num = (dots * change).mean(axis=1, keepdims=True)
        dots = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0) * dots
    return ((dots - change) ** 2).mean(axis=1)


_ARYA = (
    'Arya et al., "One Explanation Does Not Fit All: A Toolkit and Taxonomy of AI '
    'Explainability Techniques", arXiv:1909.03012, 2019'
)


@register_metric(
    "monotonicity",
    direction="higher",
    needs=("model",),
    default=False,
    description="whether the target score never falls as pixel groups are inserted into the "
    "baseline, least relevant first",
    reference=_ARYA,
)
def monotonicity(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    features_in_step: int | None = None,
    baseline: Baseline = "black",
    measure: str = "probability",
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> np.ndarray:
    """Monotonicity (Arya et al.): starting from the baseline, the image's pixels are inserted
    in groups of `features_in_step`, least relevant first; the map passes (1.0) when the
    target score never falls from one step to the next, else 0.0.

    Scores are read after each insertion (steps 1..K, K = H * W / features_in_step rounded
    up; the baseline alone is not a step, as in Quantus `Monotonicity`). Inserting the least
    relevant pixels first is what makes a non-decreasing curve a compliment: a map that puts
    the pixels that lower the score last fails. Only the signs of the steps count, so on a
    model whose score only rises with evidence (non-negative contributions) every order
    passes: read it beside a ranking metric such as Pixel Flipping. Equal scores count as
    not falling (no tolerance, as Quantus). The mean over images is the share of monotonic
    maps. (The Quantus `Monotonicity` source read for this, commit 11f06e5, replaces each
    group of its all-baseline image with the baseline value again rather than with the
    image's values, which leaves the curve flat for a constant baseline; this inserts the
    image's values, as the paper describes.)

    {args}
        features_in_step: pixels inserted per step; None: H * W / 64 rounded up.

    Returns:
        (N,) 1.0 where the curve never falls, else 0.0.

    Example:
        >>> monotonicity(model, images, exp.maps).mean()   # share of monotonic maps

    Reference: Arya et al., "One Explanation Does Not Fit All: A Toolkit and Taxonomy of AI
    Explainability Techniques", arXiv:1909.03012, 2019.
    """
    p = Perturbed.of(model, images, maps, targets, measure, batch_size=batch_size,
                     value_range=value_range, **model_form)  # fmt: skip
    n = p.shape[0]
    group, steps = _rank_groups(p.maps, features_in_step, ascending=True)
    counts = np.broadcast_to(np.arange(1, steps + 1), (n, steps))  # groups inserted
    scores = _cumulative_curves(p, p.x, group, counts, source=p.baseline(baseline))
    return np.all(np.diff(scores, axis=1) >= 0, axis=1).astype(np.float64)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties), NaN where either side is
    constant."""
    return _pearson(scipy.stats.rankdata(a), scipy.stats.rankdata(b))


_NGUYEN = (
    'Nguyen and Martinez, "On Quantitative Aspects of Model Interpretability", '
    "arXiv:2007.07584, 2020"
)


@register_metric(
    "monotonicity_correlation",
    direction="higher",
    needs=("model",),
    default=False,
    description="rank correlation of each pixel group's attribution with the squared score "
    "change when that group alone is replaced",
    reference=_NGUYEN,
)
def monotonicity_correlation(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    features_in_step: int | None = None,
    samples: int = 10,
    baseline: Baseline = "uniform",
    measure: str = "probability",
    seed: int = 0,
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> np.ndarray:
    """Monotonicity Correlation (Nguyen and Martinez): Spearman's rho between each pixel
    group's attribution (its map sum) and the mean squared change of the target score when
    that group alone is replaced by the baseline, E[(f(x) - f(x with group j replaced))^2].

    Groups are `features_in_step` pixels in increasing map order (ties in row-major order).
    1 when larger attributions go with larger effects, -1 for the reversed ranking. The
    effect is squared, so the sign of an attribution says nothing here (a strongly negative
    group ranks low): read signed maps with that in mind. With the uniform baseline each
    group is replaced `samples` times (draws from `[seed, sample, image]`); a fixed baseline
    needs one draw, so `samples` is then 1. (Quantus `MonotonicityCorrelation`, which also
    divides the effect by f(x)^2, a per-image constant that leaves ranks unchanged; its
    defaults take one pixel per group and 100 samples, here 64 groups and 10 samples.)

    {args}
        features_in_step: pixels per group; None: H * W / 64 rounded up (64 groups).
        samples: draws of the uniform baseline per group (Quantus: 100).
        seed: the uniform baseline's seed.

    Returns:
        (N,) correlations in [-1, 1] (NaN where all effects or all attributions are equal).

    Example:
        >>> monotonicity_correlation(model, images, exp.maps).mean()

    Reference: Nguyen and Martinez, "On Quantitative Aspects of Model Interpretability",
    arXiv:2007.07584, 2020.
    """
    samples = check_int(samples, "samples", low=1)
    seed = check_int(seed, "seed", low=0)
    p = Perturbed.of(model, images, maps, targets, measure, batch_size=batch_size,
                     value_range=value_range, **model_form)  # fmt: skip
    n = p.shape[0]
    group, steps = _rank_groups(p.maps, features_in_step, ascending=True)
    sums = _group_sums(group, p.maps, steps)
    noisy = isinstance(baseline, str) and baseline == "uniform"
    samples = samples if noisy else 1
    fill = None if noisy else p.baseline(baseline)

    def build(idx: np.ndarray, row: np.ndarray) -> np.ndarray:
        g, s = row // samples, row % samples
        filled = fill[idx] if fill is not None else np.stack(
            [p.uniform(i, (seed, j)) for i, j in zip(idx, s, strict=True)]
        )  # fmt: skip
        return np.where((group[idx] == g[:, None, None])[..., None], filled, p.x[idx])

    change = p.clean()[:, None] - p.scores(steps * samples, build)
    effect = (change.reshape(n, steps, samples) ** 2).mean(axis=2)
    return np.array([_spearman(sums[i], effect[i]) for i in range(n)])


_DASGUPTA = (
    'Dasgupta, Frost and Moshkovitz, "Framework for Evaluating Faithfulness of Local '
    'Explanations", ICML 2022'
)


@register_metric(
    "sufficiency",
    direction="higher",
    needs=("model",),
    default=False,
    description="share of the other images with a similar map that the model assigns the "
    "same class",
    reference=_DASGUPTA,
)
def sufficiency(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    threshold: float = 0.6,
    batch_size: int | None = None,
    value_range: Any = None,
    **model_form: Any,
) -> np.ndarray:
    """Sufficiency (Dasgupta et al.): an explanation is sufficient when the images it also
    describes get the same prediction. Per image i: among the other images j whose maps lie
    within `threshold` of i's, the share whose predicted (top) class equals i's.

    Maps are compared by the standardised Euclidean distance (each pixel divided by its
    variance over the images; pixels equal in every map are left out) divided by the
    largest distance of the set, as Quantus `Sufficiency`. The value of an image depends on
    the other images scored with it (the set is the sample the paper's expectation runs
    over): compare methods on the same images. Where no other map lies within the threshold
    the value is NaN (Quantus: 0), and the mean skips it. Maps are used as given (Quantus
    takes absolute values and normalises them first by default).

    Args:
        model: a Keras classifier or a `Session` (see `explain` for every model form).
        images: (N, H, W, C) images, preprocessed as the model expects.
        maps: (N, H, W) maps.
        threshold: the largest normalised distance, in [0, 1], at which two maps count as
            the same explanation (Quantus: 0.6).
        batch_size: images per compiled forward pass (default: the session's).
        value_range: the model's input range, e.g. (-1, 1).
        **model_form: `output`, `head`, `score`, `inputs`, `reshape`, as in `explain`.

    Returns:
        (N,) shares in [0, 1] (NaN where no other map is near).

    Raises:
        InputError: bad images, maps or threshold.

    Example:
        >>> sufficiency(model, images, exp.maps).mean()

    Reference: Dasgupta, Frost and Moshkovitz, "Framework for Evaluating Faithfulness of
    Local Explanations", ICML 2022.
    """
    threshold = check_number(threshold, "threshold", low=0.0, high=1.0)
    p = Perturbed.of(model, images, maps, None, batch_size=batch_size, value_range=value_range,
                     **model_form)  # fmt: skip
    session, n = p.session, p.shape[0]
    probs = np.concatenate([session.probabilities(p.x[g]) for g in session.groups(n)])
    predicted = probs.argmax(axis=1)
    flat = p.maps.reshape(n, -1)
    var = flat.var(axis=0, ddof=1) if n > 1 else np.zeros(flat.shape[1])
    keep = var > 0
    dist = scipy.spatial.distance.cdist(flat[:, keep], flat[:, keep], "seuclidean", V=var[keep])
    dist = dist / dist.max() if keep.any() and dist.max() > 0 else np.zeros((n, n))
    near = (dist <= threshold) & ~np.eye(n, dtype=bool)
    same = predicted[:, None] == predicted[None, :]
    count = near.sum(axis=1)
    return np.where(count > 0, (near & same).sum(axis=1) / np.maximum(count, 1), np.nan)


for _f in (faithfulness_correlation, faithfulness_estimate, pixel_flipping,
           region_perturbation, irof, infidelity, monotonicity,
           monotonicity_correlation):  # fmt: skip
    if _f.__doc__:
        _f.__doc__ = _f.__doc__.replace("{args}", _PERTURB_ARGS)
del _f
