"""`layer="auto"`: pick the CAM layer that explains *these* images most faithfully.

Candidates are the last feature layer at each of the deepest spatial resolutions (class maps
excluded, see `xai_keras.explain.layers`). Each candidate's Grad-CAM is scored with a cheap
faithfulness proxy on (at most `max_images` of) the images: the target probability as the
top-ranked pixels are deleted (replaced by a blurred copy) or inserted into the blurred copy,
at `steps - 1` interior fractions; the score is mean(insertion) - mean(deletion), i.e. the
insertion AUC minus the deletion AUC without the end points every candidate shares. All
masked images of all candidates run through one compiled kernel in padded batches.

Cost: one Grad-CAM pass per candidate plus 2 (steps - 1) masked forward passes per image and
candidate: with the defaults (4 candidates, 8 steps, <= 16 images) about 56 forward passes per
image, against about 3 for one Grad-CAM call.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.explain.base import runner_for
from xai_keras.explain.baselines import make_baseline
from xai_keras.explain.cam import GradCam
from xai_keras.explain.heads import Head
from xai_keras.explain.layers import (
    RESAMPLING,
    LayerChoice,
    class_map_layers,
    conv_candidates,
    default_layer,
    is_graph_model,
    output_shape,
)
from xai_keras.explain.masking import curve_scores, pixel_ranks

__all__ = ["auto_candidates", "choose_layer"]


def auto_candidates(model: keras.Model, count: int = 4) -> list[tuple[str, Any]]:
    """The last feature layer at each of the `count` deepest spatial resolutions."""
    maps = set(class_map_layers(model))
    by_size: dict[tuple, tuple[str, Any]] = {}
    for path, layer in conv_candidates(model):
        if isinstance(layer, RESAMPLING) or path in maps:
            continue
        size = tuple(output_shape(layer)[1:-1])
        by_size.pop(size, None)  # re-insert: dict order becomes "last seen at this size"
        by_size[size] = (path, layer)
    return list(by_size.values())[-count:]


def choose_layer(
    model: keras.Model,
    x: tf.Tensor,
    targets: np.ndarray,
    head: Head,
    batch_size: int = 32,
    count: int = 4,
    max_images: int = 16,
    steps: int = 8,
) -> LayerChoice:
    """The candidate whose Grad-CAM scores best on the proxy (see the module docstring).

    Args:
        model: a Functional or Sequential model.
        x: (N, H, W, C) images as the model takes them.
        targets: (N,) classes, -1 for the top class.
        head: the output explained.
        batch_size: masked images per compiled pass.
        count: how many resolutions to try.
        max_images: the first images used for scoring (bounds the cost).
        steps: fractions 1/steps .. (steps-1)/steps are scored.

    Returns:
        A `LayerChoice` with the scores of every candidate.
    """
    if not is_graph_model(model):
        raise ValueError("layer='auto' needs a Functional or Sequential model.")
    candidates = auto_candidates(model, count)
    if len(candidates) < 2:
        choice = default_layer(model)
        return LayerChoice(choice.path, choice.layer, "auto: one candidate; " + choice.reason)
    xs = x[:max_images]
    n, h, w = int(xs.shape[0]), int(xs.shape[1]), int(xs.shape[2])
    runner = runner_for(model, head=head)
    resolved = runner.resolve_targets(runner.forward_fn(xs), tf.constant(targets[:n])).numpy()
    maps = []
    for path, _ in candidates:
        raw = GradCam.create(model, path, head).attribute(xs, tf.constant(resolved)).raw
        up = tf.nn.relu(tf.image.resize(raw[..., None], (h, w), method="bilinear")[..., 0])
        maps.append(up.numpy())
    c = len(candidates)
    ranks = pixel_ranks(np.concatenate(maps))  # (c * n, H, W): candidate-major
    fill = make_baseline(xs, "blur")
    images, blurred = tf.tile(xs, (c, 1, 1, 1)), tf.tile(fill, (c, 1, 1, 1))
    ks = np.floor(np.arange(1, steps) / steps * h * w + 0.5).astype(np.int32)
    rows = np.repeat(np.arange(c * n, dtype=np.int32), len(ks))
    rows_k, rows_t = np.tile(ks, c * n), np.tile(resolved, c)[rows]
    kept = curve_scores(runner, blurred, images, ranks, rows, rows_k, rows_t, batch_size)
    added = curve_scores(runner, images, blurred, ranks, rows, rows_k, rows_t, batch_size)
    score = (added - kept).reshape(c, -1).mean(axis=1)
    scores = {path: float(s) for (path, _), s in zip(candidates, score)}
    best = int(np.argmax(score))
    listed = ", ".join(f"{p} {s:+.3f}" for p, s in scores.items())
    return LayerChoice(
        candidates[best][0],
        candidates[best][1],
        f"auto: best of {c} layers by insertion - deletion on {n} image(s) ({listed}).",
        scores,
    )
