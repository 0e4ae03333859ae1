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
from xai_keras.evaluate.localisation import _check_masks, energy_pointing, pointing_game
from xai_keras.evaluate.sanity import cascading_randomization
from xai_keras.evaluate.shortcut import shortcut_rate
from xai_keras.evaluate.significance import random_reference
from xai_keras.explain import contact_sheet, explain, methods, sag
from xai_keras.explain.api import check_images
from xai_keras.explain.base import get_method, runner_for
from xai_keras.explain.session import Session
from xai_keras.io import figure_to_png, write_bytes, write_json, write_text

__all__ = [
    "DATASET_SETTINGS",
    "METRICS",
    "BenchmarkModel",
    "evaluate_model",
    "run_benchmark",
    "to_markdown",
]

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
# --quick: cheaper settings for the costliest methods (results.md says so), so the whole quick
# run stays within a few minutes on 2 CPU cores.
QUICK_OPTIONS = {
    "smoothgrad": {"samples": 8},
    "integrated_gradients": {"steps": 16},
    "scorecam": {"max_channels": 32},
    "occlusion": {"patch": 16, "stride": 16},
}
# --quick: only shapes (and its planted-shortcut twin) unless datasets are named.
QUICK_DATASETS = ("shapes",)


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


def _method_row(
    model: keras.Model,
    method: str,
    images: np.ndarray,
    masks: np.ndarray | None,
    n_sanity: int,
    batch_size: int,
    class_names: Sequence[str] | None = None,
    targets: np.ndarray | None = None,
    value_range: Any = None,
    quick: bool = False,
) -> tuple[dict[str, float], Any, Any]:
    """One method's metrics on images (and masks): the benchmark's row for one dataset."""
    fast = (QUICK_OPTIONS if quick else _FAST_OPTIONS).get(method, {})
    options = {**_FAST_OPTIONS.get(method, {}), **fast, "value_range": value_range}
    # Warm up on a full batch: the timed call then reuses the traced kernels.
    explain(model, images[:batch_size], method=method, batch_size=batch_size, **options)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        exp = explain(
            model,
            images,
            method=method,
            targets=targets,
            batch_size=batch_size,
            class_names=class_names,
            **options,
        )
    ms = 1000 * (time.perf_counter() - start) / len(images)
    kw = {"batch_size": batch_size, "value_range": value_range}
    dele = deletion(model, images, exp.maps, exp.targets, **kw)
    ins = insertion(model, images, exp.maps, exp.targets, **kw)
    drop, increase = average_drop_increase(model, images, exp.maps, exp.targets)
    row = {
        "deletion_auc": float(np.mean(dele.auc)),
        "insertion_auc": float(np.mean(ins.auc)),
        "average_drop": float(np.mean(drop)),
        "increase": float(np.mean(increase)),
        "ms_per_image": ms,
    }
    if masks is not None:
        # The usual tolerance: 15 pixels at 224 x 224, scaled to the image size.
        tolerance = max(1, round(15 / 224 * images.shape[1]))
        hits = pointing_game(exp.maps, masks, tolerance)
        row["pointing_game"] = float(np.mean(hits))
        # Objects not covering the image centre: where a centre-biased map cannot score.
        h, w = images.shape[1:3]
        off = ~np.asarray(masks, bool)[:, h // 2, w // 2]
        if off.any():
            row["pointing_offcentre"] = float(np.mean(hits[off]))
        row["energy_pointing"] = float(np.mean(energy_pointing(exp.maps, masks)))
    sanity = None
    if n_sanity > 0 and get_method(method).family != "baseline":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sanity = cascading_randomization(
                model,
                images[:n_sanity],
                method=method,
                targets=exp.targets[:n_sanity],
                **options,
            )
        row["sanity_top_spearman"] = float(np.mean(sanity.spearman[0]))
        row["sanity_spearman"] = float(np.mean(sanity.spearman[-1]))
        row["sanity_ssim"] = float(np.mean(sanity.ssim[-1]))
    return row, exp, (dele, ins, sanity)


def _evaluate_method(
    bm: BenchmarkModel,
    method: str,
    test: ArraySplit,
    n_sanity: int,
    batch_size: int,
    quick: bool = False,
) -> tuple[dict[str, float], Any, Any]:
    row, exp, curves = _method_row(
        bm.model,
        method,
        test.images,
        test.masks,
        n_sanity,
        batch_size,
        bm.splits.class_names,
        quick=quick,
    )
    if test.cue_masks is not None and bm.name.endswith("_shortcut"):
        row["shortcut_rate"] = shortcut_rate(exp.maps, test.cue_masks, test.masks, "nearest")
    return row, exp, curves


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


# -- the user's own model and data -----------------------------------------------------------
_IMAGE_KEYS = ("image", "images", "x", "input", "inputs")
_LABEL_KEYS = ("label", "labels", "y", "target", "targets")
_MASK_KEYS = ("mask", "masks", "segmentation")
_DATA_FORMS = (
    "a tf.data.Dataset (batched or not) of (image, label) or (image, label, mask) elements, "
    "or dicts with 'image', 'label' and 'mask' keys; or arrays: images, (images, labels) or "
    "(images, labels, masks)"
)


def _parts(spec: Any) -> tuple[Any, Any, Any]:
    """Where the image, label and mask sit in an element: keys or tuple positions (or None)."""
    if isinstance(spec, tf.TensorSpec):
        return 0, None, None
    if isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3:
        return 0, (1 if len(spec) > 1 else None), (2 if len(spec) > 2 else None)
    if isinstance(spec, dict):
        image, label, mask = (
            next((k for k in keys if k in spec), None)
            for keys in (_IMAGE_KEYS, _LABEL_KEYS, _MASK_KEYS)
        )
        if image is not None:
            return image, label, mask
    raise InputError(f"The `data` must be {_DATA_FORMS}. Received elements with spec {spec}.")


def _take(data: tf.data.Dataset, model: keras.Model, n: int) -> tuple:
    """The first n (images, labels or None, masks or None) of a dataset, read in one pass."""
    from xai_keras.sources import as_source

    spec = data.element_spec
    keys = _parts(spec)

    def pick(*element):  # (image, label, mask), without the missing ones
        item = element[0] if isinstance(spec, dict) else element
        return tuple(item[k] for k in keys if k is not None)

    # The image and label checks (shapes, dtypes, batched or not) of explain_dataset; this
    # reads nothing, and names what does not fit the model.
    as_source(data.map(lambda *e: pick(*e)[: 1 + (keys[1] is not None)]), model)
    rank = pick(*_as_args(spec))[0].shape.rank
    ds = data.map(pick)
    if rank == len(model.inputs[0].shape):  # batched: the batch axis plus the image's
        ds = ds.unbatch()
    chunks = list(ds.take(n).batch(min(n, 256)).as_numpy_iterator())
    if not chunks:
        raise InputError("The `data` dataset is empty: it must yield at least one image.")
    arrays = [np.concatenate(part) for part in zip(*chunks)]
    images = arrays.pop(0)
    labels = arrays.pop(0) if keys[1] is not None else None
    masks = arrays.pop(0) if keys[2] is not None else None
    return images, labels, masks


def _as_args(spec: Any) -> tuple:
    """An element spec as the positional arguments `Dataset.map` passes."""
    return tuple(spec) if isinstance(spec, (tuple, list)) else (spec,)


def _user_data(data: Any, model: keras.Model, n: int) -> tuple:
    """(images (k, H, W, C) float32, labels (k,) int or None, masks (k, H, W) bool or None)."""
    if isinstance(data, tf.data.Dataset):
        images, labels, masks = _take(data, model, n)
    elif isinstance(data, (tuple, list)) and 1 <= len(data) <= 3:
        images, labels, masks = (*data, None, None)[:3]
    elif isinstance(data, (np.ndarray, tf.Tensor)):
        images, labels, masks = data, None, None
    else:
        raise InputError(f"The `data` must be {_DATA_FORMS}. Received {type(data).__name__}.")
    images = np.asarray(check_images(np.asarray(images)[:n], model, "data images")[0])
    k = len(images)
    num_classes = max(2, int(model.outputs[0].shape[-1]))  # one sigmoid unit: classes 0, 1
    if labels is not None:
        labels = np.asarray(labels)[:k]
        if labels.ndim == 2 and labels.shape[1] == num_classes > 1:  # one-hot rows
            labels = labels.argmax(axis=1)
        elif labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        numeric = np.issubdtype(labels.dtype, np.number) and not np.issubdtype(
            labels.dtype, np.complexfloating
        )
        whole = numeric and np.array_equal(labels, np.round(labels))
        if labels.shape != (k,) or not whole or labels.min() < 0 or labels.max() >= num_classes:
            raise InputError(
                f"The `data` labels must be {k} class indices in [0, {num_classes - 1}] or "
                f"one-hot rows (N, {num_classes}), one per image. Received shape "
                f"{labels.shape}, dtype {labels.dtype}."
            )
        labels = labels.astype(np.int32)
    if masks is not None:
        masks = np.asarray(masks)[:k]
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        masks = _check_masks(masks, images.shape[:3], "data masks")
    return images, labels, masks


def evaluate_model(
    model: keras.Model,
    data: Any,
    method_names: Sequence[str] = ("gradcam", "saliency", "random"),
    n: int = 100,
    targets: str = "predicted",
    n_sanity: int = 8,
    batch_size: int = 32,
    class_names: Sequence[str] | None = None,
    value_range: Any = None,
) -> dict[str, Any]:
    """The benchmark's metrics for your own model on your own data.

    `run_benchmark` trains its own models on built-in datasets; this scores the methods on
    the model and data you care about, with the same metrics: faithfulness (deletion and
    insertion AUC, average drop, increase), localisation (pointing game, energy pointing)
    where object masks are given, the cascading-randomisation sanity check, and cost.

    Args:
        model: a Functional or Sequential Keras classifier.
        data: a `tf.data.Dataset` (batched or not) of `(image, label)` or
            `(image, label, mask)` elements, or of dicts with "image", "label" and "mask"
            keys; or arrays: images, `(images, labels)` or `(images, labels, masks)`. Masks
            are (H, W) booleans (or 0/1) marking the object; labels are class indices or
            one-hot rows. Images must be preprocessed as the model expects.
        method_names: methods to score (see `xai_keras.methods()`); "random" and "centre"
            give reference values.
        n: how many images to use: the first n of `data`.
        targets: "predicted" explains each image's top class (as the benchmark does);
            "labels" explains the labelled class.
        n_sanity: images for the sanity check (0 skips it; it explains a copy of the model
            once per layer with weights).
        batch_size: images per compiled batch.
        class_names: names for the explanations (not needed for the metrics).
        value_range: the model's input range, e.g. (-1, 1) ("black" baselines use its
            minimum; see `xai_keras.explain.ranges`).

    Returns:
        `{"n": images used, "accuracy": top-1 accuracy or None without labels,
        "methods": {method: {metric: mean value}}}`: one dataset's entry of `run_benchmark`'s
        results, with the metric names of `METRICS`. Each method's row also says whether it
        beats a random map on this model: `p_deletion` and `p_insertion` (one-sided Wilcoxon
        signed-rank test, paired by image, against the mean AUC of three seeded random maps),
        `wins_deletion`/`wins_insertion` (images where it is better) and `beats_random`
        (both p < 0.01), over the images whose deletion baseline removes at least half of the
        class's probability (`Curves.informative`).

    Raises:
        InputError: data that does not fit the model (shapes, labels, masks), targets="labels"
            without labels, unknown methods or bad numbers.

    Example:
        >>> val = tf.data.Dataset.from_tensor_slices((x_val, y_val, masks_val)).batch(32)
        >>> rows = evaluate_model(model, val, ["gradcam", "saliency", "random"])["methods"]
        >>> rows["gradcam"]["deletion_auc"], rows["gradcam"]["pointing_game"]
    """
    if not isinstance(model, keras.Model):
        raise InputError(
            f"The `model` argument must be a keras.Model. Received: {type(model).__name__}."
        )
    for name, value, low in (("n", n, 1), ("n_sanity", n_sanity, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"The `{name}` argument must be an int >= {low}. Received: {value!r}.")
    if targets not in ("predicted", "labels"):
        raise InputError(
            f'The `targets` argument must be "predicted" or "labels". Received: {targets!r}.'
        )
    names = [get_method(m).name for m in method_names]
    images, labels, masks = _user_data(data, model, int(n))
    if targets == "labels" and labels is None:
        raise InputError(
            'targets="labels" but the `data` has no labels: pass (image, label) elements '
            'or (images, labels) arrays, or use targets="predicted".'
        )
    accuracy = None
    if labels is not None:
        predicted = Session(model, batch_size=batch_size).probabilities(images).argmax(axis=1)
        accuracy = float(np.mean(predicted == labels))
    forward_s = _time_forward(model, images, batch_size)
    explained = labels if targets == "labels" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = random_reference(
            model, images, explained, batch_size=batch_size, value_range=value_range
        )
    rows = {}
    for method in names:
        row, _, (dele, ins, _) = _method_row(
            model,
            method,
            images,
            masks,
            int(n_sanity),
            batch_size,
            class_names,
            explained,
            value_range,
        )
        row["forward_equivalents"] = row["ms_per_image"] / (1000 * forward_s)
        comparison = reference.compare(dele.auc, ins.auc)
        del comparison["n"]
        rows[method] = {**row, **comparison}
    return {"n": len(images), "accuracy": accuracy, "methods": rows}


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
        lines.append(f"Quick mode uses cheaper settings for: {cheaper}.")
    for name, data in results["datasets"].items():
        rows = data["methods"]
        cols = [m for m in METRICS if any(m in r for r in rows.values())]
        lines += ["", f"## {name} (test accuracy {data['accuracy']:.3f})", ""]
        if name.endswith("_shortcut"):
            lines += [_shortcut_note(data, meta["n"]), ""]
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
        figures = {
            "curves": _curves_figure(name, curves),
            "examples": contact_sheet(explanations, labels=test.labels[:4]),
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
