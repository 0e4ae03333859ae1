"""Shortcut detection: does a map point at a known spurious cue rather than at the object?

With a dataset whose cue pixels are known (e.g. the shapes data with `spurious_cue=true`, whose
`cue_masks` mark the planted marker), a map "hits the shortcut" when the explanation relies on
the cue. Pure numpy, any maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xai_keras.errors import InputError
from xai_keras.evaluate.localisation import _check_maps, _check_masks, _peaks

__all__ = ["shortcut_hits", "shortcut_rate"]

_MODES = ("peak", "mass")


def shortcut_hits(
    maps: Any, cue_masks: Any, masks: Any | None = None, mode: str = "peak"
) -> np.ndarray:
    """Whether each map points at the spurious cue.

    Args:
        maps: (N, H, W) or (H, W) maps; for mode "mass" they must be non-negative.
        cue_masks: boolean masks of the cue's pixels, of the maps' shape.
        masks: boolean object masks of the maps' shape; needed for mode "mass".
        mode: "peak": the map's peak (its first maximum in row-major order, as in
            `pointing_game`) lies on the cue. "mass": the map's mass on the cue exceeds its
            mass on the object (an all-zero map is never a hit).

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
    m = _check_maps(maps, non_negative=mode == "mass")
    cue = _check_masks(cue_masks, m.shape, name="cue_masks")
    if mode == "peak":
        rows, cols = _peaks(m).T
        return cue[np.arange(len(cue)), rows, cols]
    if masks is None:
        raise InputError(
            "The `masks` argument (object masks) is needed for mode='mass', which compares the "
            "map's mass on the cue with its mass on the object. Received: masks=None."
        )
    obj = _check_masks(masks, m.shape)
    return (m * cue).sum(axis=(1, 2)) > (m * obj).sum(axis=(1, 2))


def shortcut_rate(maps: Any, cue_masks: Any, masks: Any | None = None, mode: str = "peak") -> float:
    """The fraction of maps that point at the cue: the mean of `shortcut_hits` (same args)."""
    return float(shortcut_hits(maps, cue_masks, masks, mode).mean())
