"""Pictures a person looks at: heatmaps, overlays and matplotlib figures.

Everything here takes numpy arrays and returns uint8 RGB images or matplotlib `Figure`s built
without pyplot's global state, so it is safe in scripts, servers and notebooks alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import matplotlib
import numpy as np
from matplotlib.figure import Figure

__all__ = ["to_display", "colorize", "colorize_signed", "overlay", "blend", "explanation_grid"]


def to_display(images: np.ndarray) -> np.ndarray:
    """Images in any range as uint8 RGB (N, H, W, 3) for display.

    [0, 1] floats are scaled by 255, [0, 255] values are kept, anything else (e.g. images
    preprocessed to mean-zero) is min-max scaled per image. Grayscale is repeated to RGB.
    """
    x = np.asarray(images, np.float32)
    low, high = x.min(axis=(1, 2, 3), keepdims=True), x.max(axis=(1, 2, 3), keepdims=True)
    if x.min() >= 0 and x.max() <= 1.0:
        x = x * 255
    elif x.min() < 0 or x.max() > 255:
        x = (x - low) / np.maximum(high - low, 1e-12) * 255
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]


def colorize(maps: np.ndarray, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """(N, H, W) maps in [0, 1] to uint8 RGB heatmaps with an OpenCV colormap."""
    m = np.clip(np.round(np.asarray(maps) * 255), 0, 255).astype(np.uint8)
    return np.stack([cv2.applyColorMap(mi, colormap)[..., ::-1] for mi in m])


def colorize_signed(values: np.ndarray, colormap: str = "RdBu_r") -> np.ndarray:
    """(N, H, W) signed maps in [-1, 1] to uint8 RGB with a diverging colormap: red for
    positive evidence, blue for negative, white for zero."""
    v = (np.clip(np.asarray(values, np.float32), -1, 1) + 1) / 2
    return (matplotlib.colormaps[colormap](v)[..., :3] * 255).round().astype(np.uint8)


def blend(images: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend (N, H, W, 3) uint8 heatmaps over the images: (N, H, W, 3) uint8."""
    base = to_display(images).astype(np.float32)
    return np.clip((1 - alpha) * base + alpha * heat.astype(np.float32), 0, 255).astype(np.uint8)


def overlay(
    images: np.ndarray, maps: np.ndarray, alpha: float = 0.45, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """Blend heatmaps over the images: (N, H, W, 3) uint8."""
    return blend(images, colorize(maps, colormap), alpha)


def explanation_grid(
    images: np.ndarray,
    columns: Sequence[tuple[str, np.ndarray]],
    row_titles: Sequence[str] | None = None,
    cell: float = 2.2,
) -> Figure:
    """A grid: one row per image, the image first, then one column per (title, maps) pair.

    Maps (N, H, W) in [0, 1] are drawn as overlays; (N, H, W, 3) uint8 arrays as they are.
    """
    shown = to_display(images)
    n, cols = len(shown), len(columns) + 1
    fig = Figure(figsize=(cell * cols, cell * n + 0.3), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(shown[i])
        axes[i, 0].set_title(row_titles[i] if row_titles else "image", fontsize=9)
        for j, (title, maps) in enumerate(columns, start=1):
            pic = maps[i] if maps.ndim == 4 else overlay(shown[i : i + 1], maps[i : i + 1])[0]
            axes[i, j].imshow(pic)
            axes[i, j].set_title(title, fontsize=9)
        for ax in axes[i]:
            ax.set_axis_off()
    return fig
