"""The benchmark runner: every method, every metric that applies, on several datasets.

`run_benchmark(...)` trains (or loads cached) models per dataset, explains `n` test images
with every method, and writes `results.json`, `results.md`, figures and TensorBoard summaries.
Requesting `shapes` also benchmarks `shapes_shortcut`: the same data with the planted corner
marker linked to the class during training, where `shortcut_rate` measures how often each
method reveals that the model looks at the marker.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from tqdm import tqdm

from xai_keras.config import Config, load_config
from xai_keras.data import ArraySplit, DatasetSplits, load_dataset
from xai_keras.errors import InputError
from xai_keras.evaluate.faithfulness import average_drop_increase, deletion, insertion
from xai_keras.evaluate.localisation import energy_pointing, pointing_game
from xai_keras.evaluate.sanity import cascading_randomization
from xai_keras.evaluate.shortcut import shortcut_rate
from xai_keras.explain import contact_sheet, explain, methods, sag
from xai_keras.explain.base import get_method, runner_for
from xai_keras.io import figure_to_png, write_bytes, write_json, write_text

__all__ = ["DATASET_SETTINGS", "METRICS", "BenchmarkModel", "run_benchmark", "to_markdown"]

# Config overrides per dataset; "quick" ones train in well under a minute on 2 CPU cores.
DATASET_SETTINGS: dict[str, dict[str, list[str]]] = {
    "shapes": {
        "full": [],
        "quick": [
            "data.n_train=2400",
            "data.n_val=300",
            "data.n_test=300",
            "training.batch_size=32",
            "training.epochs=8",
        ],
    },
    "digits": {
        "full": [
            "data.name=digits",
            "data.image_size=32",
            "data.channels=1",
            "model.filters=[32,64,96]",
            "training.batch_size=32",
            "training.epochs=25",
            "training.early_stopping_patience=6",
        ],
        "quick": [
            "data.name=digits",
            "data.image_size=32",
            "data.channels=1",
            "model.filters=[32,64,96]",
            "training.batch_size=32",
            "training.epochs=12",
        ],
    },
    "lfw_faces": {
        "full": [
            "data.name=lfw_faces",
            "data.image_size=32",
            "data.channels=1",
            "model.filters=[16,32,64]",
            "training.batch_size=16",
            "training.epochs=40",
            "training.early_stopping_patience=10",
        ],
        "quick": [
            "data.name=lfw_faces",
            "data.image_size=32",
            "data.channels=1",
            "model.filters=[16,32,64]",
            "training.batch_size=16",
            "training.epochs=25",
            "training.early_stopping_patience=10",
        ],
    },
}
_SHORTCUT = ["data.spurious_cue=true"]

# metric -> True when higher is better (for the bold "best" in tables).
METRICS: dict[str, bool] = {
    "deletion_auc": False,
    "insertion_auc": True,
    "average_drop": False,
    "increase": True,
    "pointing_game": True,
    "pointing_offcentre": True,
    "energy_pointing": True,
    "sanity_top_spearman": False,
    "sanity_spearman": False,
    "sanity_ssim": False,
    "shortcut_rate": True,
    "ms_per_image": False,
    "forward_equivalents": False,
}
_FAST_OPTIONS = {"smoothgrad": {"samples": 16}, "integrated_gradients": {"steps": 32}}


@dataclass
class BenchmarkModel:
    """A trained model with its data, as the benchmark uses it."""

    name: str
    model: keras.Model
    splits: DatasetSplits
    accuracy: float


def _config_for(dataset: str, quick: bool, cache: Path, seed: int) -> Config:
    base = dataset.removesuffix("_shortcut")
    if base not in DATASET_SETTINGS:
        raise InputError(
            f"Unknown benchmark dataset {dataset!r}. Available: {', '.join(DATASET_SETTINGS)}."
        )
    overrides = list(DATASET_SETTINGS[base]["quick" if quick else "full"])
    overrides += _SHORTCUT if dataset.endswith("_shortcut") else []
    overrides.append(f"training.seed={seed}")
    cfg = load_config(None, overrides)
    key = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    cfg.out_dir = str(cache / f"{dataset}-{key}")
    return cfg


def load_or_train(dataset: str, quick: bool, cache: Path, seed: int) -> BenchmarkModel:
    """The model for `dataset`, trained once and then loaded from `cache`."""
    from xai_keras.training import train

    cfg = _config_for(dataset, quick, cache, seed)
    model_path = Path(cfg.out_dir) / "model.keras"
    if model_path.is_file():
        splits = load_dataset(cfg.data, cfg.training.batch_size, cfg.training.seed)
        report = json.loads((Path(cfg.out_dir) / "report.json").read_text())
        return BenchmarkModel(
            dataset, keras.models.load_model(model_path), splits, report["accuracy"]
        )
    result = train(cfg, verbose=0)
    return BenchmarkModel(dataset, result.model, result.splits, result.report["accuracy"])


def _time_forward(model: keras.Model, images: np.ndarray, batch_size: int) -> float:
    """Seconds per image of a plain compiled forward pass (after a warm-up)."""
    runner = runner_for(model)
    x = tf.constant(images[:batch_size])
    runner.forward_fn(x).numpy()
    start, reps = time.perf_counter(), 3
    for _ in range(reps):
        runner.forward_fn(x).numpy()
    return (time.perf_counter() - start) / (reps * len(x))


def _evaluate_method(
    bm: BenchmarkModel, method: str, test: ArraySplit, n_sanity: int, batch_size: int
) -> tuple[dict[str, float], Any, Any]:
    images = test.images
    options = _FAST_OPTIONS.get(method, {})
    # Warm up on a full batch: the timed call then reuses the traced kernels.
    explain(bm.model, images[:batch_size], method=method, batch_size=batch_size, **options)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        exp = explain(
            bm.model,
            images,
            method=method,
            batch_size=batch_size,
            class_names=bm.splits.class_names,
            **options,
        )
    ms = 1000 * (time.perf_counter() - start) / len(images)
    dele = deletion(bm.model, images, exp.maps, exp.targets, batch_size=batch_size)
    ins = insertion(bm.model, images, exp.maps, exp.targets, batch_size=batch_size)
    drop, increase = average_drop_increase(bm.model, images, exp.maps, exp.targets)
    row = {
        "deletion_auc": float(np.mean(dele.auc)),
        "insertion_auc": float(np.mean(ins.auc)),
        "average_drop": float(np.mean(drop)),
        "increase": float(np.mean(increase)),
        "ms_per_image": ms,
    }
    if test.masks is not None:
        # The usual tolerance: 15 pixels at 224 x 224, scaled to the image size.
        tolerance = max(1, round(15 / 224 * images.shape[1]))
        hits = pointing_game(exp.maps, test.masks, tolerance)
        row["pointing_game"] = float(np.mean(hits))
        # Objects not covering the image centre: where a centre-biased map cannot score.
        h, w = images.shape[1:3]
        off = ~test.masks[:, h // 2, w // 2]
        if off.any():
            row["pointing_offcentre"] = float(np.mean(hits[off]))
        row["energy_pointing"] = float(np.mean(energy_pointing(exp.maps, test.masks)))
    if test.cue_masks is not None and bm.name.endswith("_shortcut"):
        row["shortcut_rate"] = shortcut_rate(exp.maps, test.cue_masks, test.masks, "nearest")
    sanity = None
    if n_sanity > 0 and get_method(method).family != "baseline":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sanity = cascading_randomization(
                bm.model,
                images[:n_sanity],
                method=method,
                targets=exp.targets[:n_sanity],
                **options,
            )
        row["sanity_top_spearman"] = float(np.mean(sanity.spearman[0]))
        row["sanity_spearman"] = float(np.mean(sanity.spearman[-1]))
        row["sanity_ssim"] = float(np.mean(sanity.ssim[-1]))
    return row, exp, (dele, ins, sanity)


def _evaluate_sag(bm: BenchmarkModel, images: np.ndarray, batch_size: int) -> dict[str, float]:
    sizes, confidences, passes, found = [], [], [], 0
    start = time.perf_counter()
    for image in images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g = sag(bm.model, image, batch_size=batch_size)
        passes.append(g.n_forward)
        found += bool(g.roots)
        sizes += [len(r) for r in g.roots]
        confidences += [g.confidence(r) for r in g.roots]
    return {
        "sag_root_size": float(np.mean(sizes)) if sizes else None,
        "sag_root_confidence": float(np.mean(confidences)) if confidences else None,
        "sag_roots_per_image": len(sizes) / len(images),
        "sag_images_with_roots": found / len(images),
        "sag_forward_per_image": float(np.mean(passes)),
        "images": len(images),
        "ms_per_image": 1000 * (time.perf_counter() - start) / len(images),
    }


# -- figures ---------------------------------------------------------------------------------
def _curves_figure(name: str, curves: dict[str, tuple]) -> Figure:
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


def _sanity_figure(name: str, curves: dict[str, tuple]) -> Figure:
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


# -- tables ----------------------------------------------------------------------------------
_REFS = ("random", "centre")
_COSTS = ("ms_per_image", "forward_equivalents")
_SANITY_LIMIT = 0.5  # |Spearman| at or above this after randomisation: the map ignored it


def _rank_value(metric: str, value: float) -> float:
    """What "best" compares: sanity similarities by magnitude (0 is ideal, -0.5 is not)."""
    return abs(value) if metric.startswith("sanity") else value


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


def to_markdown(results: dict[str, Any]) -> str:
    """One table per dataset: rows = methods, columns = metrics, the best value in bold."""
    lines = ["# Benchmark results", ""]
    meta = results["meta"]
    lines.append(
        f"n = {meta['n']} test images per dataset, seed {meta['seed']}, "
        f"{'quick' if meta['quick'] else 'full'} mode, {meta['machine']}."
    )
    for name, data in results["datasets"].items():
        rows = data["methods"]
        cols = [m for m in METRICS if any(m in r for r in rows.values())]
        lines += ["", f"## {name} (test accuracy {data['accuracy']:.3f})", ""]
        lines.append("| method | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        best = {}
        for c in cols:
            values = [_rank_value(c, r[c]) for m, r in rows.items() if c in r and m not in _REFS]
            if len(set(np.round(values, 6))) > 1:  # no "best" among equals
                best[c] = max(values) if METRICS[c] else min(values)
        for method, r in rows.items():
            cells = []
            for c in cols:
                if c not in r:
                    cells.append("")
                    continue
                text = f"{r[c]:.1f}" if c in _COSTS else f"{r[c]:.3f}"
                is_best = (
                    c in best and method not in _REFS and np.isclose(_rank_value(c, r[c]), best[c])
                )
                cells.append(f"**{text}**" if is_best else text)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += ["", *_sanity_verdicts(rows)]
        if "sag" in data and not data["sag"]["sag_roots_per_image"]:
            lines += [
                "",
                f"SAG: no root found in {data['sag']['images']} images (see the "
                "SAG message: the baseline alone may keep the class, or no small set does).",
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
        forward_s = _time_forward(bm.model, test.images, batch_size)
        rows, curves, explanations = {}, {}, []
        for method in tqdm(names, desc=name, unit="method", leave=False):
            row, exp, curve = _evaluate_method(bm, method, test, n_sanity, batch_size)
            row["forward_equivalents"] = row["ms_per_image"] / (1000 * forward_s)
            rows[method], curves[method] = row, curve
            explanations.append(exp[:4])
        data = {"accuracy": bm.accuracy, "methods": rows}
        if n_sag > 0:
            data["sag"] = _evaluate_sag(bm, test.images[:n_sag], batch_size)
        results["datasets"][name] = data
        figures = {
            "curves": _curves_figure(name, curves),
            "examples": contact_sheet(explanations),
        }
        if n_sanity > 0:
            figures["sanity"] = _sanity_figure(name, curves)
        with writer.as_default():
            for kind, fig in figures.items():
                png = figure_to_png(fig)
                tf.summary.image(f"{name}/{kind}", tf.image.decode_png(png, 3)[None], step=0)
                write_bytes(out / f"{name}_{kind}.png", png)
            tf.summary.text(
                f"{name}/results", to_markdown({**results, "datasets": {name: data}}), step=0
            )
        write_json(out / "results.json", results)  # after each dataset: partial results survive
    writer.close()
    write_text(out / "results.md", to_markdown(results))
    return results
