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


def blend(images: np.ndarray, heat: np.ndarray, alpha: float | np.ndarray = 0.45) -> np.ndarray:
    """Blend (N, H, W, 3) uint8 heatmaps over the images: (N, H, W, 3) uint8. `alpha` is one
    opacity or one per pixel, (N, H, W, 1)."""
    base = to_display(images).astype(np.float32)
    a = np.asarray(alpha, np.float32)
    return np.clip((1 - a) * base + a * heat.astype(np.float32), 0, 255).astype(np.uint8)


def overlay(
    images: np.ndarray, maps: np.ndarray, alpha: float = 0.45, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """Blend heatmaps over the images: (N, H, W, 3) uint8.

    The heatmap's opacity follows the map: `alpha` scaled by sqrt(map value), from fully
    transparent where the map is 0 to `alpha` * 1.6 (at most 0.85) where it is 1, so
    unimportant regions show the image as it is rather than tinted (with JET, navy) and a blue
    object stays visible.
    """
    weight = np.sqrt(np.clip(np.asarray(maps, np.float32), 0, 1))[..., None]
    return blend(images, colorize(maps, colormap), min(0.85, 1.6 * alpha) * weight)


def _wrap(title: str, width: int = 12) -> str:
    """A column title broken at "_", " " or "@" into lines of about `width` characters."""
    lines: list[str] = []
    for part in title.split("\n"):
        words, line = part.replace("_", "_\u200b").replace(" @ ", " @\u200b").split("\u200b"), ""
        for word in (w for chunk in words for w in chunk.split(" ") if w):
            joined = f"{line}{'' if line.endswith('_') or not line else ' '}{word}"
            if line and len(joined) > width:
                lines.append(line)
                line = word
            else:
                line = joined
        lines.append(line)
    return "\n".join(lines)


def explanation_grid(
    images: np.ndarray,
    columns: Sequence[tuple[str, np.ndarray]],
    row_titles: Sequence[str] | None = None,
    cell: float = 2.2,
    colorbar: bool = True,
    references: Sequence[str] = (),
    max_columns: int = 8,
    signed: Sequence[str] = (),
) -> Figure:
    """A grid: one row per image, the image first, then one column per (title, maps) pair.

    Maps (N, H, W) in [0, 1] are drawn as overlays; (N, H, W, 3) uint8 arrays as they are.
    More than `max_columns` columns wrap into further blocks of rows (the images repeated), so
    a sheet of many methods stays legible when shown scaled down, as in a README. Titles are
    large, and columns whose title is in `references` (maps that metrics compare against, not
    explanations) are titled in grey italics as such. Colour bars give the scale: a JET bar
    "importance" for the unsigned columns, and for the columns whose title is in `signed`
    (drawn with `colorize_signed`) a red/blue bar "red: for the class, blue: against"; a sheet
    with both kinds gets both bars.
    """
    shown = to_display(images)
    n = len(shown)
    blocks = [columns[k : k + max_columns] for k in range(0, len(columns), max_columns)] or [[]]
    cols = 1 + max(len(b) for b in blocks)
    size = 11 + min(4, cols // 3)
    width = cell * cols + (0.9 if colorbar else 0)
    fig = Figure(figsize=(width, (cell + 0.5) * n * len(blocks) + 0.4), layout="constrained")
    axes = fig.subplots(n * len(blocks), cols, squeeze=False)
    for b, block in enumerate(blocks):
        for i in range(n):
            row = axes[b * n + i]
            row[0].imshow(shown[i])
            row[0].set_title(_wrap(row_titles[i], 22) if row_titles else "image", fontsize=size)
            for j, (title, maps) in enumerate(block, start=1):
                pic = maps[i] if maps.ndim == 4 else overlay(shown[i : i + 1], maps[i : i + 1])[0]
                row[j].imshow(pic)
                if i == 0 or row_titles is None:
                    reference = title in references
                    row[j].set_title(
                        _wrap(title) + ("\n(reference)" if reference else ""),
                        fontsize=size,
                        color="0.45" if reference else "black",
                        style="italic" if reference else "normal",
                    )
            for ax in row:
                ax.set_axis_off()
    if colorbar:
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        titles = [title for title, _ in columns]
        bars = []
        if not titles or any(title not in signed for title in titles):
            bars.append((Normalize(0, 1), "jet", "importance (1: most important)", None))
        if any(title in signed for title in titles):
            ticks = ([-1, 0, 1], ["against", "0", "for"])
            bars.append((Normalize(-1, 1), "RdBu_r", "red: for the class, blue: against", ticks))
        for norm, cmap, label, ticks in bars:
            bar = fig.colorbar(
                ScalarMappable(norm, colormaps[cmap]),
                ax=axes[:, 1:].ravel().tolist() if cols > 1 else axes.ravel().tolist(),
                fraction=0.04 / max(1, cols / 6),
                pad=0.01,
                aspect=12 * n * len(blocks),
            )
            bar.set_label(label, fontsize=size - 1)
            if ticks is not None:
                bar.set_ticks(ticks[0], labels=ticks[1])
            bar.ax.tick_params(labelsize=size - 2)
    return fig
