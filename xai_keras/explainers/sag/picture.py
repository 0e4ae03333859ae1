"""Drawing a SAG: the image, then each root and its deletions as masked thumbnails."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from xai_keras.visualize import to_display

if TYPE_CHECKING:
    from xai_keras.explainers.sag.result import SAG

__all__ = ["plot_sag"]

_GAP_X, _GAP_Y = 1.35, 1.9  # node spacing, in thumbnail widths/heights
_LABEL_H = 0.45  # below a thumbnail: its two-line label, then the arrows leave


def _thumbnail(g: SAG, patches: tuple[int, ...]) -> np.ndarray:
    """What the model saw for `patches`, with the hidden part dimmed so the eye finds the rest."""
    seen = to_display(g.masked_image(patches)[None])[0].astype(np.float32)
    keep = np.isin(g.scorer.index.numpy(), patches)[..., None]
    return np.where(keep, seen, 0.35 * seen).astype(np.uint8)


def _count(n: int) -> str:
    return f"{n} patch" if n == 1 else f"{n} patches"


def _colour(g: SAG, conf: float) -> str:
    return "#1a7f37" if conf >= g.threshold else ("#b35900" if conf >= g.floor else "#b00020")


def _layout(g: SAG) -> dict[int, tuple[float, float]]:
    """x, y of each node. One row per set size (largest on top), so every arrow goes exactly
    one row down even where subsets are shared; children sit under their first parent and are
    pushed apart where they would overlap."""
    children: dict[int, list[int]] = {}
    for a, b in g.edges:
        children.setdefault(a, []).append(b)
    size = {k: len(v["patches"]) for k, v in g.nodes.items()}
    top = max(size.values())
    roots = [k for k, v in g.nodes.items() if v["depth"] == 0]
    wanted = {k: 2 * i * _GAP_X for i, k in enumerate(roots)}
    pos: dict[int, tuple[float, float]] = {}
    for n in range(top, 0, -1):
        row = sorted((k for k in wanted if size[k] == n and k not in pos), key=wanted.get)
        x_prev = -np.inf
        for k in row:
            x = max(wanted[k], x_prev + _GAP_X)
            pos[k] = (x, -(top - n) * _GAP_Y)
            x_prev = x
        for k in row:
            kids = [c for c in children.get(k, []) if c not in wanted]
            for i, c in enumerate(kids):
                wanted[c] = pos[k][0] + (i - (len(kids) - 1) / 2) * _GAP_X
    return pos


def _draw_input(ax: Axes, g: SAG, name: str) -> None:
    """The input image with the patch grid, its probability and the baseline."""
    ax.imshow(to_display(g.image[None])[0])
    rows, cols = g.grid
    h, w = g.image.shape[:2]
    for r in range(1, rows):
        ax.axhline(r * h / rows - 0.5, color="white", lw=0.4, alpha=0.6)
    for c in range(1, cols):
        ax.axvline(c * w / cols - 0.5, color="white", lw=0.4, alpha=0.6)
    ax.set_title(
        f"input: {name}\np = {g.probability:.3f}\nhidden patches: {g.baseline or 'baseline'}",
        fontsize=11,
    )
    ax.set_axis_off()


def plot_sag(g: SAG, thumb: float = 1.6) -> Figure:
    """A figure: the input on the left, the graph of masked images on the right."""
    name = g.class_name or f"class {g.target}"
    kind = "relative" if g.relative else "absolute"
    if not g.nodes:
        fig = Figure(figsize=(4, 4.4), layout="constrained")
        ax = fig.subplots()
        ax.imshow(to_display(g.image[None])[0])
        ax.set_title(
            f"{name} (p={g.probability:.2f})\nno sufficient patch set found"
            + (f"\n(baselines tried: {', '.join(g.baselines_tried)})" if g.baselines_tried else ""),
            fontsize=9,
        )
        ax.set_axis_off()
        return fig
    pos = _layout(g)
    xs = [p[0] for p in pos.values()]
    depth = round(-min(p[1] for p in pos.values()) / _GAP_Y)
    cols = (max(xs) - min(xs)) / _GAP_X + 1
    fig = Figure(figsize=(thumb * (cols * _GAP_X + 1.6), thumb * (depth + 1) * _GAP_Y * 0.75 + 0.8))
    left, graph = fig.subplots(1, 2, width_ratios=[1.3, cols * _GAP_X])
    _draw_input(left, g, name)

    roots = [k for k, v in g.nodes.items() if v["depth"] == 0]
    for k, (x, y) in pos.items():
        node = g.nodes[k]
        graph.imshow(_thumbnail(g, node["patches"]), extent=(x, x + 1, y, y + 1))
        if k in roots:  # told apart by a frame and a name, not only by colour
            graph.add_patch(
                Rectangle((x, y), 1, 1, fill=False, lw=2.5, ec=_colour(g, node["confidence"]))
            )
            graph.text(
                x + 0.5,
                y + 1.04,
                f"root {roots.index(k) + 1}",
                ha="center",
                va="bottom",
                fontsize=11,
                fontweight="bold",
            )
        # Two short lines, narrower than the thumbnail, so neighbours' labels never meet; three
        # digits: 0.895 must not read "0.90" under ">= 90%".
        graph.text(
            x + 0.5,
            y - 0.05,
            f"{node['confidence']:.3f}\n{_count(len(node['patches']))}",
            ha="center",
            va="top",
            fontsize=10,
            linespacing=1.15,
            color=_colour(g, node["confidence"]),
            fontweight="bold",
        )
    for a, b in g.edges:
        (xa, ya), (xb, yb) = pos[a], pos[b]
        graph.annotate(
            "",
            xy=(xb + 0.5, yb + 1.02),
            xytext=(xa + 0.5, ya - _LABEL_H),
            arrowprops=dict(arrowstyle="->", color="0.4", lw=1.0),
        )
    graph.set_xlim(min(xs) - 0.2, max(xs) + 1.2)
    graph.set_ylim(-depth * _GAP_Y - 0.4, 1.3)
    graph.set_aspect("equal")
    graph.set_axis_off()
    graph.set_title(
        f"{len(g.roots)} minimal patch set{'s' if len(g.roots) > 1 else ''} (framed: root 1, "
        f"...) keep >= {g.threshold:g} of the {kind} confidence\ngreen >= {g.threshold:g}, "
        f"orange >= {g.floor:g}, red below; each arrow removes one patch; dimmed patches are "
        "hidden from the model",
        fontsize=11,
    )
    return fig
