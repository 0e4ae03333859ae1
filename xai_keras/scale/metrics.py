"""Per-image numbers cheap enough to compute for every map of a dataset.

Where a map peaks, and how much of its mass sits in the image border or corners, is a
shortcut finder that needs no object masks: a model that learnt a watermark, a scanner tag
or a corner marker puts its evidence at the edge, where objects rarely are.
"""

from __future__ import annotations

import numpy as np

from xai_keras.errors import InputError
from xai_keras.evaluate.localisation import peak_positions

__all__ = ["border_masks", "map_metrics", "uniform_shares"]


def check_border(border: float) -> float:
    """The border band as a fraction of each side, in (0, 0.5)."""
    if isinstance(border, bool) or not isinstance(border, (int, float)) or not 0 < border < 0.5:
        raise InputError(
            "The `border` argument is the width of the border band as a fraction of the image "
            f"side and must be in (0, 0.5), e.g. 0.2. Received: border={border!r}."
        )
    return float(border)


def border_masks(height: int, width: int, border: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool masks of the border band and of its four corner squares.

    The band is `round(border * side)` pixels wide (at least one) along each side.
    """
    bh, bw = max(1, round(border * height)), max(1, round(border * width))
    rows = np.zeros(height, bool)
    rows[:bh] = rows[height - bh :] = True
    cols = np.zeros(width, bool)
    cols[:bw] = cols[width - bw :] = True
    return rows[:, None] | cols[None, :], rows[:, None] & cols[None, :]


def uniform_shares(height: int, width: int, border: float) -> tuple[float, float]:
    """The border and corner shares a flat map would have: the areas of the regions."""
    band, corners = border_masks(height, width, border)
    return float(band.mean()), float(corners.mean())


def map_metrics(maps: np.ndarray, border: float) -> dict[str, np.ndarray]:
    """Peak location and border/corner mass of each (H, W) map in `maps` (N, H, W), >= 0.

    Returns arrays of length N: `peak_y`, `peak_x` (the maximal pixel nearest the centroid of
    the maximal pixels, as the pointing game uses), `border_share` and `corner_share` (the
    map's mass in the band / corners over its total; 0 for an all-zero map), `peak_region`
    ("corner", "border" or "interior") and `empty` (the map is all zero).
    """
    m = np.asarray(maps, np.float32)
    band, corners = border_masks(m.shape[1], m.shape[2], border)
    peaks = peak_positions(m)
    total = m.sum(axis=(1, 2), dtype=np.float64)
    safe = np.where(total > 0, total, 1.0)
    rows, cols = peaks[:, 0], peaks[:, 1]
    inner = np.where(band[rows, cols], "border", "interior")
    region = np.where(corners[rows, cols], "corner", inner)
    return {
        "peak_y": rows,
        "peak_x": cols,
        "border_share": np.where(total > 0, (m * band).sum(axis=(1, 2)) / safe, 0.0),
        "corner_share": np.where(total > 0, (m * corners).sum(axis=(1, 2)) / safe, 0.0),
        "peak_region": region,
        "empty": total <= 0,
    }
