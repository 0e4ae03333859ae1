"""Model randomisation sanity check: does the map change when the model's weights are destroyed?

A map that still looks the same after the weights it is meant to explain were replaced by random
numbers is explaining the input (edges, texture), not the model. `cascading_randomization`
re-initialises the layers one by one from the output back to the input, cumulatively, and
measures after each step how similar the maps are to those of the trained model.

How a layer is randomised here: each of its trainable weights (kernels, biases, batch-norm gamma
and beta; batch-norm moving statistics are kept) is replaced by draws from a normal distribution
with mean 0 and the weight's own standard deviation (0.05 where that is 0, e.g. a fresh gamma of
ones), from a generator seeded once with `seed`. The user's model is never changed: the work is
done on a copy (`keras.models.clone_model` plus `set_weights`); the copy is unfrozen, so frozen
layers (`trainable=False`, e.g. a transfer-learning backbone) count as layers with weights too.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from xai_keras.checks import check_choice
from xai_keras.errors import InputError
from xai_keras.evaluate.registry import register_metric
from xai_keras.explainers.api import explain
from xai_keras.explainers.layers import find_layer, walk_layers
from xai_keras.explainers.session import Session

__all__ = ["SanityResult", "cascading_randomization", "random_logit", "smooth_mprt", "summary"]


@dataclass
class SanityResult:
    """Similarity of the maps of a progressively randomised model to the original maps.

    Attributes:
        method: the explanation method's name.
        layers: (L,) layer paths in the order they were randomised (output side first); row i
            of the arrays is measured after randomising `layers[: i + 1]`.
        spearman: (L, N) Spearman rank correlation between the original and randomised maps
            (0 where either map is constant).
        ssim: (L, N) structural similarity of the [0, 1] maps.
        targets: (N,) the explained classes, fixed to those of the original explanation.
        original: (N, H, W) the maps of the un-randomised model.
        constant: (L, N) True where the randomised map is constant (e.g. all zero): its
            Spearman correlation is undefined and is counted as 0.
    """

    method: str
    layers: list[str]
    spearman: np.ndarray
    ssim: np.ndarray
    targets: np.ndarray
    original: np.ndarray
    constant: np.ndarray | None = None


def _copy(model: keras.Model) -> keras.Model:
    try:
        clone = keras.models.clone_model(model)
    except Exception as err:  # clone_model raises many kinds for models it cannot rebuild
        raise InputError(
            f"Model {model.name!r} cannot be copied with keras.models.clone_model ({err}); the "
            "sanity check randomises a copy so that your model is left unchanged."
        ) from err
    clone.set_weights(model.get_weights())
    clone.trainable = True  # the copy's frozen layers count as layers with weights too
    for _, layer in walk_layers(clone):  # (setting it on the model misses nested models' layers)
        layer.trainable = True
    return clone


def _weighted_layers(model: keras.Model) -> list[tuple[str, Any]]:
    """(path, layer) of every layer with trainable weights, from the output to the input."""
    return [
        (path, layer)
        for path, layer in reversed(list(walk_layers(model)))
        if not isinstance(layer, keras.Model) and layer.trainable_weights
    ]


def _resolve_layers(
    model: keras.Model, clone: keras.Model, layers: Sequence[Any] | None
) -> list[tuple[str, Any]]:
    """The clone's (path, layer) to randomise, in order."""
    candidates = _weighted_layers(clone)
    if not candidates:
        raise InputError(f"Model {model.name!r} has no layer with weights to randomise.")
    if layers is None:
        return candidates
    given = layers
    try:
        layers = [] if isinstance(layers, (str, keras.layers.Layer)) else list(layers)
    except TypeError:
        layers = []
    if not layers:
        raise InputError(
            "The `layers` argument must be a non-empty list of layer names or layer objects. "
            f"Received: layers={given!r}."
        )
    by_path = dict(candidates)
    by_name = {layer.name: path for path, layer in candidates}
    originals = {id(layer): path for path, layer in walk_layers(model)}
    chosen: list[str] = []
    for item in layers:
        path = originals.get(id(item)) if not isinstance(item, str) else item
        path = path if path in by_path else by_name.get(path, path)
        if path not in by_path:
            raise InputError(
                f"The `layers` argument must name layers with weights of model {model.name!r}. "
                f"Received: {getattr(item, 'name', item)!r}. Layers with weights: "
                f"{', '.join(by_path)}."
            )
        if path in chosen:
            raise InputError(f"The `layers` argument lists layer {path!r} twice.")
        chosen.append(path)
    return [(path, by_path[path]) for path in chosen]


def _randomise(layer: Any, rng: np.random.Generator) -> None:
    for weight in layer.trainable_weights:
        values = np.asarray(weight.numpy())
        std = float(values.std())
        std = std if std > 0 else 0.05
        weight.assign(rng.normal(0.0, std, values.shape).astype(values.dtype))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b)[0])


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, data_range=1.0, win_size=win))


_ADEBAYO = 'Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018'


# Stacked: the lowest decorator registers first (the order of the benchmark's columns).
@register_metric(
    "sanity_ssim",
    direction="lower",
    absolute=True,
    needs=("method",),
    description="SSIM of the maps before and after randomising every layer (0 passes)",
    reference=_ADEBAYO,
    value=lambda result: result.ssim[-1],
)
@register_metric(
    "sanity_spearman",
    direction="lower",
    absolute=True,
    needs=("method",),
    description="rank correlation of the maps before and after randomising every layer",
    reference=_ADEBAYO,
    value=lambda result: result.spearman[-1],
)
@register_metric(
    "sanity_top_spearman",
    direction="lower",
    absolute=True,
    needs=("method",),
    description="rank correlation of the maps before and after randomising the output layer",
    reference=_ADEBAYO,
    value=lambda result: result.spearman[0],
)
def cascading_randomization(
    model: keras.Model | Session,
    images: Any,
    method: str = "gradcam",
    targets: int | Sequence[int] | None = None,
    seed: int = 0,
    layers: Sequence[str | keras.layers.Layer] | None = None,
    measure_at: str = "every",
    **explain_options: Any,
) -> SanityResult:
    """Cascading model-parameter randomisation: maps of ever more randomised copies of a model.

    Explains the images with the model, then randomises the layers of a copy one at a time
    (cumulatively: after step i, `layers[: i + 1]` are random) and compares each step's maps
    with the original ones. A method that passes the check gives maps that change: Spearman
    correlation and SSIM fall towards 0 as layers are randomised. The maps explain the same
    classes throughout (the original explanation's targets). See the module docstring for how
    a layer is randomised.

    Args:
        model: a Functional or Sequential Keras classifier, or a `Session` for one (its
            model form carries over to the copies); the model is not changed.
        images: (N, H, W, C) or one (H, W, C) image.
        method: a name from `xai_keras.methods()`.
        targets: the classes to explain; None takes the original model's top classes.
        seed: seeds the random weights.
        layers: layer names, "nested/paths" or layer objects of `model`, randomised in the given
            order; default: every layer with trainable weights, from the output to the input.
        measure_at: "every" explains after each layer; "ends" only after the first and the
            last (every layer is still randomised, cumulatively): the two rows the summary's
            numbers read, at 3 explanations instead of L + 1 (the benchmark's quick mode).
            The result's `layers` then names those two layers.
        **explain_options: passed to `explain` (e.g. `layer=`, `batch_size=`, `steps=`).

    Returns:
        A `SanityResult` with `spearman` and `ssim` of shape (L, N).

    Raises:
        InputError: bad images, targets, method or options; unknown `layers`; a model that
            `keras.models.clone_model` cannot copy.

    Example:
        >>> result = cascading_randomization(model, images, method="gradcam")
        >>> summary(result)["sanity_spearman"]   # near 0 for a method that passes

    Reference: Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    session = Session.from_options(model, explain_options)
    model = session.model
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"The `seed` argument must be an int. Received: seed={seed!r}.")
    options = dict(explain_options)
    if options.get("layer") is not None and not isinstance(options["layer"], str):
        options["layer"] = find_layer(model, options["layer"])[0]  # the copy has its own objects
    original = explain(session, images, method=method, targets=targets, **options)
    clone = _copy(model)
    copied = session.with_model(clone)
    chosen = _resolve_layers(model, clone, layers)
    measure_at = check_choice(measure_at, "measure_at", ("every", "ends"))
    rng = np.random.default_rng(int(seed))
    n = len(original)
    measured = [
        i for i in range(len(chosen)) if measure_at == "every" or i in (0, len(chosen) - 1)
    ]
    spearman = np.zeros((len(measured), n))
    ssim = np.zeros((len(measured), n))
    constant = np.zeros((len(measured), n), bool)
    for step, (_, layer) in enumerate(chosen):
        _randomise(layer, rng)
        if step not in measured:
            continue
        i = measured.index(step)
        with warnings.catch_warnings():  # all-zero maps are expected from random weights
            warnings.simplefilter("ignore", RuntimeWarning)
            maps = explain(
                copied, original.images, method=method, targets=original.targets, **options
            ).maps
        constant[i] = np.ptp(maps.reshape(n, -1), axis=1) == 0
        for j in range(n):
            spearman[i, j] = _spearman(original.maps[j], maps[j])
            ssim[i, j] = _ssim(original.maps[j], maps[j])
    result = SanityResult(
        method=original.method,
        layers=[chosen[i][0] for i in measured],
        spearman=spearman,
        ssim=ssim,
        targets=original.targets,
        original=original.maps,
        constant=constant,
    )
    flat = int(constant[-1].sum())
    if flat:
        warnings.warn(
            f"{original.method}: {flat} of {n} maps of the fully randomised model are constant "
            "(e.g. all zero); their Spearman correlation is undefined and counted as 0. "
            "summary() reports the count and the mean over the other maps.",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


def summary(result: SanityResult) -> dict[str, Any]:
    """Mean similarities: at full randomisation and after each layer.

    Args:
        result: from `cascading_randomization`.

    Returns:
        `{"method", "sanity_spearman", "sanity_ssim", "constant_maps",
        "sanity_spearman_nonconstant", "per_layer": {layer: {"spearman", "ssim"}}}`, measured
        with every listed layer randomised: `constant_maps` counts the randomised maps that
        are constant (scored 0), `sanity_spearman_nonconstant` averages the others (NaN if
        none).
    """
    constant = (
        result.constant[-1]
        if result.constant is not None
        else np.zeros(result.spearman.shape[1], bool)
    )
    rest = result.spearman[-1][~constant]
    return {
        "method": result.method,
        "sanity_spearman": float(result.spearman[-1].mean()),
        "constant_maps": int(constant.sum()),
        "sanity_spearman_nonconstant": float(rest.mean()) if rest.size else float("nan"),
        "sanity_ssim": float(result.ssim[-1].mean()),
        "per_layer": {
            name: {"spearman": float(s.mean()), "ssim": float(m.mean())}
            for name, s, m in zip(result.layers, result.spearman, result.ssim)
        },
    }


@register_metric(
    "random_logit",
    direction="lower",
    needs=("method",),
    default=False,
    description="SSIM between the map of the explained class and that of a random other class",
    reference='Sixt, Granz and Landgraf, "When Explanations Lie: Why Many Modified BP '
    'Attributions Fail", ICML 2020',
)
def random_logit(
    model: keras.Model | Session,
    images: Any,
    method: str = "gradcam",
    targets: int | Sequence[int] | None = None,
    seed: int = 0,
    similarity: str = "ssim",
    **explain_options: Any,
) -> np.ndarray:
    """Random Logit: how similar is the map of the explained class to the map of another
    class drawn at random (uniformly among the others, from `default_rng([seed, image])`)?

    A method that explains the class, not the image, gives different maps: a low value. A
    model whose classes read disjoint pixels gives disjoint maps to a faithful method.

    Args:
        model: a Keras classifier or a `Session`.
        images: (N, H, W, C) or one (H, W, C) image.
        method: a name from `xai_keras.methods()`.
        targets: the explained classes; None: each image's top class.
        seed: the seed of the other classes.
        similarity: "ssim" (Quantus' default, on the [0, 1] maps) or "spearman".
        **explain_options: passed to `explain`.

    Returns:
        (N,) similarities (NaN for a model with one class).

    Example:
        >>> random_logit(model, images[:8], "gradcam").mean()

    Reference: Sixt, Granz and Landgraf, "When Explanations Lie: Why Many Modified BP
    Attributions Fail", ICML 2020.
    """
    if similarity not in ("ssim", "spearman"):
        raise InputError(
            f'The `similarity` argument must be "ssim" or "spearman". Received: {similarity!r}.'
        )
    seed = int(seed)
    session = Session.from_options(model, explain_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        original = explain(session, images, method=method, targets=targets, **explain_options)
        classes = original.logits.shape[1]
        if classes < 2:
            return np.full(len(original), np.nan)
        others = np.array([
            (t + 1 + np.random.default_rng([seed, i]).integers(classes - 1)) % classes
            for i, t in enumerate(original.targets)
        ], np.int32)  # fmt: skip
        other = explain(session, original.images, method=method, targets=others, **explain_options)
    compare = _ssim if similarity == "ssim" else _spearman
    return np.array([compare(a, b) for a, b in zip(original.maps, other.maps)])


@register_metric(
    "smooth_mprt",
    direction="lower",
    absolute=True,
    needs=("method",),
    default=False,
    description="rank correlation of noise-averaged maps before and after randomising every "
    "layer (0 passes)",
    reference='Hedström et al., "Sanity Checks Revisited: An Exploration to Repair the Model '
    'Parameter Randomisation Test", XAI in Action Workshop, NeurIPS 2023',
    value=lambda result: result.spearman[-1],
)
def smooth_mprt(
    model: keras.Model | Session,
    images: Any,
    method: str = "gradcam",
    targets: int | Sequence[int] | None = None,
    samples: int = 10,
    noise: float = 0.1,
    seed: int = 0,
    layers: Sequence[str | keras.layers.Layer] | None = None,
    **explain_options: Any,
) -> SanityResult:
    """Smooth MPRT: cascading model-parameter randomisation (`cascading_randomization`) on
    maps denoised by averaging each over `samples` noisy copies of the image (Gaussian noise
    of std `noise` times the image's max - min), for the trained model and after each
    randomised layer. Averaging removes the shattered-gradient noise that makes MPRT
    penalise gradient methods for noise rather than for ignoring the model.

    The noisy copies are the same for the trained and the randomised models (drawn from
    `default_rng([seed, image, sample])`), the layers are randomised as in
    `cascading_randomization` (output side first), and the similarity is Spearman's rank
    correlation (and SSIM) of the averaged maps, renormalised to [0, 1].

    Args:
        model, images, method, targets, seed, layers: as in `cascading_randomization`.
        samples: noisy copies per image (the paper: 50).
        noise: their standard deviation as a fraction of the image's span (paper: 0.1).
        **explain_options: passed to `explain`.

    Returns:
        A `SanityResult` of the averaged maps (`spearman[-1]`: every layer randomised).

    Example:
        >>> smooth_mprt(model, images[:4], "saliency").spearman[-1].mean()

    Reference: Hedström et al., "Sanity Checks Revisited: An Exploration to Repair the Model
    Parameter Randomisation Test", XAI in Action Workshop, NeurIPS 2023.
    """
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise InputError(f"The `samples` argument must be an int >= 1. Received: {samples!r}.")
    session = Session.from_options(model, explain_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = explain(session, images, method=method, targets=targets, **explain_options)
    x = first.images.astype(np.float64)
    n = len(x)
    span = np.ptp(x.reshape(n, -1), axis=1)
    span = np.where(span > 0, span, 1.0)
    noisy = [
        np.stack([
            x[i] + np.random.default_rng([seed, i, s]).normal(0.0, noise * span[i], x.shape[1:])
            for i in range(n)
        ]).astype(np.float32)
        for s in range(samples)
    ]  # fmt: skip
    options = dict(explain_options)
    if options.get("layer") is not None and not isinstance(options["layer"], str):
        options["layer"] = find_layer(session.model, options["layer"])[0]

    def smoothed(s: Session) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            total = sum(
                explain(s, xs, method=method, targets=first.targets, **options).maps for xs in noisy
            )
        lo = total.min(axis=(1, 2), keepdims=True)
        hi = total.max(axis=(1, 2), keepdims=True)
        return (total - lo) / np.where(hi > lo, hi - lo, 1.0)

    original = smoothed(session)
    clone = _copy(session.model)
    copied = session.with_model(clone)
    chosen = _resolve_layers(session.model, clone, layers)
    rng = np.random.default_rng(int(seed))
    spearman = np.zeros((len(chosen), n))
    ssim = np.zeros((len(chosen), n))
    constant = np.zeros((len(chosen), n), bool)
    for i, (_, layer) in enumerate(chosen):
        _randomise(layer, rng)
        maps = smoothed(copied)
        constant[i] = np.ptp(maps.reshape(n, -1), axis=1) == 0
        for j in range(n):
            spearman[i, j] = _spearman(original[j], maps[j])
            ssim[i, j] = _ssim(original[j], maps[j])
    return SanityResult(
        method=first.method,
        layers=[path for path, _ in chosen],
        spearman=spearman,
        ssim=ssim,
        targets=first.targets,
        original=original,
        constant=constant,
    )
