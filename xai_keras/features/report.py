"""One call that writes every unit picture for a layer: what the CLI runs."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from matplotlib.figure import Figure

from xai_keras.errors import LayerError
from xai_keras.features.maps import feature_maps, filters
from xai_keras.features.maximize import Maximized, maximize
from xai_keras.features.plot import tile_figure
from xai_keras.features.top import (
    TopExamples,
    image_batches,
    top_examples_figure,
    top_examples_many,
)
from xai_keras.features.units import parse_units, unit_layer

__all__ = ["units_figure", "visualize_units"]


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path)


def _write(fig: Figure, path: Path, log_dir: Any, tag: str) -> Path:
    """Render once; write the PNG atomically and, with a log_dir, the same PNG to TensorBoard."""
    from xai_keras.io import figure_to_png, write_bytes

    png = figure_to_png(fig)
    write_bytes(path, png)
    if log_dir is not None:
        from xai_keras.tensorboard import log_figure

        log_figure(log_dir, tag, png)
    return path


def units_figure(result: Maximized, tops: Sequence[TopExamples], k: int = 4) -> Figure:
    """One row per unit: its maximising image, then its top `k` data set examples (boxed).

    Side by side, the synthetic image and real examples check each other: a pattern that
    appears in both is what the unit responds to.
    """
    by_unit = {t.unit: t for t in tops}
    images, labels, boxes = [], [], []
    for image, unit, value in zip(result.images, result.units, result.activations, strict=True):
        top = by_unit[unit]
        n = min(k, len(top))
        images += [image, *top.images[:n]]
        labels += [f"unit {unit}: synthetic\n{value:.3g}"]
        labels += [f"#{top.indices[i]}\n{top.values[i]:.3g}" for i in range(n)]
        boxes += [None] + [None if top.boxes is None else tuple(top.boxes[i]) for i in range(n)]
        pad = k - n
        images += [np.full_like(image, result.settings.value_range[1])] * pad
        labels += [""] * pad
        boxes += [None] * pad
    title = f"{result.layer}: maximising image and top {k} examples per unit"
    return tile_figure(np.stack(images), labels, title, result.settings.value_range, k + 1, boxes)


def visualize_units(
    model: keras.Model,
    layer: str | Any,
    units: str | int | Sequence[int],
    out_dir: str | os.PathLike,
    steps: int = 256,
    image: Any = None,
    dataset: Any = None,
    k: int = 9,
    log_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **maximize_options: Any,
) -> dict[str, Path]:
    """Write the pictures of what `units` of `layer` respond to; return {name: path}.

    Always: "maximize" (activation maximisation grid), "summary" (JSON: units, activations
    reached, settings) and "filters" (conv kernels; skipped for models without Conv2D).
    With `image` (or else the first image of `dataset`): "feature_maps". With `dataset`:
    "top_examples" (the top-k images per unit, boxed for spatial layers) and "units" (each
    unit's maximising image beside its top examples, `units_figure`). With `log_dir`,
    each picture is also logged as a TensorBoard image under "features/...".

    `maximize_options` go to `maximize` (e.g. param="pixel", tv=0.01, seed=1).
    """
    from xai_keras.io import ensure_writable_dir, write_json

    out = ensure_writable_dir(out_dir)
    target = unit_layer(model, layer)
    unit_list = parse_units(units, target.n_units, target.path)
    slug = _slug(target.path)
    written: dict[str, Path] = {}

    result = maximize(model, target.layer, unit_list, steps, progress=progress, **maximize_options)
    written["maximize"] = _write(
        result.grid(), out / f"maximize_{slug}.png", log_dir, f"features/maximize/{target.path}"
    )
    summary = {
        "layer": target.path,
        "objective": result.objective,
        "steps": steps,
        "units": unit_list,
        "activations": [float(a) for a in result.activations],
        "settings": {k_: v for k_, v in vars(result.settings).items()},
    }
    written["summary"] = write_json(out / f"maximize_{slug}.json", summary)
    try:
        written["filters"] = _write(
            filters(model).grid(), out / "filters.png", log_dir, "features/filters"
        )
    except LayerError:
        pass  # no conv layer: nothing to draw
    if image is None and dataset is not None:
        image = next(image_batches(dataset, model, 1))[0][0]
    if image is not None:
        maps = feature_maps(model, image)
        written["feature_maps"] = _write(
            maps.grid(), out / "feature_maps.png", log_dir, "features/feature_maps"
        )
    if dataset is not None:
        tops = top_examples_many(model, target.layer, unit_list, dataset, k)
        written["top_examples"] = _write(
            top_examples_figure(tops),
            out / f"top_{slug}.png",
            log_dir,
            f"features/top/{target.path}",
        )
        written["units"] = _write(
            units_figure(result, tops, min(k, 4)),
            out / f"units_{slug}.png",
            log_dir,
            f"features/units/{target.path}",
        )
    return written
