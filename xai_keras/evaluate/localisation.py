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

__all__ = ["pointing_game", "pointing_offcentre", "energy_pointing", "peak_positions"]


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
