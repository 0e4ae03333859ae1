"""The front end every perturbation metric shares: validate, fill, perturb, score.

Deletion, insertion, Average Drop, ROAD and the Quantus family (Faithfulness Correlation and
Estimate, Pixel Flipping, Region Perturbation, IROF, Infidelity, Monotonicity, ...) all start
the same way: a model or `Session`, images, (N, H, W) maps that must match them, the explained
targets and their clean scores (`prepare`), and a baseline that removed pixels show (`fill`,
`Perturbed.baseline`). The Quantus family then scores perturbed copies of every image:
`Perturbed.scores(steps, build)` runs `build(image ids, step ids)` for N x steps rows through
one compiled kernel (`perturbed_scores`) in the session's padded batches, so a metric only
says how row (image, step) is perturbed.

    >>> p = Perturbed.of(model, images, maps, targets, measure="logit", batch_size=32)
    >>> fill = p.baseline("black")
    >>> drops = p.clean()[:, None] - p.removed(64, fill, lambda i, j: group[i] == j[:, None, None])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.checks import check_choice, check_maps
from xai_keras.errors import InputError
from xai_keras.explainers.baselines import make_baseline
from xai_keras.explainers.ranges import ValueRange
from xai_keras.explainers.session import Session

__all__ = ["SCORES", "Baseline", "Perturbed", "fill", "input_span", "perturbed_scores", "prepare"]

Baseline = str | float | np.ndarray | Callable[[tf.Tensor], tf.Tensor]
SCORES = ("logit", "probability")


def prepare(
    model: keras.Model | Session, images: Any, maps: Any, targets: Any, settings: dict
) -> tuple[Session, tf.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Validate; return (session, images, maps, resolved targets, clean target
    probabilities). `settings`: `Session.of`'s keywords (batch size, value range, model form).
    """
    session = Session.of(model, **settings)
    x, _ = session.images(images)
    m = check_maps(maps)
    if m.shape != tuple(x.shape[:3]):
        raise InputError(
            f"The `maps` argument must have shape (N, H, W) = {tuple(x.shape[:3])} to match "
            f"the images. Received: maps.shape={m.shape}."
        )
    return session, x, m, *session.explained(x, targets)


def fill(x: tf.Tensor, baseline: Baseline, value_range: ValueRange | None) -> tf.Tensor:
    """The baseline batch: `make_baseline(x, baseline)`, or `baseline(x)` for a callable."""
    if not callable(baseline):
        return make_baseline(x, baseline, value_range)
    out = tf.cast(tf.convert_to_tensor(baseline(x)), tf.float32)
    if tuple(out.shape) != tuple(x.shape):
        raise InputError(
            f"A callable `baseline` must return an array of the images' shape {tuple(x.shape)}. "
            f"Received: baseline(images).shape={tuple(out.shape)}."
        )
    return out


def _bounds(session: Session, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image (N, 1, 1, C) lowest and highest input values: the model's value range where
    the session knows it, else each image's own minimum and maximum."""
    if session.value_range is not None:
        c = x.shape[-1]
        lo, hi = (session.value_range.from_pixels(np.full((1, c), v)) for v in (0.0, 255.0))
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        shape = (1, 1, 1, c)
        return (np.broadcast_to(lo.reshape(shape), (len(x), 1, 1, c)),
                np.broadcast_to(hi.reshape(shape), (len(x), 1, 1, c)))  # fmt: skip
    return x.min(axis=(1, 2, 3), keepdims=True), x.max(axis=(1, 2, 3), keepdims=True)


def input_span(session: Session, x: np.ndarray) -> np.ndarray:
    """(N,) the span of each image's input values (the model's range where known, else the
    image's own max - min; 1 for a constant image): noise scales are fractions of it."""
    low, high = _bounds(session, x)
    span = (high - low).reshape(len(x), -1).max(axis=1)
    return np.where(span > 0, span, 1.0)


def _score_kernel(session: Session, score: str) -> Callable:
    runner = session.runner

    def target_scores(x: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        scores = runner.forward(x)[1]
        if score == "probability":
            scores = runner.squash(scores)
        return tf.gather(scores, targets, batch_dims=1)

    return runner.kernel(f"metric_{score}", target_scores)


def perturbed_scores(
    session: Session,
    rows_image: np.ndarray,
    build: Callable[[np.ndarray], np.ndarray],
    targets: np.ndarray,
    measure: str = "logit",
) -> np.ndarray:
    """(R,) target score of R perturbed images, in the session's padded batches.

    Args:
        session: the model.
        rows_image: (R,) the image each row perturbs (its held inputs and target).
        build: `build(row_ids) -> (B, H, W, C)` the perturbed images of those rows (numpy);
            it must depend on the row ids only, so padding rows (repeats) change nothing.
        targets: (N,) the class of each image.
        measure: "logit" (the score the methods explain: the logits where a final softmax or
            sigmoid was stripped, else the output) or "probability".
    """
    measure = check_choice(measure, "measure", SCORES)
    kernel = _score_kernel(session, measure)
    rows_image = np.asarray(rows_image, np.int64)
    out = np.empty(len(rows_image))
    n = int(rows_image.max()) + 1 if len(rows_image) else 0
    for g in session.groups(n):
        sel = np.nonzero((rows_image >= g.start) & (rows_image < g.stop))[0]
        if not sel.size:
            continue

        def batch(ids: tf.Tensor) -> tf.Tensor:
            ids = ids.numpy()
            images = tf.constant(np.asarray(build(ids), np.float32))
            return kernel(images, tf.constant(targets[rows_image[ids]], tf.int32))

        out[sel] = session.map_batches(batch, sel).numpy()
    return out


@dataclass
class Perturbed:
    """The validated inputs of a perturbation metric, and its perturb-and-score loop.

    Attributes:
        session: the model.
        x: (N, H, W, C) float32 images.
        maps: (N, H, W) float64 maps.
        targets: (N,) the explained classes.
        measure: the score read, "logit" or "probability" (`perturbed_scores`).
    """

    session: Session
    x: np.ndarray
    maps: np.ndarray
    targets: np.ndarray
    measure: str

    @classmethod
    def of(
        cls,
        model: keras.Model | Session,
        images: Any,
        maps: Any,
        targets: Any,
        measure: str = "logit",
        **settings: Any,
    ) -> Perturbed:
        """Validate the inputs (`prepare`); `settings` are `Session.of`'s keywords."""
        session, x, m, tgt, _ = prepare(model, images, maps, targets, settings)
        return cls(session, x.numpy(), m.astype(np.float64), tgt, measure)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, H, W)."""
        n, h, w = self.maps.shape
        return n, h, w

    def baseline(self, baseline: Baseline, seed: int | Sequence[int] = 0) -> np.ndarray:
        """The baseline images as numpy: `make_baseline`'s kinds, a number, an array or a
        callable (`fill`), or "uniform": each pixel drawn uniformly between the model's range
        minimum and maximum (the image's own where no range is known), from the generator
        `[*seed, image]`."""
        x = self.x
        if isinstance(baseline, str) and baseline == "uniform":
            return np.stack([self.uniform(i, seed) for i in range(len(x))])
        return fill(tf.constant(x), baseline, self.session.value_range).numpy()

    def uniform(self, i: int, seed: int | Sequence[int] = 0) -> np.ndarray:
        """Image i's "uniform" baseline (H, W, C) from the generator `[*seed, i]`: drawn one
        image at a time, so a metric needing many draws need not hold them all."""
        low, high = _bounds(self.session, self.x[i : i + 1])
        key = list(seed) if isinstance(seed, Sequence) else [seed]
        u = np.random.default_rng([*key, i]).random(self.x.shape[1:])
        return (low[0] + u * (high[0] - low[0])).astype(self.x.dtype)

    def clean(self) -> np.ndarray:
        """(N,) the target scores of the unperturbed images."""
        x = self.x
        return perturbed_scores(
            self.session, np.arange(len(x)), lambda ids: x[ids], self.targets, self.measure
        )

    def scores(
        self, steps: int, build: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """(N, steps) target scores of `steps` perturbed copies of each image: `build(image
        ids, step ids) -> (B, H, W, C)` makes the rows' images (a function of the ids only)."""
        n = len(self.x)
        rows = np.arange(n * steps)

        def images(ids: np.ndarray) -> np.ndarray:
            return build(ids // steps, ids % steps)

        scores = perturbed_scores(self.session, rows // steps, images, self.targets, self.measure)
        return scores.reshape(n, steps)

    def removed(
        self,
        steps: int,
        fill: np.ndarray,
        masks: Callable[[np.ndarray, np.ndarray], np.ndarray],
        source: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, steps) scores of the images with the (B, H, W) `masks(image ids, step ids)`
        pixels (all channels) taken from `fill` (N, H, W, C); `source` replaces the images
        elsewhere (e.g. a baseline canvas that pixels are inserted into)."""
        base = self.x if source is None else source

        def build(idx: np.ndarray, step: np.ndarray) -> np.ndarray:
            return np.where(masks(idx, step)[..., None], fill[idx], base[idx])

        return self.scores(steps, build)
