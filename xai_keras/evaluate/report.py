"""The benchmark's report: the results as Markdown tables, the curve and sanity figures, and
both written to files and TensorBoard.

Columns and which way is better come from the metric registry (`columns()`), so a registered
metric gets its column, and its best value in bold, without a change here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from xai_keras.evaluate.presets import QUICK_METRIC_OPTIONS, QUICK_OPTIONS
from xai_keras.evaluate.registry import get_metric, metrics
from xai_keras.explainers import contact_sheet
from xai_keras.io import figure_to_png, write_bytes

__all__ = ["COSTS", "columns", "curves_figure", "sanity_figure", "to_markdown", "write_dataset"]


def curves_figure(name: str, curves: dict[str, tuple]) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["tab20"]
    for i, (method, (dele, ins, _)) in enumerate(curves.items()):
        style = dict(
            color=cmap(i % 20),
            lw=2.2 if method == "gradcam" else 1.2,
            ls="--" if method in ("random", "centre") else "-",
        )
        for ax, c in ((axes[0], dele), (axes[1], ins)):
            ax.plot(
                c.fractions, c.scores.mean(0), label=f"{method} ({np.mean(c.auc):.3f})", **style
            )
    for ax, title in zip(axes, ("Deletion (lower AUC is better)", "Insertion (higher is better)")):
        ax.set_title(f"{name}: {title}", fontsize=10)
        ax.set_xlabel("fraction of pixels removed" if "Del" in title else "fraction inserted")
        ax.set_ylabel("target probability")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return fig


def sanity_figure(name: str, curves: dict[str, tuple]) -> Figure:
    fig = Figure(figsize=(9, 4.6), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab20"]
    for i, (method, (_, _, sanity)) in enumerate(curves.items()):
        if sanity is None:
            continue
        ax.plot(
            range(len(sanity.layers) + 1),
            [1.0, *sanity.spearman.mean(1)],
            marker="o",
            ms=3,
            label=method,
            color=cmap(i % 20),
        )
        labels = ["trained", *sanity.layers]
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylabel("Spearman rank correlation with the trained model's map")
    ax.set_title(
        f"{name}: cascading randomisation (layers randomised from the output down)", fontsize=10
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return fig


_REFS = ("random", "centre")
COSTS = ("ms_per_image", "forward_equivalents")
_SANITY_LIMIT = 0.5  # |Spearman| at or above this after randomisation: the map ignored it


def columns() -> dict[str, bool]:
    """The table's columns, metric keys in registry order then the costs: column -> True when
    higher is better (for the bold "best")."""
    found = {get_metric(n).key: get_metric(n).higher_is_better for n in metrics()}
    return {**found, **dict.fromkeys(COSTS, False)}


def _rank_value(column: str, value: float) -> float:
    """What "best" compares: |value| for metrics registered `absolute` (sanity similarities:
    0 is ideal, -0.5 is not)."""
    absolute = any(get_metric(n).absolute and get_metric(n).key == column for n in metrics())
    return abs(value) if absolute else value


def _sanity_verdicts(rows: dict[str, dict]) -> list[str]:
    lines = []
    for key, what in (
        ("sanity_top_spearman", "the output layer"),
        ("sanity_spearman", "every layer"),
    ):
        failed = [m for m, r in rows.items() if abs(r.get(key, 0.0)) >= _SANITY_LIMIT]
        passed = [m for m, r in rows.items() if key in r and m not in failed]
        if passed or failed:
            lines.append(
                f"Sanity check, randomising {what}: maps changed (|Spearman| < "
                f"{_SANITY_LIMIT}) for {', '.join(passed) or 'none'}; stayed similar "
                f"(fail) for {', '.join(failed) or 'none'}."
            )
    return lines


def _shortcut_note(data: dict[str, Any], n: int) -> str:
    """Why the planted-shortcut model scores near (or below) chance: it reads the marker."""
    k = int(data.get("num_classes", 5))
    n = int(data.get("accuracy_images", n))
    chance = 1 / k
    spread = 2 * np.sqrt(chance * (1 - chance) / max(n, 1))
    return (
        f"This model's low accuracy is planted, not a bug: in its training and validation images "
        f"a bright marker sits in a border slot chosen by the class, and in these test images "
        f"the slot is random. A model that learned the marker instead of the shape predicts the "
        f"class whose slot holds the marker, which is the true class 1 time in {k}: chance, "
        f"{chance:.2f}. Its {data['accuracy']:.3f} is "
        + (
            f"chance within sampling noise (about +/-{spread:.2f} for {n} images): "
            f"{'below' if data['accuracy'] < chance else 'off'} {chance:.2f} by the luck of the "
            "draw, not by design. "
            if abs(data["accuracy"] - chance) <= spread
            else f"{'below' if data['accuracy'] < chance else 'above'} chance by more than "
            f"sampling noise (+/-{spread:.2f} for {n} images). "
        )
        + "`shortcut_rate` says how often each method's map points at the marker."
    )


def to_markdown(results: dict[str, Any]) -> str:
    """One table per dataset: rows = methods, columns = metrics, the best value in bold."""
    lines = ["# Benchmark results", ""]
    meta = results["meta"]
    lines.append(
        f"n = {meta['n']} test images per dataset, seed {meta['seed']}, "
        f"{'quick' if meta['quick'] else 'full'} mode, {meta['machine']}."
    )
    if meta["quick"]:
        cheaper = "; ".join(
            f"{m} {', '.join(f'{k}={v}' for k, v in o.items())}" for m, o in QUICK_OPTIONS.items()
        )
        metric = "; ".join(
            f"{m} {', '.join(f'{k}={v}' for k, v in o.items())}"
            for m, o in QUICK_METRIC_OPTIONS.items()
        )
        lines.append(
            f"Quick mode uses cheaper settings for: {cheaper}; and for the metrics: {metric} "
            "(full mode: ROAD at the paper's 10, 20, ..., 90, sanity maps after every layer); "
            f"the sanity check on {meta.get('n_sanity', '?')} images."
        )
    for name, data in results["datasets"].items():
        rows = data["methods"]
        higher = columns()
        cols = [m for m in higher if any(m in r for r in rows.values())]
        lines += ["", f"## {name} (test accuracy {data['accuracy']:.3f})", ""]
        if name.endswith("_shortcut"):
            lines += [_shortcut_note(data, meta["n"]), ""]
        lines.append("| method | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        best = {}
        for c in cols:
            values = [_rank_value(c, r[c]) for m, r in rows.items() if c in r and m not in _REFS]
            if len(set(np.round(values, 6))) > 1:  # no "best" among equals
                best[c] = max(values) if higher[c] else min(values)
        for method, r in rows.items():
            cells = []
            for c in cols:
                if c not in r:
                    cells.append("")
                    continue
                text = f"{r[c]:.1f}" if c in COSTS else f"{r[c]:.3f}"
                is_best = (
                    c in best and method not in _REFS and np.isclose(_rank_value(c, r[c]), best[c])
                )
                cells.append(f"**{text}**" if is_best else text)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += ["", *_sanity_verdicts(rows)]
        if "sag" in data and not data["sag"]["sag_roots_per_image"]:
            lines += [
                "",
                f"SAG: no root found in {data['sag']['images']} images; in "
                f"{data['sag'].get('sag_no_baseline_removes_class', 0)} of them no baseline "
                "(blur, strong blur, mean, black) removes the class: the model keeps it with "
                "no patch shown.",
            ]
        elif "sag" in data:
            s = data["sag"]
            lines += [
                "",
                f"SAG: {s['sag_roots_per_image']:.1f} roots per image of "
                f"{s['sag_root_size']:.1f} patches at confidence "
                f"{s['sag_root_confidence']:.3f}; {s['sag_forward_per_image']:.0f} masked "
                f"forward passes and {s['ms_per_image']:.0f} ms per image.",
            ]
    lines += [
        "",
        "Lower is better for deletion AUC, average drop, sanity similarity (a method "
        "whose map survives randomised weights fails the check) and cost; `random` and "
        "`centre` are reference maps and are not ranked.",
    ]
    return "\n".join(lines) + "\n"


def write_dataset(
    writer: Any,
    out: Path,
    name: str,
    curves: dict[str, tuple],
    explanations: list,
    labels: np.ndarray,
    sanity: bool,
    markdown: str,
) -> None:
    """One dataset's figures (curves, example maps, and sanity when it ran) as
    `out/<name>_<kind>.png` and TensorBoard images `<name>/<kind>`, and its table as the
    TensorBoard text `<name>/results`."""
    figures = {
        "curves": curves_figure(name, curves),
        "examples": contact_sheet(explanations, labels=labels),
    }
    if sanity:
        figures["sanity"] = sanity_figure(name, curves)
    with writer.as_default():
        for kind, fig in figures.items():
            png = figure_to_png(fig)
            tf.summary.image(f"{name}/{kind}", tf.image.decode_png(png, 3)[None], step=0)
            write_bytes(out / f"{name}_{kind}.png", png)
        tf.summary.text(f"{name}/results", markdown, step=0)
