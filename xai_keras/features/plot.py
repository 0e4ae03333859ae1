"""Labelled picture grids for unit visualisations, and logging them to TensorBoard.

Small sets (maximised units, top examples) get one labelled subplot per image; large sets
(every channel of a layer, every filter) are packed into one mosaic per layer, which stays
fast and readable with hundreds of tiles.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from xai_keras.visualize import to_display

__all__ = ["grid_shape", "log_features", "mosaic", "mosaic_figure", "tile_figure"]


def grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for n tiles (wider than tall)."""
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def _shown(images: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """uint8 RGB for display; `value_range` maps the model's range to black..white."""
    x = np.asarray(images, np.float32)
    if value_range is not None:
        lo, hi = value_range
        x = np.clip((x - lo) / (hi - lo), 0, 1)
    return to_display(x)


def tile_figure(
    images: np.ndarray,
    labels: Sequence[str],
    title: str,
    value_range: tuple[float, float] | None = None,
    cols: int | None = None,
    boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
    cell: float = 1.35,
) -> Figure:
    """One subplot per image with its label; optional (y0, x0, y1, x1) boxes drawn in red."""
    shown = _shown(images, value_range)
    rows, cols = grid_shape(len(shown), cols)
    fig = Figure(figsize=(cell * cols, (cell + 0.3) * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= len(shown):
            continue
        ax.imshow(shown[i], interpolation="nearest")
        ax.set_title(labels[i], fontsize=7)
        if boxes is not None and boxes[i] is not None:
            y0, x0, y1, x1 = boxes[i]
            ax.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="red", lw=1.2)
            )
    fig.suptitle(title, fontsize=9)
    return fig


def mosaic(
    tiles: np.ndarray, cols: int | None = None, gap: int = 1, min_side: int = 24
) -> np.ndarray:
    """Pack (N, h, w, 3) uint8 tiles into one image, row by row, white lines between them.

    Tiles smaller than `min_side` are enlarged by an integer factor (nearest neighbour) so a
    4x4 map stays visible next to its 1-pixel gaps.
    """
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape[:3]
    f = max(1, math.ceil(min_side / max(h, w)))
    tiles = tiles.repeat(f, axis=1).repeat(f, axis=2)
    h, w = h * f, w * f
    rows, cols = grid_shape(n, cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out


def mosaic_figure(sections: Sequence[tuple[str, np.ndarray]], width: float = 7.0) -> Figure:
    """One panel per (title, mosaic image), stacked top to bottom."""
    heights = [m.shape[0] / m.shape[1] for _, m in sections]
    fig = Figure(
        figsize=(width, width * sum(heights) * 0.75 + 0.45 * len(sections)), layout="constrained"
    )
    axes = fig.subplots(len(sections), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (title, image) in zip(axes, sections, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    return fig


def log_features(
    log_dir: str | os.PathLike, item: Any, tag: str = "features", step: int = 0
) -> None:
    """Log a figure, or anything with `.grid()` (Maximized, FeatureMaps, Filters, TopExamples),
    as a TensorBoard image summary under `tag`."""
    from xai_keras.io import figure_to_png
    from xai_keras.tensorboard import log_figure

    fig = item if isinstance(item, Figure) else item.grid()
    log_figure(log_dir, tag, figure_to_png(fig), step)
