"""`layer="auto"`: pick the CAM layer that explains *these* images most faithfully.

Candidates are the last feature layer at each of the deepest spatial resolutions (class maps
excluded, see `xai_keras.explainers.layers`). Each candidate's Grad-CAM, and the `random`
reference map (smooth, seeded: the one the benchmark compares against), are
scored with a cheap faithfulness proxy on (at most `max_images` of) the images: the target
probability as the top-ranked pixels are deleted, or inserted into an empty canvas, at
`steps - 1` interior fractions (the canvas is the deletion metric's "auto" baseline: per
image, the first of blur, strong blur, mean and black that removes at least half of the
class's probability; images where it does not are left out when at least 3 others remain).
A candidate's score is its margin over the random map, paired by image,
on the weaker of the two curves: min over {deletion, insertion} of the mean improvement
divided by its standard error (the plain mean for fewer than 3 images). So the layer chosen is
the one that beats a random map on both curves by the widest margin, as the benchmark asks.
All masked images run through one compiled kernel in padded batches.

Cost: one Grad-CAM pass per candidate plus 2 (steps - 1) masked forward passes per image and
map (candidates + 1 random): with the defaults (up to 4 candidates, 8 steps, <= 16 images)
at most 70 forward passes per image and 4 probability passes for the baseline, against about
3 for one Grad-CAM call.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.explainers.base import get_method
from xai_keras.explainers.cam import GradCam
from xai_keras.explainers.layers import (
    RESAMPLING,
    LayerChoice,
    class_map_layers,
    conv_candidates,
    is_graph_model,
    layer_shape,
)
from xai_keras.explainers.masking import curve_scores, pixel_ranks, removal_baseline
from xai_keras.explainers.session import Session

__all__ = ["auto_candidates", "choose_layer"]


def auto_candidates(
    model: keras.Model, count: int = 4, session: Session | None = None
) -> list[tuple[str, Any]]:
    """The last feature layer at each of the `count` deepest spatial resolutions; for token
    models (one patch grid throughout), the last `count` blocks' outputs whose patch tokens
    the score depends on (the default layer's siblings in its encoder)."""
    if session is not None:
        default = session.default_layer()
        if len(layer_shape(model, default.layer) or ()) == 3:
            return _token_candidates(model, default.path, count, session)
    maps = set(class_map_layers(model))
    by_size: dict[tuple, tuple[str, Any]] = {}
    for path, layer in conv_candidates(model):
        if isinstance(layer, RESAMPLING) or path in maps:
            continue
        size = tuple(layer_shape(model, layer)[1:-1])
        by_size.pop(size, None)  # re-insert: dict order becomes "last seen at this size"
        by_size[size] = (path, layer)
    return list(by_size.values())[-count:]


def _token_candidates(
    model: keras.Model, default: str, count: int, session: Session
) -> list[tuple[str, Any]]:
    owner = default.rsplit("/", 1)[0] if "/" in default else ""
    siblings = [
        (p, lay)
        for p, lay in conv_candidates(model)
        if (p.rsplit("/", 1)[0] if "/" in p else "") == owner
        and len(layer_shape(model, lay) or ()) == 3
    ]
    reached = session.patch_gradients([lay for _, lay in siblings])
    return [item for item, r in zip(siblings, reached) if r][-count:]


def choose_layer(
    session: Session,
    x: tf.Tensor,
    targets: np.ndarray,
    count: int = 4,
    max_images: int = 16,
    steps: int = 8,
) -> LayerChoice:
    """The candidate whose Grad-CAM scores best on the proxy (see the module docstring).

    Args:
        session: the model (Functional or Sequential), its head, value range ("black" is
            its minimum) and batch size.
        x: (N, H, W, C) images as the model takes them.
        targets: (N,) classes, -1 for the top class.
        count: how many resolutions to try.
        max_images: the first images used for scoring (bounds the cost).
        steps: fractions 1/steps .. (steps-1)/steps are scored.

    Returns:
        A `LayerChoice` with the scores of every candidate.
    """
    model = session.model
    if not is_graph_model(model):
        raise ValueError("layer='auto' needs a Functional or Sequential model.")
    candidates = auto_candidates(model, count, session)
    if len(candidates) < 2:
        choice = session.default_layer()
        return LayerChoice(choice.path, choice.layer, "auto: one candidate; " + choice.reason)
    xs = x[:max_images]
    n, h, w = int(xs.shape[0]), int(xs.shape[1]), int(xs.shape[2])
    resolved, clean = session.explained(xs, targets[:n], checked=True)
    # Each candidate's Grad-CAM, then the benchmark's `random` map: the reference to beat.
    methods = [GradCam.create(session, path) for path, _ in candidates]
    methods.append(get_method("random").create(session))
    maps = []
    for method in methods:
        raw = method.attribute(xs, tf.constant(resolved)).raw
        up = tf.nn.relu(tf.image.resize(raw[..., None], (h, w), method="bilinear")[..., 0])
        maps.append(up.numpy())
    c = len(maps)
    ranks = pixel_ranks(np.concatenate(maps))  # (c * n, H, W): map-major
    fill = removal_baseline(session, xs, resolved, clean)
    images, canvas = tf.tile(xs, (c, 1, 1, 1)), tf.tile(fill, (c, 1, 1, 1))
    ks = np.floor(np.arange(1, steps) / steps * h * w + 0.5).astype(np.int32)
    rows = np.repeat(np.arange(c * n, dtype=np.int32), len(ks))
    rows_k, rows_t = np.tile(ks, c * n), np.tile(resolved, c)[rows]
    kept = curve_scores(session, canvas, images, ranks, rows, rows_k, rows_t)
    added = curve_scores(session, images, canvas, ranks, rows, rows_k, rows_t)
    kept, added = kept.reshape(c, n, -1).mean(axis=2), added.reshape(c, n, -1).mean(axis=2)
    margins = np.stack([kept[-1] - kept[:-1], added[:-1] - added[-1]])  # (2, candidates, n)
    # As in the benchmark, only images whose canvas removes the class can tell maps apart.
    informative = session.probabilities(fill)[np.arange(n), resolved] < 0.5 * clean
    if informative.sum() >= 3:
        margins = margins[..., informative]
    score = _paired_strength(margins).min(axis=0)
    scores = {path: float(s) for (path, _), s in zip(candidates, score)}
    best = int(np.argmax(score))
    listed = ", ".join(f"{p} {s:+.2f}" for p, s in scores.items())
    return LayerChoice(
        candidates[best][0],
        candidates[best][1],
        f"auto: best of {len(candidates)} layers by the margin over a random map on the weaker "
        f"of deletion and insertion, on {n} image(s) ({listed}).",
        scores,
    )


def _paired_strength(margins: np.ndarray) -> np.ndarray:
    """Mean over the last axis divided by its standard error (the mean alone below 3)."""
    mean = margins.mean(axis=-1)
    if margins.shape[-1] < 3:
        return mean
    spread = margins.std(axis=-1, ddof=1) / np.sqrt(margins.shape[-1])
    return mean / np.maximum(spread, 1e-12)
