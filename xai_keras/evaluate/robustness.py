"""Robustness metrics: does a method's map stay put when the image barely changes?

Each explains every image, then `samples` perturbed copies of it (the same classes), and
compares the maps. Perturbations are drawn per image and sample from
`numpy.random.default_rng([seed, image, sample])`, so results do not depend on the batch size,
and noise is a fraction of the input span (`xai_keras.evaluate.faithfulness.input_span`: the
model's value range where the session knows it, else each image's max - min). Maps are
`Explanation.maps` (normalised to [0, 1] per image), so methods are compared on one scale;
norms are Frobenius norms of the (H, W) maps.

All four need the method (registered with `needs=("method",)`): they call `explain` on the
perturbed copies, through the session, so every model form is covered; they are opt-in in
`evaluate_model` (`metrics=[...]`) since they cost `samples` explanations per image.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from xai_keras.checks import check_int, check_number
from xai_keras.evaluate.faithfulness import input_span
from xai_keras.evaluate.registry import register_metric
from xai_keras.explainers.api import explain
from xai_keras.explainers.session import Session

__all__ = [
    "avg_sensitivity",
    "local_lipschitz",
    "max_sensitivity",
    "perturbed_explanations",
    "relative_input_stability",
]


def perturbed_explanations(
    model: keras.Model | Session,
    images: Any,
    method: str,
    targets: Any,
    samples: int,
    noise: float,
    kind: str,
    seed: int,
    explain_options: dict,
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """The original explanation and, per sample, the perturbed images, their maps and their
    predicted classes.

    Returns:
        `(explanation, images (S, N, H, W, C), maps (S, N, H, W), predicted (S, N))`.
    """
    samples = check_int(samples, "samples", low=1)
    noise = check_number(noise, "noise", low=0.0)
    seed = check_int(seed, "seed", low=0)
    session = Session.from_options(model, explain_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        original = explain(session, images, method=method, targets=targets, **explain_options)
    x = original.images.astype(np.float64)
    n = len(x)
    scale = noise * input_span(session, x)
    xs, maps, predicted = [], [], []
    for s in range(samples):
        draw = []
        for i in range(n):
            rng = np.random.default_rng([seed, i, s])
            if kind == "uniform":
                draw.append(rng.uniform(-scale[i], scale[i], x.shape[1:]))
            else:
                draw.append(rng.normal(0.0, scale[i], x.shape[1:]))
        xi = (x + np.stack(draw)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            e = explain(session, xi, method=method, targets=original.targets, **explain_options)
        xs.append(xi)
        maps.append(e.maps)
        predicted.append(np.argmax(e.logits, axis=1))
    return original, np.stack(xs), np.stack(maps), np.stack(predicted)


def _norm(a: np.ndarray) -> np.ndarray:
    """Frobenius norm over every axis after the first two (S, N, ...)."""
    return np.sqrt((a.reshape(a.shape[0], a.shape[1], -1) ** 2).sum(axis=-1))


_YEH = 'Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019'
_ARGS = """Args:
        model: a Keras classifier or a `Session` (see `explain` for every model form).
        images: (N, H, W, C) or one (H, W, C) image, preprocessed as the model expects.
        method: a name from `xai_keras.methods()`.
        targets: the classes explained (also on the perturbed copies); None: each image's
            top class on the clean image.
        samples: perturbed copies per image.
        seed: the perturbations' seed.
        **explain_options: the method's options and the model form, passed to `explain`."""


def _sensitivities(model, images, method, targets, samples, radius, seed, options):
    original, _, maps, _ = perturbed_explanations(
        model, images, method, targets, samples, radius, "uniform", seed, dict(options)
    )
    diff = _norm(maps - original.maps[None])  # (S, N)
    return diff


@register_metric(
    "max_sensitivity",
    direction="lower",
    needs=("method",),
    default=False,
    description="largest change of the map (Frobenius norm) under uniform noise of radius "
    "`radius` times the input span",
    reference=_YEH,
)
def max_sensitivity(
    model: keras.Model | Session,
    images: Any,
    method: str = "gradcam",
    targets: int | Sequence[int] | None = None,
    samples: int = 10,
    radius: float = 0.02,
    seed: int = 0,
    **explain_options: Any,
) -> np.ndarray:
    """Max-Sensitivity: max over perturbations ||phi(x + d) - phi(x)||, d uniform in the L-inf
    ball of radius `radius` times the input span, estimated by Monte Carlo.

    The paper's definition: the norm of the change itself, not divided by ||phi(x)||
    (Quantus and Captum divide by it by default); maps are normalised to [0, 1], so the
    scale is shared by every method anyway. 0 for a map that does not change.

    {args}
        radius: the noise's half-width, a fraction of the input span (Captum: 0.02
            absolute; Quantus: 0.2 absolute).

    Returns:
        (N,) non-negative values; lower is more robust.

    Example:
        >>> max_sensitivity(model, images[:8], "gradcam").mean()

    Reference: Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS
    2019.
    """
    diff = _sensitivities(model, images, method, targets, samples, radius, seed, explain_options)
    return diff.max(axis=0)


@register_metric(
    "avg_sensitivity",
    direction="lower",
    needs=("method",),
    default=False,
    description="mean change of the map (Frobenius norm) under uniform noise of radius "
    "`radius` times the input span",
    reference=_YEH,
)
def avg_sensitivity(
    model: keras.Model | Session,
    images: Any,
    method: str = "gradcam",
    targets: int | Sequence[int] | None = None,
    samples: int = 10,
    radius: float = 0.02,
    seed: int = 0,
    **explain_options: Any,
) -> np.ndarray:
    """Avg-Sensitivity: the mean over perturbations of ||phi(x + d) - phi(x)||, with the
    perturbations of `max_sensitivity` (same seed, same draws).

    {args}
        radius: the noise's half-width, a fraction of the input span.

    Returns:
        (N,) non-negative values; lower is more robust.

    Example:
        >>> avg_sensitivity(model, images[:8], "saliency").mean()

    Reference: Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS
    2019.
    """
    diff = _sensitivities(model, images, method, targets, samples, radius, seed, explain_options)
    return diff.mean(axis=0)


@register_metric(
    "local_lipschitz",
    direction="lower",
    needs=("method",),
    default=False,
    description="largest ratio of the map's change to the input's change under Gaussian noise",
    reference='Alvarez-Melis and Jaakkola, "On the Robustness of Interpretability Methods", '
    "ICML Workshops 2018",
)
def local_lipschitz(
    model: keras.Model | Session,
    images: Any,
    method: str = "gradcam",
    targets: int | Sequence[int] | None = None,
    samples: int = 10,
    noise: float = 0.05,
    seed: int = 0,
    **explain_options: Any,
) -> np.ndarray:
    """Local Lipschitz estimate: max over x' of ||phi(x) - phi(x')||_2 / ||x - x'||_2, x' =
    x + Gaussian noise of std `noise` times the input span (Monte Carlo, as Quantus; the
    paper maximises with Bayesian optimisation).

    {args}
        noise: the noise's standard deviation, a fraction of the input span (Quantus: 0.1
            absolute).

    Returns:
        (N,) non-negative values (map units per input unit); lower is more robust.

    Example:
        >>> local_lipschitz(model, images[:8], "gradcam").mean()

    Reference: Alvarez-Melis and Jaakkola, "On the Robustness of Interpretability Methods",
    ICML Workshops 2018.
    """
    original, xs, maps, _ = perturbed_explanations(
        model, images, method, targets, samples, noise, "normal", seed, dict(explain_options)
    )
    num = _norm(maps - original.maps[None])
    den = _norm(xs.astype(np.float64) - original.images[None])
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0).max(axis=0)


@register_metric(
    "relative_input_stability",
    direction="lower",
    needs=("method",),
    default=False,
    description="largest relative change of the map over the relative change of the input, "
    "among noisy copies keeping the prediction",
    reference='Agarwal et al., "Rethinking Stability for Attribution-based Explanations", '
    "ICLR Workshops 2022",
    key="ris",
    label="RIS",
)
def relative_input_stability(
    model: keras.Model | Session,
    images: Any,
    method: str = "gradcam",
    targets: int | Sequence[int] | None = None,
    samples: int = 10,
    noise: float = 0.02,
    eps_min: float = 1e-6,
    seed: int = 0,
    **explain_options: Any,
) -> np.ndarray:
    """Relative Input Stability (RIS):

        max_{x'} || (phi(x) - phi(x')) / phi(x) ||_2 / max(|| (x - x') / x ||_2, eps_min)

    with element-wise divisions (a zero denominator element is replaced by `eps_min`, as in
    Quantus) over noisy copies x' (uniform noise of half-width `noise` times the input span)
    whose predicted class is unchanged, as the paper requires. NaN where no copy keeps the
    prediction.

    {args}
        noise: the noise's half-width, a fraction of the input span.
        eps_min: the floor of the denominators.

    Returns:
        (N,) non-negative values; lower is more stable.

    Example:
        >>> relative_input_stability(model, images[:8], "gradcam").mean()

    Reference: Agarwal et al., "Rethinking Stability for Attribution-based Explanations",
    ICLR Workshops 2022.
    """
    eps_min = check_number(eps_min, "eps_min", low=0.0, low_open=True)
    original, xs, maps, predicted = perturbed_explanations(
        model, images, method, targets, samples, noise, "uniform", seed, dict(explain_options)
    )
    e = original.maps.astype(np.float64)[None]
    x = original.images.astype(np.float64)[None]
    num = _norm((e - maps) / np.where(e == 0, eps_min, e))
    rel_x = (x - xs) / np.where(x == 0, eps_min, x)
    den = np.maximum(_norm(rel_x), eps_min)
    top = np.argmax(original.logits, axis=1)[None]
    ratio = np.where(predicted == top, num / den, -np.inf)
    best = ratio.max(axis=0)
    return np.where(np.isfinite(best), best, np.nan)


for _f in (max_sensitivity, avg_sensitivity, local_lipschitz, relative_input_stability):
    if _f.__doc__:
        _f.__doc__ = _f.__doc__.replace("{args}", _ARGS)
del _f
