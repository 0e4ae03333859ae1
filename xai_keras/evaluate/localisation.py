"""Localisation metrics: does a map point at the object? Pure numpy, any model, any map.

The metrics take maps (N, H, W) and boolean object masks (N, H, W) and return one score per
image; average them (or not) yourself.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from xai_keras.checks import check_maps, check_masks
from xai_keras.errors import InputError
from xai_keras.evaluate.registry import register_metric

__all__ = [
    "energy_pointing",
    "localisation_auc",
    "peak_positions",
    "pointing_game",
    "pointing_offcentre",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "top_k_intersection",
]


def peak_positions(maps: np.ndarray) -> np.ndarray:
    """(N, 2) (row, col) of each map's peak.

    Upsampled maps have flat tops (bilinear resizing clamps at the border, so a coarse map's
    corner cell becomes a plateau reaching the image edge). Taking the first maximum would
    put the peak on the plateau's top-left pixel, off the region it marks; instead the peak
    is the maximal pixel nearest the centroid of all maximal pixels (the first such in
    row-major order on ties). A constant map points at its centre.
    """
    peaks = np.empty((len(maps), 2), np.int64)
    for i, m in enumerate(maps):
        rows, cols = np.nonzero(np.isclose(m, m.max(), rtol=1e-6, atol=0))
        d = (rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2
        j = int(np.argmin(d))  # argmin returns the first of equal distances (row-major)
        peaks[i] = rows[j], cols[j]
    return peaks


_POINTING = 'Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016'


@register_metric(
    "pointing_game",
    direction="higher",
    needs=("masks",),
    description="whether the map's peak lies on the object (within `tolerance` pixels)",
    reference=_POINTING,
)
def pointing_game(maps: Any, masks: Any, tolerance: int = 0) -> np.ndarray:
    """Whether each map's peak lies on the object (or within `tolerance` pixels of it).

    The peak is the maximal pixel nearest the centroid of all maximal pixels, so a flat top
    (an upsampled coarse map) points at its middle; a constant map points at the image
    centre. The mask is dilated with a disk of
    radius `tolerance` (`cv2.dilate`); the paper uses 15 pixels on 224 x 224 images. An
    empty mask is never hit.

    Args:
        maps: (N, H, W) or (H, W) saliency maps (any real values; only the peak matters).
        masks: boolean object masks of the same shape.
        tolerance: how many pixels the peak may lie outside the object and still count.

    Returns:
        (N,) float array of 1.0 (hit) and 0.0 (miss); its mean is the pointing accuracy.

    Raises:
        InputError: maps and masks of different shapes, non-boolean masks, non-finite maps,
            or a negative tolerance.

    Example:
        >>> accuracy = pointing_game(exp.maps, data.masks, tolerance=2).mean()

    Reference: Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016.
    """
    m = check_maps(maps)
    k = check_masks(masks, m.shape)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise InputError(
            f"The `tolerance` argument must be a non-negative int (pixels). "
            f"Received: tolerance={tolerance!r}."
        )
    if tolerance > 0:
        # a radius beyond the image's diagonal reaches every pixel from any object pixel
        tolerance = min(int(tolerance), int(np.ceil(np.hypot(*m.shape[1:]))))
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1,) * 2)
        k = np.stack([cv2.dilate(mask.astype(np.uint8), disk) for mask in k]).astype(bool)
    rows, cols = peak_positions(m).T
    return k[np.arange(len(k)), rows, cols].astype(np.float64)


@register_metric(
    "pointing_offcentre",
    direction="higher",
    needs=("masks",),
    description="the pointing game on objects that do not cover the image centre",
    reference=_POINTING,
)
def pointing_offcentre(maps: Any, masks: Any, tolerance: int = 0) -> np.ndarray:
    """`pointing_game` where a centre-biased map cannot score: NaN for the images whose
    object covers the centre pixel (H // 2, W // 2), so their mean (`np.nanmean`) is the
    pointing accuracy on off-centre objects.

    Args:
        maps, masks, tolerance: as in `pointing_game`.

    Returns:
        (N,) float array of 1.0 (hit), 0.0 (miss) and NaN (object on the centre).

    Example:
        >>> np.nanmean(pointing_offcentre(exp.maps, data.masks, tolerance=2))
    """
    hits = pointing_game(maps, masks, tolerance)
    k = check_masks(masks, hits.shape + np.shape(maps)[-2:])
    h, w = k.shape[1:]
    return np.where(k[:, h // 2, w // 2], np.nan, hits)


@register_metric(
    "energy_pointing",
    direction="higher",
    needs=("masks",),
    description="the share of the map's mass on the object",
    reference='Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional '
    'Neural Networks", CVPR Workshops 2020',
)
def energy_pointing(maps: Any, masks: Any) -> np.ndarray:
    """The share of each map's mass that falls on the object: sum(map * mask) / sum(map).

    An all-zero map gets the mask's area fraction, the value a uniform map gets (it points
    nowhere in particular), so a method returning nothing is not scored 0 or 1 by accident.

    Args:
        maps: (N, H, W) or (H, W) non-negative maps (e.g. `Explanation.maps`).
        masks: boolean object masks of the same shape.

    Returns:
        (N,) float array in [0, 1].

    Raises:
        InputError: maps and masks of different shapes, non-boolean masks, or maps with
            negative or non-finite values.

    Example:
        >>> energy = energy_pointing(exp.maps, data.masks).mean()

    Reference: Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020 (energy-based pointing game).
    """
    m = check_maps(maps, non_negative=True)
    k = check_masks(masks, m.shape)
    total = m.sum(axis=(1, 2))
    inside = (m * k).sum(axis=(1, 2))
    area = k.mean(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), area)


def _top(maps: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: each map's k[i] highest pixels (ties: row-major first)."""
    flat = maps.reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None], axis=1)
    return (ranks < np.asarray(k)[:, None]).reshape(maps.shape)


@register_metric(
    "top_k_intersection",
    direction="higher",
    needs=("masks",),
    default=False,
    description="share of the map's k highest pixels that lie on the object",
    reference='Theiner, Müller-Budack and Ewerth, "Interpretable Semantic Photo Geolocation", '
    "WACV 2022",
)
def top_k_intersection(maps: Any, masks: Any, k: int | float = 0.05) -> np.ndarray:
    """Top-K intersection: |top_k(map) ∩ mask| / k.

    Args:
        maps: (N, H, W) or (H, W) maps; larger is more important.
        masks: boolean object masks of the same shape.
        k: how many top pixels: an int, or a float in (0, 1] for that share of the pixels
            (default 5%; Quantus' default is 1000 pixels, 2% of 224 x 224).

    Returns:
        (N,) shares in [0, 1].

    Example:
        >>> top_k_intersection(exp.maps, masks, k=100).mean()

    Reference: Theiner, Müller-Budack and Ewerth, "Interpretable Semantic Photo
    Geolocation", WACV 2022. (Quantus `TopKIntersection`.)
    """
    m = check_maps(maps)
    s = check_masks(masks, m.shape)
    pixels = m.shape[1] * m.shape[2]
    if isinstance(k, float) and 0 < k <= 1:
        k = max(1, round(k * pixels))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= pixels:
        raise InputError(
            f"The `k` argument must be an int in [1, {pixels}] or a share in (0, 1]. "
            f"Received: k={k!r}."
        )
    top = _top(m, np.full(len(m), int(k)))
    return (top & s).sum(axis=(1, 2)) / float(k)


_ARRAS = (
    'Arras, Osman and Samek, "CLEVR-XAI: A benchmark dataset for the ground truth evaluation '
    'of neural network explanations", Information Fusion 2022'
)


@register_metric(
    "relevance_rank_accuracy",
    direction="higher",
    needs=("masks",),
    default=False,
    description="share of the object's K pixels among the map's K highest (K = object size)",
    reference=_ARRAS,
)
def relevance_rank_accuracy(maps: Any, masks: Any) -> np.ndarray:
    """Relevance Rank Accuracy: with K the object's size in pixels, |top_K(map) ∩ mask| / K.

    1 when the map's K highest pixels are exactly the object. NaN for an empty mask.

    Args:
        maps: (N, H, W) or (H, W) maps.
        masks: boolean object masks of the same shape.

    Returns:
        (N,) shares in [0, 1] (NaN where a mask is empty).

    Example:
        >>> np.nanmean(relevance_rank_accuracy(exp.maps, masks))

    Reference: Arras, Osman and Samek, "CLEVR-XAI: A benchmark dataset for the ground truth
    evaluation of neural network explanations", Information Fusion 2022.
    """
    m = check_maps(maps)
    s = check_masks(masks, m.shape)
    size = s.sum(axis=(1, 2))
    hits = (_top(m, size) & s).sum(axis=(1, 2))
    return np.where(size > 0, hits / np.maximum(size, 1), np.nan)


@register_metric(
    "relevance_mass_accuracy",
    direction="higher",
    needs=("masks",),
    default=False,
    description="share of the map's positive relevance that lies on the object",
    reference=_ARRAS,
)
def relevance_mass_accuracy(maps: Any, masks: Any) -> np.ndarray:
    """Relevance Mass Accuracy: R_within / R_total over the positive relevance
    (max(map, 0)), as the paper computes it for signed heatmaps.

    On non-negative maps (`Explanation.maps`) it equals `energy_pointing`, which this
    package had already; it differs on signed maps, whose negative evidence is left out
    (Quantus sums the signed values). NaN where a map has no positive relevance.

    Args:
        maps: (N, H, W) or (H, W) maps, signed or not.
        masks: boolean object masks of the same shape.

    Returns:
        (N,) shares in [0, 1].

    Example:
        >>> relevance_mass_accuracy(exp.signed_maps(), masks).mean()

    Reference: Arras, Osman and Samek, "CLEVR-XAI", Information Fusion 2022.
    """
    m = np.maximum(check_maps(maps).astype(np.float64), 0.0)
    s = check_masks(masks, m.shape)
    total = m.sum(axis=(1, 2))
    inside = (m * s).sum(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


@register_metric(
    "localisation_auc",
    direction="higher",
    needs=("masks",),
    default=False,
    description="ROC AUC of the map as a detector of the object's pixels",
    reference='Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 2006',
    key="localisation_auc",
    label="localisation AUC",
)
def localisation_auc(maps: Any, masks: Any) -> np.ndarray:
    """The area under the ROC curve of the map's values as scores of "on the object": the
    probability that a random object pixel outranks a random background pixel (ties count
    one half; the Mann-Whitney U statistic). 0.5 for a constant or random map. NaN where the
    mask is empty or full.

    Args:
        maps: (N, H, W) or (H, W) maps.
        masks: boolean object masks of the same shape.

    Returns:
        (N,) AUCs in [0, 1].

    Example:
        >>> np.nanmean(localisation_auc(exp.maps, masks))

    Reference: Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 2006.
    (Quantus `AUC`, which uses scikit-learn's `roc_auc_score`: the same.)
    """
    from scipy.stats import rankdata

    m = check_maps(maps)
    s = check_masks(masks, m.shape)
    out = np.full(len(m), np.nan)
    for i in range(len(m)):
        pos = int(s[i].sum())
        neg = s[i].size - pos
        if pos and neg:
            ranks = rankdata(m[i].ravel())
            out[i] = (ranks[s[i].ravel()].sum() - pos * (pos + 1) / 2) / (pos * neg)
    return out
