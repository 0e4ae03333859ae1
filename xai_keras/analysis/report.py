"""`analyze`: the whole layer analysis of a shapes classifier, written as a report.

It generates a factor-controlled sample, measures what each layer carries about each factor
twice (units pooled per channel, which is what a channel "is about"; and pooled per cell of a
coarse grid, which keeps where things are, so position can be measured at all), measures
invariance and sensitivity, states in words what it found, and writes Markdown, JSON, PNG
figures and TensorBoard summaries.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from xai_keras.analysis.factors import shapes_factors
from xai_keras.analysis.layers import LayerAnalysis, analyze_layers, collect_activations
from xai_keras.analysis.sensitivity import Sensitivity, factor_sensitivity
from xai_keras.config import DataConfig
from xai_keras.data.shapes import SHAPES, TEXTURES, ShapesSample, generate_shapes
from xai_keras.errors import InputError

__all__ = ["AnalysisReport", "analyze", "findings", "trend"]


@dataclass
class AnalysisReport:
    """The analyses, the findings in words, and the files written (name -> path)."""

    channels: LayerAnalysis
    cells: LayerAnalysis | None
    sensitivity: Sensitivity | None
    findings: list[str]
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)

    def to_markdown(self) -> str:
        parts = [
            "# Layer analysis",
            "",
            f"{self.channels.n_samples} generated images; information in bits (GCMI, Ince et "
            "al. 2017). Layer information is the MI between a factor and its cross-validated "
            "linear read-out from the layer's leading principal components: a lower bound, at "
            f"most log2({len(SHAPES)}) = {np.log2(len(SHAPES)):.2f} bits for the shape.",
            "",
            "## Findings",
            "",
            *[f"- {line}" for line in self.findings],
            "",
            "## Units pooled per channel",
            "",
            self.channels.to_markdown(),
        ]
        if self.cells is not None:
            g = self.cells.grid
            parts += [f"## Units pooled per channel and cell ({g}x{g} grid)", ""]
            parts += [self.cells.to_markdown()]
        if self.sensitivity is not None:
            parts += ["## Sensitivity", "", self.sensitivity.to_markdown()]
        figures = [f"![{k}]({p.name})" for k, p in self.files.items() if p.suffix == ".png"]
        parts += ["## Figures", "", *figures, "", f"Analysis took {self.seconds:.1f} s.", ""]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": self.findings,
            "channels": self.channels.to_dict(),
            "cells": self.cells.to_dict() if self.cells else None,
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
            "seconds": round(self.seconds, 2),
        }


# Read-out MI from a few thousand images wobbles by about a tenth of its value; a last layer
# that close to the peak has not lost the factor.
_NOISE_BITS, _NOISE_SHARE = 0.05, 0.1


def trend(name: str, values: np.ndarray, layers: list[str]) -> str:
    """One sentence on how a factor's information changes with depth."""
    values = np.clip(values, 0, None)
    short = [p.rsplit("/", 1)[-1] for p in layers]
    first, last, peak = values[0], values[-1], int(values.argmax())
    path = " -> ".join(f"{v:.2f}" for v in values)
    if values.max() < _NOISE_BITS:
        return f"**{name}**: no layer carries it, read this way ({path} bits)."
    if last >= values.max() - max(_NOISE_BITS, _NOISE_SHARE * values.max()):
        verb = "rises with depth" if last > first + _NOISE_BITS else "stays level"
        return f"**{name}** {verb}: {path} bits ({short[0]} -> {short[-1]})."
    return (
        f"**{name}** peaks at {short[peak]} ({values[peak]:.2f} bits) and falls to "
        f"{last:.2f} bits at {short[-1]}: {path}."
    )


def findings(
    channels: LayerAnalysis, cells: LayerAnalysis | None, sens: Sensitivity | None
) -> list[str]:
    """What the analysis shows, in sentences computed from the numbers (never canned)."""
    out = [
        trend(f, channels.layer_mi[:, j], channels.layers) for j, f in enumerate(channels.factors)
    ]
    if cells is not None and "position" in cells.factors:
        j = cells.column("position")
        out.append(
            trend(
                f"position ({cells.grid}x{cells.grid} cells kept)",
                cells.layer_mi[:, j],
                cells.layers,
            )
        )
    inv = channels.invariance
    if inv.size:
        worst = np.nanargmin(inv[0]) if not np.all(np.isnan(inv[0])) else None
        if worst is not None:
            out.append(
                f"Invariance of the {channels.target} code to {channels.nuisance[worst]} at "
                f"{channels.layers[0].rsplit('/', 1)[-1]}: {inv[0, worst]:.2f}; at the last "
                f"layer {inv[-1, worst]:.2f} (1 = a decoder trained at other values of it reads "
                "the shape as well as one trained at the same value)."
            )
    if sens is not None:
        order = np.argsort(-sens.flip_rate)
        top, second = order[0], order[1] if len(order) > 1 else order[0]
        out.append(
            f"Changing the **{sens.factors[top]}** alone flips {sens.flip_rate[top]:.0%} of "
            f"predictions; next is {sens.factors[second]} at {sens.flip_rate[second]:.0%}."
        )
        if sens.factors[top] == "cue":
            out.append("The model follows the spurious marker, not the shape: a shortcut.")
    return out


def _sample_config(model: keras.Model, data: DataConfig | None) -> tuple[DataConfig, int, int]:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] not in (1, 3):
        raise InputError(
            f"`analyze` generates square shapes images, so the model must take (N, S, S, 1|3) "
            f"input. Model {model.name!r} takes {shape}."
        )
    data = data or DataConfig()
    if data.name != "shapes":
        raise InputError(
            f"Layer analysis needs images whose generative factors are known: dataset "
            f"'shapes'. Received {data.name!r}."
        )
    return data, int(shape[1]), int(shape[3])


def analyze(
    model: keras.Model,
    out_dir: str | os.PathLike | None = None,
    n: int = 2000,
    layers: list[str] | None = None,
    cells: int | None = 4,
    components: int = 16,
    data: DataConfig | None = None,
    sensitivity_samples: int = 300,
    log_dir: str | os.PathLike | None = None,
    seed: int = 1234,
    progress: bool = True,
) -> AnalysisReport:
    """Analyse what `model`'s layers carry about the factors of the `shapes` dataset.

    Args:
        model: a classifier of `shapes` images (e.g. from `xai-keras train`).
        out_dir: where to write analysis.md/.json and the figures (None: write nothing).
        n: images in the factor-controlled sample.
        layers: layers to analyse (default: the last layer of each conv block, then the
            dense layers).
        cells: also analyse units pooled on a `cells` x `cells` grid (None: skip).
        components: principal components per layer for the read-out.
        data: the run's data settings (only `spurious_cue` and the shapes' settings matter;
            the marker is drawn independently of the class so that it is a factor of its own).
        sensitivity_samples: base images for the one-factor-at-a-time test (0: skip).
        log_dir: also write the figures and the report to TensorBoard here.
    """
    start = time.perf_counter()
    data, size, channels = _sample_config(model, data)

    def shapes(count: int, seed: int) -> ShapesSample:
        # The marker, if any, is drawn independently of the class: a factor of its own.
        return generate_shapes(
            count,
            size,
            seed=seed,
            channels=channels,
            spurious_cue=data.spurious_cue,
            cue_strength=0.0,
            clutter=data.clutter,
            scale=tuple(data.object_scale),
        )

    sample = shapes(n, seed)
    images, factors = sample.images, shapes_factors(sample)
    acts, _ = collect_activations(model, images, layers, grid=1, progress=progress)
    per_channel = analyze_layers(
        model, images, factors, components=components, progress=progress, activations=acts
    )
    per_cell = None
    if cells:
        cell_acts, _ = collect_activations(model, images, layers, grid=cells, progress=progress)
        per_cell = analyze_layers(
            model,
            images,
            factors,
            grid=cells,
            components=components,
            progress=progress,
            activations=cell_acts,
        )
    sens = None
    if sensitivity_samples:
        sens = factor_sensitivity(model, shapes(sensitivity_samples, seed + 1), seed=seed)
    report = AnalysisReport(
        per_channel,
        per_cell,
        sens,
        findings(per_channel, per_cell, sens),
        time.perf_counter() - start,
    )
    if out_dir is not None:
        _write(report, acts, factors, Path(out_dir), log_dir)
    return report


def _write(
    report: AnalysisReport,
    acts: dict[str, np.ndarray],
    factors: list,
    out: Path,
    log_dir: str | os.PathLike | None,
) -> None:
    from xai_keras.analysis import plots
    from xai_keras.io import ensure_writable_dir, figure_to_png, write_bytes, write_json, write_text

    ensure_writable_dir(out)
    figures = {
        "information": plots.information_heatmap(report.channels),
        "depth": plots.information_curves(
            {"pooled per channel": report.channels}
            | (
                {f"{report.cells.grid}x{report.cells.grid} cells": report.cells}
                if report.cells
                else {}
            )
        ),
        "invariance": plots.invariance_curves(report.channels),
        "tuning": plots.tuning_examples(
            report.channels, acts, factors, {"shape": list(SHAPES), "texture": list(TEXTURES)}
        ),
    }
    if report.sensitivity is not None:
        figures["sensitivity"] = plots.sensitivity_bars(report.sensitivity)
    pngs = {name: figure_to_png(fig) for name, fig in figures.items()}
    for name, png in pngs.items():
        report.files[name] = write_bytes(out / f"{name}.png", png)
    report.files["markdown"] = write_text(out / "analysis.md", report.to_markdown())
    report.files["json"] = write_json(out / "analysis.json", report.to_dict())
    if log_dir is not None:
        from xai_keras.tensorboard import log_figure, log_text

        for name, png in pngs.items():
            log_figure(log_dir, f"analysis/{name}", png)
        log_text(log_dir, "analysis/report", report.to_markdown())
