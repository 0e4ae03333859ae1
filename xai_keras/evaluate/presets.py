"""The benchmark's models: per-dataset config overrides, and training them once into a cache.

`load_or_train(dataset, quick, cache, seed)` trains the model for a built-in dataset (shapes,
digits, lfw_faces; a `_shortcut` suffix plants the shapes data's corner marker) the first time
and loads it from `cache` afterwards, keyed by a hash of its config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import keras

from xai_keras.config import Config, load_config
from xai_keras.data import DatasetSplits, load_dataset
from xai_keras.errors import InputError

__all__ = [
    "DATASET_SETTINGS",
    "FAST_OPTIONS",
    "QUICK_DATASETS",
    "QUICK_METRIC_OPTIONS",
    "QUICK_OPTIONS",
    "BenchmarkModel",
    "load_or_train",
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

# Method options of every benchmark row: the costliest methods' cheaper settings.
FAST_OPTIONS = {"smoothgrad": {"samples": 16}, "integrated_gradients": {"steps": 32}}
# --quick: cheaper settings for every method that scores many perturbed or sampled copies of
# an image (results.md says so), so the whole quick run stays within 5 minutes on 2 CPU cores.
# RISE, LIME and KernelSHAP at their defaults (2000 masks, 1000 samples) cost 1.6-3.7 s per
# image on the shapes CNN, and the sanity check explains each image once per layer again.
QUICK_OPTIONS = {
    "smoothgrad": {"samples": 8},
    "integrated_gradients": {"steps": 16},
    "scorecam": {"max_channels": 32},
    "occlusion": {"patch": 16, "stride": 16},
    "rise": {"masks": 250},
    "lime": {"samples": 100},
    "kernelshap": {"samples": 100},
}
# --quick: cheaper settings of the costliest metric, keyed by the metric function's name. ROAD
# solves one sparse imputation per image, percentile and order: at the paper's 9 percentiles
# it was about 4.5 s of CPU per method on 32 images, half of the quick run.
# The sanity check randomises every layer but explains only after the first and the last (the
# two rows its columns read), not after each of the quick model's 9 layers.
QUICK_METRIC_OPTIONS = {
    "road": {"percentiles": (20, 50, 80)},
    "cascading_randomization": {"measure_at": "ends"},
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
