"""Faithfulness metrics: does the model's confidence follow the pixels the map calls important?

`deletion` and `insertion` replace (or restore) pixels in decreasing order of the map and record
the target probability after each step; `average_drop_increase` masks the image with the map.
They work on any model and any maps (N, H, W), not only on maps from `explain`.

All masked images are built inside one compiled kernel per model (pixels whose rank is below a
threshold come from one image, the rest from another), run in the session's padded batches, so
the kernel traces once per input shape and batch size. Each takes a model or a `Session`, and
so every model form `explain` takes (one output of several, a sigmoid unit, held inputs, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.checks import check_maps, check_positive_int
from xai_keras.errors import InputError
from xai_keras.evaluate.registry import register_metric
from xai_keras.explain.baselines import make_baseline
from xai_keras.explain.masking import curve_scores, pixel_ranks, removal_baseline
from xai_keras.explain.ranges import ValueRange
from xai_keras.explain.session import Session

__all__ = ["Curves", "deletion", "insertion", "average_drop_increase"]

Baseline = str | float | np.ndarray | Callable[[tf.Tensor], tf.Tensor]


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


def _prepare(
    model: keras.Model | Session, images: Any, maps: Any, targets: Any, settings: dict
) -> tuple[Session, tf.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Validate; return (session, images, maps, resolved targets, clean target
    probabilities)."""
    session = Session.of(model, **settings)
    x, _ = session.images(images)
    m = check_maps(maps)
    if m.shape != tuple(x.shape[:3]):
        raise InputError(
            f"The `maps` argument must have shape (N, H, W) = {tuple(x.shape[:3])} to match "
            f"the images. Received: maps.shape={m.shape}."
        )
    return session, x, m, *session.explained(x, targets)


def _fill(x: tf.Tensor, baseline: Baseline, value_range: ValueRange | None) -> tf.Tensor:
    """The baseline batch: `make_baseline(x, baseline)`, or `baseline(x)` for a callable."""
    if not callable(baseline):
        return make_baseline(x, baseline, value_range)
    fill = tf.cast(tf.convert_to_tensor(baseline(x)), tf.float32)
    if tuple(fill.shape) != tuple(x.shape):
        raise InputError(
            f"A callable `baseline` must return an array of the images' shape {tuple(x.shape)}. "
            f"Received: baseline(images).shape={tuple(fill.shape)}."
        )
    return fill


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
