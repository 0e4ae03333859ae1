"""Axiomatic metrics: does a method keep the promises attribution axioms make?

- `completeness`: the attributions add up to f(x) - f(baseline) (Integrated Gradients,
  DeepLIFT and LRP-0 promise it; gradient maps and CAMs do not);
- `input_invariance`: a model that absorbs a constant shift of its input (its function of the
  original image is unchanged) gets the same map for the shifted image.

Both explain the images themselves (`needs=("method",)`) with the method's own options and
are opt-in in `evaluate_model` (`metrics=[...]`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.checks import check_number
from xai_keras.errors import InputError
from xai_keras.evaluate.faithfulness import input_span, perturbed_scores
from xai_keras.evaluate.registry import register_metric
from xai_keras.explainers.api import explain
from xai_keras.explainers.base import get_method
from xai_keras.explainers.baselines import make_baseline
from xai_keras.explainers.session import Session

__all__ = ["completeness", "input_invariance", "shifted_model"]


def _explain(session, images, method, targets, options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return explain(session, images, method=method, targets=targets, **options)


def _attributions(exp: Any) -> np.ndarray | None:
    """(N, H, W) input-resolution attributions in score units: the per-channel attributions
    summed over channels (gradient family), else the raw maps where they have the input's
    size, else None."""
    if exp.attributions is not None:
        return np.asarray(exp.attributions, np.float64).sum(axis=-1)
    raw = np.asarray(exp.raw, np.float64)
    return raw if raw.shape == exp.maps.shape else None


_SUNDARARAJAN = 'Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks", ICML 2017'


@register_metric(
    "completeness",
    direction="lower",
    needs=("method",),
    default=False,
    description="relative gap between the attributions' sum and f(x) - f(baseline)",
    reference=_SUNDARARAJAN,
    key="completeness_gap",
    label="completeness gap",
)
def completeness(
    model: keras.Model | Session,
    images: Any,
    method: str = "integrated_gradients",
    targets: int | Sequence[int] | None = None,
    baseline: str | float | np.ndarray = "black",
    **explain_options: Any,
) -> np.ndarray:
    """Completeness: |sum_i a_i - (f(x) - f(x'))| / |f(x) - f(x')| per image, with f the
    explained score (the target logit where a softmax was stripped) and x' the baseline.

    0 for a method that is complete (Integrated Gradients up to its path integral's error).
    The attributions are the method's own, before normalising: the per-channel attributions
    summed over channels for the gradient family, else the raw map where it has the image's
    size; NaN for maps at another resolution (CAMs), which do not claim completeness.
    `baseline` is passed to the method too (where it takes one), so both sides use the same
    reference. Quantus returns `np.isclose` of the two sides, a bool: compare this gap with a
    tolerance for that.

    Args:
        model: a Keras classifier or a `Session`.
        images: (N, H, W, C) or one (H, W, C) image.
        method: a name from `xai_keras.methods()`.
        targets: the explained classes; None: each image's top class.
        baseline: the reference image x' ("black", "mean", "blur", a number or an array).
        **explain_options: passed to `explain`.

    Returns:
        (N,) relative gaps (NaN where not applicable or f(x) = f(x')).

    Example:
        >>> completeness(model, images, "integrated_gradients", steps=128).mean()

    Reference: Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks", ICML
    2017.
    """
    session = Session.from_options(model, explain_options)
    init = inspect.signature(get_method(method).__init__).parameters
    options = dict(explain_options)
    if "baseline" in init:
        options.setdefault("baseline", baseline)
    exp = _explain(session, images, method, targets, options)
    a = _attributions(exp)
    n = len(exp.maps)
    if a is None:
        return np.full(n, np.nan)
    x = np.asarray(exp.images, np.float32)
    base = make_baseline(tf.constant(x), options.get("baseline", baseline), session.value_range)
    base = base.numpy()
    tgt = np.asarray(exp.targets, np.int32)
    fx = perturbed_scores(session, np.arange(n), lambda ids: x[ids], tgt)
    f0 = perturbed_scores(session, np.arange(n), lambda ids: base[ids], tgt)
    change = fx - f0
    gap = np.abs(a.sum(axis=(1, 2)) - change)
    return np.where(change != 0, gap / np.where(change != 0, np.abs(change), 1.0), np.nan)


def shifted_model(model: keras.Model, shift: float | np.ndarray) -> keras.Model:
    """A model that subtracts `shift` from its input, then runs `model`: on x + shift it
    computes exactly what `model` computes on x (the shift is absorbed before the first
    layer, as Kindermans et al. absorb it in the first layer's bias)."""
    if len(model.inputs) != 1:
        raise InputError(
            f"input_invariance needs a model with one input; model {model.name!r} has "
            f"{len(model.inputs)}."
        )
    inp = keras.Input(model.inputs[0].shape[1:], name="shifted_input")
    offset = -np.asarray(shift, np.float32)
    shifted = keras.layers.Rescaling(1.0, offset=offset.tolist() if offset.ndim else float(offset))
    return keras.Model(inp, model(shifted(inp)), name=f"{model.name}_shifted")


@register_metric(
    "input_invariance",
    direction="lower",
    needs=("method",),
    default=False,
    description="relative change of the raw map when a constant input shift is absorbed by "
    "the model",
    reference='Kindermans et al., "The (Un)reliability of Saliency Methods", in Explainable '
    "AI, Springer LNCS 11700, 2019",
)
def input_invariance(
    model: keras.Model | Session,
    images: Any,
    method: str = "gradcam",
    targets: int | Sequence[int] | None = None,
    shift: float | None = None,
    **explain_options: Any,
) -> np.ndarray:
    """Input invariance: ||phi_2(x + c) - phi_1(x)|| / ||phi_1(x)|| on the raw maps, where
    model 2 = model 1 after subtracting the constant c from its input (`shifted_model`), so
    both compute the same function of the image.

    Gradients, Grad-CAM and occlusion are invariant (0); gradient x input and Integrated
    Gradients with a fixed (unshifted) "black" baseline are not, which is the paper's point.
    Quantus returns a bool per image (all attributions equal); this returns the relative
    change (0: invariant, up to float rounding). NaN where the original raw map is zero.

    Args:
        model: a Keras classifier with one image input, or a `Session` for one.
        images: (N, H, W, C) or one (H, W, C) image.
        method: a name from `xai_keras.methods()`.
        targets: the explained classes; None: each image's top class.
        shift: the constant c; None: a quarter of the model's input span (the value range,
            or the images' max - min).
        **explain_options: passed to `explain`.

    Returns:
        (N,) relative changes, non-negative; lower is more invariant.

    Example:
        >>> input_invariance(model, images[:8], "saliency")   # ~0

    Reference: Kindermans et al., "The (Un)reliability of Saliency Methods", in Explainable
    AI: Interpreting, Explaining and Visualizing Deep Learning, Springer 2019.
    """
    session = Session.from_options(model, explain_options)
    first = _explain(session, images, method, targets, dict(explain_options))
    x = np.asarray(first.images, np.float32)
    if shift is None:
        shift = 0.25 * float(input_span(session, x).max())
    shift = check_number(shift, "shift")
    other = session.with_model(shifted_model(session.model, shift))
    options = dict(explain_options)
    second = _explain(other, x + np.float32(shift), method, first.targets, options)
    a = np.asarray(first.raw, np.float64).reshape(len(x), -1)
    b = np.asarray(second.raw, np.float64).reshape(len(x), -1)
    if a.shape != b.shape:
        a, b = (np.asarray(e.maps, np.float64).reshape(len(x), -1) for e in (first, second))
    norm = np.linalg.norm(a, axis=1)
    diff = np.linalg.norm(b - a, axis=1)
    return np.where(norm > 0, diff / np.where(norm > 0, norm, 1.0), np.nan)
