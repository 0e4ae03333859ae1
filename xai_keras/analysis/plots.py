"""Figures of a layer analysis: a layers x factors heatmap, information over depth, how the
most informative units respond to their factor, invariance, and sensitivity."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from xai_keras.analysis.factors import Factor
from xai_keras.analysis.layers import LayerAnalysis
from xai_keras.analysis.sensitivity import Sensitivity

__all__ = [
    "information_curves",
    "information_heatmap",
    "invariance_curves",
    "sensitivity_bars",
    "tuning_examples",
]


def _short(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def information_heatmap(analysis: LayerAnalysis, title: str | None = None) -> Figure:
    """Layers (rows, input side at the top) x factors: read-out MI in bits, annotated."""
    data = np.clip(analysis.layer_mi, 0, None)
    fig = Figure(figsize=(1.1 * len(analysis.factors) + 2.5, 0.55 * len(data) + 1.6))
    ax = fig.subplots()
    im = ax.imshow(data, cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(len(analysis.factors)), analysis.factors, rotation=30, ha="right")
    ax.set_yticks(range(len(analysis.layers)), [_short(p) for p in analysis.layers])
    for (i, j), v in np.ndenumerate(data):
        light = v > 0.6 * max(data.max(), 1e-9)
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="k" if light else "w", size=8)
    fig.colorbar(im, ax=ax, label="bits")
    ax.set_title(title or "Information about each factor (linear read-out, bits)")
    fig.tight_layout()
    return fig


def information_curves(analyses: dict[str, LayerAnalysis]) -> Figure:
    """Read-out MI over depth, one line per factor; one panel per analysis (e.g. pooled
    channels vs a grid of cells, which keeps where things are)."""
    fig = Figure(figsize=(5.2 * len(analyses), 3.8))
    axes = fig.subplots(1, len(analyses), squeeze=False)
    for ax, (label, a) in zip(axes[0], analyses.items(), strict=True):
        depth = np.arange(len(a.layers))
        for j, name in enumerate(a.factors):
            ax.plot(depth, np.clip(a.layer_mi[:, j], 0, None), marker="o", label=name)
        ax.set_xticks(depth, [_short(p) for p in a.layers], rotation=30, ha="right")
        ax.set_ylabel("bits")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def invariance_curves(analysis: LayerAnalysis) -> Figure:
    """Class information transferred across nuisance values over that read within them."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    depth = np.arange(len(analysis.layers))
    for j, name in enumerate(analysis.nuisance):
        ax.plot(depth, analysis.invariance[:, j], marker="o", label=name)
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_xticks(depth, [_short(p) for p in analysis.layers], rotation=30, ha="right")
    ax.set_ylabel(f"{analysis.target} info: across / within")
    ax.set_title("Invariance to nuisance factors (1 = invariant)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _tuning_panel(ax: Axes, values: np.ndarray, factor: Factor, names: list[str]) -> None:
    if factor.discrete:
        levels = np.unique(factor.values)
        ax.boxplot([values[factor.values == v] for v in levels], showfliers=False)
        labels = names if len(names) == len(levels) else [str(v) for v in levels]
        ax.set_xticks(range(1, len(levels) + 1), labels, rotation=30, ha="right", fontsize=7)
    elif factor.name == "position":
        sc = ax.scatter(*factor.values.T, c=values, s=6, cmap="magma")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.invert_yaxis()
        ax.figure.colorbar(sc, ax=ax, fraction=0.046)
    else:
        v = factor.values
        x = np.arctan2(v[:, 1], v[:, 0]) if v.ndim == 2 else v
        ax.scatter(x, values, s=4, alpha=0.4)
        ax.set_xlabel("angle (rad)" if v.ndim == 2 else factor.name)


def tuning_examples(
    analysis: LayerAnalysis,
    activations: dict[str, np.ndarray],
    factors: list[Factor],
    labels: dict[str, list[str]] | None = None,
) -> Figure:
    """For each factor, the unit that carries most about it, and how it responds."""
    labels = labels or {}
    cols = (len(factors) + 1) // 2
    fig = Figure(figsize=(3.3 * cols, 6.4))
    axes = fig.subplots(2, cols)
    for ax, factor in zip(axes.flat, factors, strict=False):
        j = analysis.column(factor.name)
        best = [(m[:, j].max(), i, int(m[:, j].argmax())) for i, m in enumerate(analysis.unit_mi)]
        bits, layer, unit = max(best)
        path = analysis.layers[layer]
        _tuning_panel(ax, activations[path][:, unit], factor, labels.get(factor.name, []))
        ax.set_title(f"{factor.name}: {_short(path)} #{unit}\n{bits:.2f} bits", fontsize=9)
        ax.set_ylabel("activation" if factor.name != "position" else "y", fontsize=8)
    for ax in list(axes.flat)[len(factors) :]:
        ax.axis("off")
    fig.suptitle("Most informative unit per factor (activation vs factor)", fontsize=11)
    fig.tight_layout()
    return fig


def sensitivity_bars(sens: Sensitivity) -> Figure:
    """Share of predictions that flip when one factor changes."""
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    order = np.argsort(-sens.flip_rate)
    names = [sens.factors[i] for i in order]
    ax.barh(names[::-1], 100 * sens.flip_rate[order][::-1], color="tab:red")
    for y, v in enumerate(100 * sens.flip_rate[order][::-1]):
        ax.text(v + 1, y, f"{v:.0f}%", va="center", fontsize=8)
    ax.set_xlim(0, 110)
    ax.set_xlabel("predictions that flip (%)")
    ax.set_title("Which factor moves the prediction (one changed at a time)")
    fig.tight_layout()
    return fig
