"""ROAD: RemOve And Debias, a faithfulness metric whose removal leaks no shape of the mask.

Deletion-style curves remove pixels by overwriting them with a baseline (blur, black, ...);
the model then sees the *outline* of the removed set, which tells it where the map pointed and
biases the metric. ROAD instead fills each removed pixel by noisy linear imputation: the value
that makes it the weighted mean of its 8 neighbours, solved jointly for all removed pixels, plus
a little Gaussian noise. The filled region is smooth and continuous with its surroundings, so
removing random pixels changes little, and only removing what the model uses lowers its
confidence.

Two orders are measured at each percentile p (the share of pixels removed):

- MoRF (most relevant first): the p% highest-ranked pixels are imputed; a faithful map makes
  the target probability fall fast, so a *lower* mean over percentiles is better.
- LeRF (least relevant first): the p% lowest-ranked pixels are imputed; a faithful map keeps
  the probability high, so a *higher* mean is better.

The single number `RoadCurves.score` is LeRF - MoRF (the two means), in [-1, 1], higher
better. pytorch-grad-cam's `ROADCombined` reports half of it (its two averages are differences
from the clean score, which cancel).

Reference: Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", ICML 2022.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import tensorflow as tf

from xai_keras.checks import check_choice, check_int, check_masks, check_number
from xai_keras.errors import InputError
from xai_keras.evaluate.perturbation import prepare
from xai_keras.evaluate.registry import register_metric
from xai_keras.explainers.masking import pixel_ranks
from xai_keras.explainers.session import Session

__all__ = ["RoadCurves", "noisy_linear_impute", "road"]

# (row offset, column offset, weight) of the 8 neighbours: direct 1/6, diagonal 1/12 (sum 1).
NEIGHBOURS = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)
ORDERS = ("morf", "lerf")
DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _impute_one(
    image: np.ndarray, removed: np.ndarray, std: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One image (H, W, C) float64 with its `removed` (H, W) pixels imputed, plus noise of
    per-channel std `std` (C,). The caller guarantees that at least one pixel is kept.

    Removed pixel i gets the value x_i solving  sum_j w_j (x_i - x_j) = 0  over its neighbours
    j inside the image (the weights of neighbours outside are dropped, so x_i is the weighted
    mean of the neighbours that exist). Known neighbours move to the right-hand side. The
    matrix is symmetric and irreducibly diagonally dominant (every 8-connected removed region
    touches a kept pixel), so it is nonsingular; one LU factorisation serves all channels.
    """
    h, w = removed.shape
    rows, cols = np.nonzero(removed)  # row-major: unknown number u is the u-th removed pixel
    count = len(rows)
    out = image.copy()
    if count == 0:
        return out
    unknown = np.full((h, w), -1, np.int64)
    unknown[rows, cols] = np.arange(count)
    diagonal = np.zeros(count)
    rhs = np.zeros((count, image.shape[-1]))
    a_rows, a_cols, a_vals = [], [], []
    for dr, dc, weight in NEIGHBOURS:  # 8 passes, each over every removed pixel at once
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        eq, r, c = np.nonzero(inside)[0], r[inside], c[inside]
        diagonal[eq] += weight
        neighbour = unknown[r, c]
        free = neighbour >= 0
        a_rows.append(eq[free])
        a_cols.append(neighbour[free])
        a_vals.append(np.full(int(free.sum()), -weight))
        rhs[eq[~free]] += weight * image[r[~free], c[~free]]  # `eq` has no repeats here
    a_rows.append(np.arange(count))
    a_cols.append(np.arange(count))
    a_vals.append(diagonal)
    matrix = scipy.sparse.csc_matrix(
        (np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))),
        shape=(count, count),
    )
    values = scipy.sparse.linalg.splu(matrix).solve(rhs)
    if np.any(std > 0):
        values = values + rng.standard_normal(values.shape) * std
    out[rows, cols] = values
    return out


def _check_removed(removed: Any, shape: tuple[int, ...]) -> np.ndarray:
    """`removed` as a bool (N, H, W) array matching images (N, H, W, C); 0/1 numbers pass."""
    r = np.asarray(removed)
    if r.ndim == 2:
        r = r[None]
    if r.shape != shape:
        raise InputError(
            f"The `removed` argument must be a boolean mask of shape (N, H, W) = {shape} to "
            f"match the images. Received: removed.shape={r.shape}."
        )
    r = check_masks(r, shape, "removed")  # booleans, or 0/1 numbers made booleans
    full = np.nonzero(r.reshape(len(r), -1).all(axis=1))[0]
    if full.size:
        raise InputError(
            "The `removed` argument must keep at least one pixel of each image (imputation "
            f"needs known values). Received: every pixel removed in images {full.tolist()}."
        )
    return r


def noisy_linear_impute(
    images: Any, removed: Any, noise: float = 0.01, seed: int = 0
) -> np.ndarray:
    """Fill the removed pixels by noisy linear imputation, as ROAD does.

    Each removed pixel becomes the weighted mean of its 8 neighbours (direct ones weight 1/6,
    diagonal ones 1/12; at the border, of the neighbours that exist), solved as one sparse
    linear system over all removed pixels of an image (neighbours may be removed too), with
    the kept pixels fixed. Then Gaussian noise is added to the imputed pixels.
    Without noise, the result reproduces exactly any function whose 8-neighbour weighted mean
    is itself: every harmonic polynomial of degree <= 3 (1, x, y, x^2 - y^2, xy, x^3 - 3xy^2,
    ...) inside the image; along an edge only functions linear along it.

    Args:
        images: (N, H, W, C) or one (H, W, C) image, floats.
        removed: (N, H, W) (or (H, W)) bool, True where the pixel is imputed; each image must
            keep at least one pixel.
        noise: the noise's standard deviation, absolute, in the images' own units (as the
            paper's code and pytorch-grad-cam's `NoisyLinearImputer`: 0.01 on images
            normalised to about unit variance). 0 gives the deterministic imputation.
        seed: the seed of the noise; the same seed gives the same images.

    Returns:
        (N, H, W, C) (or (H, W, C) for one image) float32: the images, kept pixels unchanged.

    Raises:
        InputError: images that are not (N, H, W, C) finite numbers, a `removed` mask of
            another shape or removing every pixel of an image, a negative noise or a bad seed.

    Example:
        >>> removed = maps >= np.quantile(maps, 0.8, axis=(1, 2), keepdims=True)
        >>> filled = noisy_linear_impute(images, removed, noise=0.0)

    Reference: Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods", ICML 2022.
    """
    noise = check_number(noise, "noise", low=0.0)
    seed = check_int(seed, "seed", low=0)
    try:
        x = np.asarray(images, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            "The `images` argument must be an array of numbers (N, H, W, C). "
            f"Received: images={type(images).__name__}."
        ) from None
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.size == 0 or not np.all(np.isfinite(x)):
        raise InputError(
            "The `images` argument must be a non-empty finite array of shape (N, H, W, C) or "
            f"(H, W, C). Received: images.shape={x.shape}."
        )
    r = _check_removed(removed, x.shape[:3])
    rng = np.random.default_rng(seed)
    std = np.full(x.shape[-1], noise)
    out = np.stack([_impute_one(xi, ri, std, rng) for xi, ri in zip(x, r)]).astype(np.float32)
    return out[0] if single else out


@dataclass
class RoadCurves:
    """ROAD curves of a batch of images.

    Attributes:
        percentiles: (P,) the percentiles asked for: the share of pixels removed, in percent.
        fractions: (P,) the share actually removed, round(p / 100 * H * W) / (H * W).
        clean: (N,) the target probability on the clean images.
        targets: (N,) the class whose probability is measured.
        morf: (N, P) the target probability with the most relevant pixels imputed, or None.
        lerf: (N, P) the same with the least relevant pixels imputed, or None.
    """

    percentiles: np.ndarray
    fractions: np.ndarray
    clean: np.ndarray
    targets: np.ndarray
    morf: np.ndarray | None = None
    lerf: np.ndarray | None = None

    def _curve(self, order: str) -> np.ndarray:
        curve = getattr(self, order)
        if curve is None:
            raise InputError(
                f"These curves have no {order.upper()} part: call road(..., order='both') "
                f"(or order='{order}'). Received: {order}=None."
            )
        return curve

    @property
    def morf_score(self) -> np.ndarray:
        """(N,) mean of the MoRF curve over the percentiles: lower is better."""
        return self._curve("morf").mean(axis=1)

    @property
    def lerf_score(self) -> np.ndarray:
        """(N,) mean of the LeRF curve over the percentiles: higher is better."""
        return self._curve("lerf").mean(axis=1)

    @property
    def score(self) -> np.ndarray:
        """(N,) LeRF mean - MoRF mean, in [-1, 1]: higher is better (twice pytorch-grad-cam's
        `ROADCombined` with a softmax target)."""
        return self.lerf_score - self.morf_score


def _check_percentiles(percentiles: Any) -> np.ndarray:
    try:
        p = np.asarray(percentiles, dtype=np.float64)
    except (TypeError, ValueError):
        p = np.full(1, np.nan)
    if p.ndim != 1 or p.size == 0 or not np.all((p >= 0) & (p < 100)):  # NaN fails too
        raise InputError(
            "The `percentiles` argument must be a non-empty sequence of numbers in [0, 100) "
            f"(the share of pixels removed). Received: percentiles={percentiles!r}."
        )
    return p


def _imputed_logits(
    session: Session,
    images: np.ndarray,
    ranks: np.ndarray,
    ks: np.ndarray,
    std: np.ndarray,
    rngs: dict[int, np.random.Generator],
    morf: bool,
    batch: tf.Tensor,
) -> tf.Tensor:
    """Logits of a batch of (image, percentile) rows, each image with its top (MoRF) or
    bottom (LeRF) ks[percentile] pixels imputed. Padding rows (-1, -1) repeat the previous
    image instead of drawing more noise, so the noise of real rows does not depend on the
    batch size."""
    pixels = ranks[0].size
    filled: list[np.ndarray] = []
    for i, j in batch.numpy():
        if i < 0:
            filled.append(filled[-1])
            continue
        removed = ranks[i] < ks[j] if morf else ranks[i] >= pixels - ks[j]
        filled.append(_impute_one(images[i], removed, std, rngs[i]))
    return session.runner.forward_fn(tf.constant(np.stack(filled), tf.float32))


_ROAD = (
    'Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", '
    "ICML 2022"
)


@register_metric(
    "road_lerf",
    direction="higher",
    needs=("model",),
    description="mean target probability as the least relevant pixels are imputed (ROAD)",
    label="ROAD LeRF",
    reference=_ROAD,
    options={"order": "both"},  # one call serves both orders
    value=lambda curves: curves.lerf_score,
)
@register_metric(
    "road_morf",
    direction="lower",
    needs=("model",),
    description="mean target probability as the most relevant pixels are imputed (ROAD)",
    label="ROAD MoRF",
    reference=_ROAD,
    options={"order": "both"},
    value=lambda curves: curves.morf_score,
)
def road(
    model: keras.Model | Session,
    images: Any,
    maps: Any,
    targets: int | Sequence[int] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    order: str = "both",
    noise: float = 0.01,
    batch_size: int | None = None,
    seed: int = 0,
    value_range: Any = None,
    **model_form: Any,
) -> RoadCurves:
    """ROAD curves: the target probability after imputing the top (MoRF) or bottom (LeRF)
    p% of each map's pixels, for every percentile p.

    At percentile p the round(p / 100 * H * W) pixels ranked highest (MoRF) or lowest (LeRF)
    by the map are replaced by `noisy_linear_impute`; percentile 0 is the clean image. Ties
    in a map are broken in row-major order (a stable sort), as in `deletion`.
    (pytorch-grad-cam's `ROADMostRelevantFirst(percentile=q)` removes the pixels at or above
    the map's q-th percentile, i.e. about (100 - q)% of them: its q is our 100 - p.)

    Args:
        model: a Keras classifier or a `Session` (see `explain` for every model form).
        images: (N, H, W, C) or one (H, W, C) image, preprocessed as the model expects.
        maps: (N, H, W) (or (H, W)) importance maps; larger is more important.
        targets: the class(es) whose probability is measured; None takes each image's top
            class on the clean image.
        percentiles: the shares of pixels removed, in percent, each in [0, 100); the default
            10, 20, ..., 90 is the paper's. At most H * W - 1 pixels are removed.
        order: "morf", "lerf" or "both".
        noise: the imputation noise's standard deviation: absolute, in the images' units
            (the paper's and pytorch-grad-cam's convention) without `value_range`; a fraction
            of each channel's span (high - low) with it.
        batch_size: imputed images per compiled forward pass (default: the session's, 32).
        seed: the noise's seed. The noise of the i-th image depends only on (seed, order, i),
            so curves of different maps, of one order or of both, and of the first n images
            stay paired.
        value_range: the model's input range, e.g. (-1, 1), "tf" or "torch" (here or on the
            session): makes `noise` relative to it.
        **model_form: `output`, `head`, `score`, `inputs`, `reshape`, as in `explain`.

    Returns:
        `RoadCurves` with `morf` and/or `lerf` (N, P) probabilities (values, for a linear
        head) and the per-image
        `morf_score`, `lerf_score` and `score` (LeRF - MoRF, higher better).

    Raises:
        InputError: bad images, maps (shape must be (N, H, W)), targets, percentiles, order,
            noise, batch size, seed or value range.

    Example:
        >>> curves = road(model, images, explain(model, images).maps)
        >>> curves.morf_score.mean(), curves.lerf_score.mean(), curves.score.mean()

    Reference: Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient
    Evaluation Strategy for Attribution Methods", ICML 2022.
    """
    p = _check_percentiles(percentiles)
    order = check_choice(order, "order", ("morf", "lerf", "both"))
    noise = check_number(noise, "noise", low=0.0)
    seed = check_int(seed, "seed", low=0)
    settings = dict(model_form, batch_size=batch_size, value_range=value_range)
    session, x, m, tgt, clean = prepare(model, images, maps, targets, settings)
    channels = int(x.shape[-1])
    std = np.full(channels, noise)
    if session.value_range is not None:  # per-channel span of the model's input values
        black, white = (
            session.value_range.from_pixels(np.full((1, channels), v)) for v in (0.0, 255.0)
        )
        std = noise * np.abs(white - black)[0].astype(np.float64)

    clean = clean.astype(np.float64)

    pixels = m.shape[1] * m.shape[2]
    ks = np.clip(np.floor(p / 100 * pixels + 0.5).astype(np.int64), 0, pixels - 1)
    ranks = pixel_ranks(m)
    images64 = x.numpy().astype(np.float64)
    result = RoadCurves(percentiles=p, fractions=ks / pixels, clean=clean, targets=tgt)
    for o, name in enumerate(ORDERS):
        if order not in (name, "both"):
            continue
        curve = np.empty((len(m), len(ks)))
        for g in session.groups(len(m)):  # images that share held inputs
            rngs = {i: np.random.default_rng([seed, o, i]) for i in range(g.start, g.stop)}
            rows = np.array([(i, j) for i in range(g.start, g.stop) for j in range(len(ks))])
            impute = functools.partial(
                _imputed_logits, session, images64, ranks, ks, std, rngs, name == "morf"
            )
            logits = session.map_batches(impute, rows, pad=(np.array([-1, -1]),))
            probs = session.runner.squash(logits).numpy()
            curve[rows[:, 0], rows[:, 1]] = probs[np.arange(len(rows)), tgt[rows[:, 0]]]
        setattr(result, name, curve)
    return result
