"""The benchmark runner: every method, every metric that applies, on several datasets.

`run_benchmark(...)` trains (or loads cached) models per dataset, explains `n` test images
with every method, and writes `results.json`, `results.md`, figures and TensorBoard summaries.
Requesting `shapes` also benchmarks `shapes_shortcut`: the same data with the planted corner
marker linked to the class during training, where `shortcut_rate` measures how often each
method reveals that the model looks at the marker.

The parts live by concept: `presets` (dataset settings, training and caching the models),
`scoring` (one method's row of registered metrics; `evaluate_model` for your own model and
data, read by `user_data`), `report` (Markdown tables, figures, TensorBoard). This module runs
them over datasets and methods; its names are re-exported here as before.
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from xai_keras.data import ArraySplit
from xai_keras.evaluate.presets import (
    DATASET_SETTINGS,
    QUICK_DATASETS,
    QUICK_OPTIONS,
    BenchmarkModel,
    load_or_train,
)
from xai_keras.evaluate.report import columns, to_markdown, write_dataset
from xai_keras.evaluate.scoring import evaluate_model, method_row, time_forward
from xai_keras.explainers import methods, sag
from xai_keras.io import write_json, write_text

__all__ = [
    "DATASET_SETTINGS",
    "METRICS",
    "QUICK_DATASETS",
    "QUICK_OPTIONS",
    "BenchmarkModel",
    "evaluate_model",
    "load_or_train",
    "run_benchmark",
    "to_markdown",
]


# The table's columns -> True when higher is better, from the metric registry (every metric
# `xai_keras.evaluate` imports), then the costs; `to_markdown` reads the registry when it runs.
METRICS: dict[str, bool] = columns()


def _evaluate_method(
    bm: BenchmarkModel,
    method: str,
    test: ArraySplit,
    n_sanity: int,
    batch_size: int,
    quick: bool = False,
) -> tuple[dict[str, float], Any, Any]:
    # The planted-shortcut model is the one whose maps the shortcut rate judges.
    cue_masks = test.cue_masks if bm.name.endswith("_shortcut") else None
    return method_row(
        bm.model,
        method,
        test.images,
        test.masks,
        n_sanity,
        batch_size,
        bm.splits.class_names,
        quick=quick,
        cue_masks=cue_masks,
    )


def _evaluate_sag(bm: BenchmarkModel, images: np.ndarray, batch_size: int) -> dict[str, float]:
    sizes, confidences, passes, found, kept, used = [], [], [], 0, 0, {}
    start = time.perf_counter()
    for image in images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g = sag(bm.model, image, batch_size=batch_size)
        passes.append(g.n_forward)
        found += bool(g.roots)
        kept += min(g.baselines_tried.values()) >= g.threshold
        used[g.baseline] = used.get(g.baseline, 0) + 1
        sizes += [len(r) for r in g.roots]
        confidences += [g.confidence(r) for r in g.roots]
    return {
        "sag_root_size": float(np.mean(sizes)) if sizes else None,
        "sag_root_confidence": float(np.mean(confidences)) if confidences else None,
        "sag_roots_per_image": len(sizes) / len(images),
        "sag_images_with_roots": found / len(images),
        "sag_no_baseline_removes_class": kept,
        "sag_baselines": used,
        "sag_forward_per_image": float(np.mean(passes)),
        "images": len(images),
        "ms_per_image": 1000 * (time.perf_counter() - start) / len(images),
    }


def _versions() -> dict[str, str]:
    found = {}
    for pkg in ("xai-keras", "tensorflow-cpu", "tensorflow", "keras", "numpy"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return found


def run_benchmark(
    datasets: Sequence[str] = ("shapes", "digits", "lfw_faces"),
    method_names: Sequence[str] | None = None,
    n: int = 200,
    out: str | Path = "reports/bench",
    quick: bool = False,
    seed: int = 0,
    cache: str | Path = "logs/bench_models",
    n_sanity: int = 8,
    n_sag: int = 4,
    batch_size: int = 32,
    log_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write results.json, results.md, figures and TensorBoard logs.

    Returns:
        The results dict, shaped {"meta": ..., "datasets": {name: {"accuracy": ...,
        "methods": {method: {metric: value}}, "sag": {...}}}}.
    """
    out, cache = Path(out), Path(cache)
    out.mkdir(parents=True, exist_ok=True)
    names = list(method_names or methods())
    keras.utils.set_random_seed(seed)
    wanted = list(datasets)
    if "shapes" in wanted and "shapes_shortcut" not in wanted:
        wanted.insert(wanted.index("shapes") + 1, "shapes_shortcut")
    results: dict[str, Any] = {
        "meta": {
            "n": n,
            "seed": seed,
            "quick": quick,
            "n_sanity": n_sanity,
            "methods": names,
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
            "versions": _versions(),
        },
        "datasets": {},
    }
    writer = tf.summary.create_file_writer(str(log_dir or out / "tb"))
    for name in tqdm(wanted, desc="datasets", unit="dataset"):
        bm = load_or_train(name, quick, cache, seed)
        test = bm.splits.test_arrays
        k = min(n, len(test))
        test = ArraySplit(
            test.images[:k],
            test.labels[:k],
            None if test.masks is None else test.masks[:k],
            None,
            None if test.cue_masks is None else test.cue_masks[:k],
        )
        forward_s = time_forward(bm.model, test.images, batch_size)
        rows, curves, explanations = {}, {}, []
        runnable = names if method_names else methods(model=bm.model)
        for method in tqdm(runnable, desc=name, unit="method", leave=False):
            row, exp, curve = _evaluate_method(bm, method, test, n_sanity, batch_size, quick)
            row["forward_equivalents"] = row["ms_per_image"] / (1000 * forward_s)
            rows[method], curves[method] = row, curve
            explanations.append(exp[:4])
        data = {
            "accuracy": bm.accuracy,
            "num_classes": bm.splits.num_classes,
            "accuracy_images": len(bm.splits.test_arrays.labels),
            "methods": rows,
        }
        if n_sag > 0:
            data["sag"] = _evaluate_sag(bm, test.images[:n_sag], batch_size)
        results["datasets"][name] = data
        write_dataset(
            writer,
            out,
            name,
            curves,
            explanations,
            test.labels[:4],
            n_sanity > 0,
            to_markdown({**results, "datasets": {name: data}}),
        )
        write_json(out / "results.json", results)  # after each dataset: partial results survive
    writer.close()
    write_text(out / "results.md", to_markdown(results))
    return results
