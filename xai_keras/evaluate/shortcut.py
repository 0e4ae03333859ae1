"""Shortcut detection: does a map point at a known spurious cue rather than at the object?

With a dataset whose cue pixels are known (e.g. the shapes data with `spurious_cue=true`, whose
`cue_masks` mark the planted marker), a map "hits the shortcut" when the explanation relies on
the cue. Pure numpy, any maps.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from xai_keras.checks import check_maps, check_masks
from xai_keras.errors import InputError
from xai_keras.evaluate.localisation import peak_positions
from xai_keras.evaluate.registry import register_metric

__all__ = ["shortcut_hits", "shortcut_rate"]

_MODES = ("peak", "nearest", "mass")


def shortcut_hits(
    maps: Any, cue_masks: Any, masks: Any | None = None, mode: str = "peak"
) -> np.ndarray:
    """Whether each map points at the spurious cue.

    Args:
        maps: (N, H, W) or (H, W) maps; for mode "mass" they must be non-negative.
        cue_masks: boolean masks of the cue's pixels, of the maps' shape.
        masks: boolean object masks of the maps' shape; needed for "nearest" and "mass".
        mode: "peak": the map's peak (the maximal pixel nearest the centroid of the maximal
            pixels, as in `pointing_game`) lies on the cue. "nearest": the peak is closer to
            the cue than to the object; use it for coarse maps (a Grad-CAM cell is larger than
            a small marker, so its peak lands beside the marker, not on it). "mass": the map's
            mass on the cue exceeds its mass on the object (an all-zero map is never a hit).

    Returns:
        (N,) bool array.

    Raises:
        InputError: an unknown mode, "mass" without `masks`, or maps and masks that do not
            match.

    Example:
        >>> test = run.splits.test_arrays
        >>> shortcut_rate(explain(model, test.images).maps, test.cue_masks)
    """
    if mode not in _MODES:
        raise InputError(
            f"The `mode` argument must be one of {', '.join(map(repr, _MODES))}. "
            f"Received: mode={mode!r}."
        )
    m = check_maps(maps, non_negative=mode == "mass")
    cue = check_masks(cue_masks, m.shape, name="cue_masks")
    if mode == "peak":
        rows, cols = peak_positions(m).T
        return cue[np.arange(len(cue)), rows, cols]
    if masks is None:
        raise InputError(
            f"The `masks` argument (object masks) is needed for mode={mode!r}, which compares "
            "the map's relation to the cue with its relation to the object. Received: masks=None."
        )
    obj = check_masks(masks, m.shape)
    if mode == "mass":
        return (m * cue).sum(axis=(1, 2)) > (m * obj).sum(axis=(1, 2))
    rows, cols = peak_positions(m).T
    to_cue = np.array([_distance_to(c)[r, k] for c, r, k in zip(cue, rows, cols)])
    to_obj = np.array([_distance_to(o)[r, k] for o, r, k in zip(obj, rows, cols)])
    return to_cue < to_obj


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """(H, W) Euclidean distance of every pixel to the nearest pixel of `mask` (inf if empty)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)


@register_metric(
    "shortcut_rate",
    direction="higher",
    needs=("cue_masks", "masks"),
    per_image=False,
    description="share of maps whose peak is nearer a known spurious cue than the object",
    options={"mode": "nearest"},
)
def shortcut_rate(maps: Any, cue_masks: Any, masks: Any | None = None, mode: str = "peak") -> float:
    """The fraction of maps that point at the cue: the mean of `shortcut_hits` (same args)."""
    return float(shortcut_hits(maps, cue_masks, masks, mode).mean())
