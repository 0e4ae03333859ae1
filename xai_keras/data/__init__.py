"""Datasets as `tf.data` pipelines with deterministic train/val/test splits.

`load_dataset(cfg.data, batch_size, seed)` is the one entry point; it looks the name up in
`DATASETS` (or takes a `folder:<path>` name) and returns `DatasetSplits`. Array-backed datasets
also keep their test split as numpy (`splits.test_arrays`), with object masks and generative
factors where the dataset knows them, so explanations can be checked against ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from xai_keras.config import DataConfig
from xai_keras.data.folder import load_folder
from xai_keras.data.shapes import (
    SHAPES,
    TEXTURES,
    ShapesSample,
    generate_shapes,
    render_shapes,
)
from xai_keras.errors import DataError

__all__ = [
    "DATASETS",
    "SHAPES",
    "TEXTURES",
    "ArraySplit",
    "DatasetSplits",
    "ShapesSample",
    "generate_shapes",
    "render_shapes",
    "load_dataset",
    "to_pipeline",
]


@dataclass
class ArraySplit:
    """One split held in memory: images (N, H, W, C) float32 in [0, 1] and int labels.

    `masks` (N, H, W) bool and `factors` (name -> (N,)) are set where the dataset knows them.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    factors: dict[str, np.ndarray] | None = None
    cue_masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DatasetSplits:
    """Batched `(image, label)` pipelines for each split plus what describes them."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    class_names: list[str]
    image_shape: tuple[int, int, int]
    test_arrays: ArraySplit | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def to_pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool = True,
) -> tf.data.Dataset:
    """A batched, prefetched `tf.data` pipeline over in-memory arrays (reshuffled each epoch)."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _resize(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize (N, h, w, c) float images to (N, size, size, channels)."""
    out = tf.image.resize(images, (size, size), method="bilinear").numpy()
    if out.shape[-1] == 1 and channels == 3:
        out = np.repeat(out, 3, axis=-1)
    elif out.shape[-1] == 3 and channels == 1:
        out = out @ np.float32([0.299, 0.587, 0.114])[:, None]
    return np.clip(out, 0, 1).astype(np.float32)


def _split_arrays(
    images: np.ndarray, labels: np.ndarray, seed: int, fractions=(0.7, 0.15)
) -> tuple[ArraySplit, ArraySplit, ArraySplit]:
    """Shuffle once with `seed`, stratified per class, and cut into train/val/test."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a = round(fractions[0] * len(idx))
        b = a + round(fractions[1] * len(idx))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.append(chunk)
    splits = []
    for part in parts:
        idx = rng.permutation(np.concatenate(part))
        splits.append(ArraySplit(images[idx], labels[idx].astype(np.int32)))
    return tuple(splits)


def _from_arrays(
    train: ArraySplit,
    val: ArraySplit,
    test: ArraySplit,
    class_names: list[str],
    batch_size: int,
    seed: int,
    cache: bool,
) -> DatasetSplits:
    return DatasetSplits(
        train=to_pipeline(train.images, train.labels, batch_size, True, seed, cache),
        val=to_pipeline(val.images, val.labels, batch_size, cache=cache),
        test=to_pipeline(test.images, test.labels, batch_size, cache=cache),
        class_names=list(class_names),
        image_shape=tuple(train.images.shape[1:]),
        test_arrays=test,
    )


def _load_shapes(cfg: DataConfig, batch_size: int, seed: int) -> DatasetSplits:
    def split(n: int, offset: int, cue_strength: float) -> ArraySplit:
        s = generate_shapes(
            n,
            cfg.image_size,
            seed=seed * 1000 + offset,
            channels=cfg.channels,
            spurious_cue=cfg.spurious_cue,
            cue_strength=cue_strength,
            clutter=cfg.clutter,
            scale=tuple(cfg.object_scale),
        )
        return ArraySplit(s.images, s.labels, s.masks, s.factors, s.cue_masks)

    # With a planted cue, training and validation see the class link; test does not.
    train = split(cfg.n_train, 1, cfg.cue_strength)
    val = split(cfg.n_val, 2, cfg.cue_strength)
    test = split(cfg.n_test, 3, 0.0)
    return _from_arrays(train, val, test, list(SHAPES), batch_size, seed, cfg.cache)


def _load_digits(cfg: DataConfig, batch_size: int, seed: int) -> DatasetSplits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[..., None] / 16.0).astype(np.float32)
    images = _resize(images, cfg.image_size, cfg.channels)
    train, val, test = _split_arrays(images, digits.target, seed)
    names = [str(d) for d in range(10)]
    return _from_arrays(train, val, test, names, batch_size, seed, cfg.cache)


def _load_lfw_faces(cfg: DataConfig, batch_size: int, seed: int) -> DatasetSplits:
    from skimage.data import lfw_subset

    faces = lfw_subset().astype(np.float32)  # 100 faces then 100 non-faces, 25x25 in [0, 1]
    labels = np.repeat([1, 0], len(faces) // 2)
    images = _resize(faces[..., None], cfg.image_size, cfg.channels)
    train, val, test = _split_arrays(images, labels, seed)
    return _from_arrays(train, val, test, ["non-face", "face"], batch_size, seed, cfg.cache)


def _load_folder(cfg: DataConfig, batch_size: int, seed: int) -> DatasetSplits:
    path = cfg.name.split(":", 1)[1]
    train, val, test, names = load_folder(path, cfg.image_size, cfg.channels, batch_size, seed)
    return DatasetSplits(train, val, test, names, (cfg.image_size, cfg.image_size, cfg.channels))


DATASETS: dict[str, Callable[[DataConfig, int, int], DatasetSplits]] = {
    "shapes": _load_shapes,
    "digits": _load_digits,
    "lfw_faces": _load_lfw_faces,
}


def load_dataset(cfg: DataConfig, batch_size: int = 64, seed: int = 0) -> DatasetSplits:
    """Build the dataset named by `cfg.name` as train/val/test pipelines.

    Args:
        cfg: the data section of the config.
        batch_size: batch size of the returned pipelines.
        seed: fixes the generated data (shapes) or the split (real data).

    Raises:
        DataError: unknown name, or a folder that cannot be used.
    """
    if cfg.name.startswith("folder:"):
        return _load_folder(cfg, batch_size, seed)
    if cfg.name not in DATASETS:
        raise DataError(
            f"Unknown dataset {cfg.name!r}. Available: {', '.join(DATASETS)}, "
            "or 'folder:<path>' for an image folder with one sub-folder per class."
        )
    return DATASETS[cfg.name](cfg, batch_size, seed)
