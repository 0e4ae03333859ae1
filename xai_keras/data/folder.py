"""Image folders with one sub-folder per class: the path users take with their own data."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from xai_keras.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "load_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _check_folder(root: Path) -> list[str]:
    """Return the class names, or raise a `DataError` saying what is wrong with the folder."""
    if not root.is_dir():
        raise DataError(f"Image folder not found: {root}. Pass folder:<path to a directory>.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    counts = {
        c: sum(1 for f in (root / c).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        for c in classes
    }
    non_empty = [c for c in classes if counts[c] > 0]
    if not non_empty:
        raise DataError(
            f"Image folder {root} has no images. Expected one sub-folder per class holding "
            f"{'/'.join(IMAGE_SUFFIXES)} files, e.g. {root}/cat/1.png, {root}/dog/2.png."
        )
    if len(non_empty) < 2:
        raise DataError(
            f"Image folder {root} has images for only one class ({non_empty[0]!r}); a "
            "classifier needs at least two sub-folders with images."
        )
    empty = [c for c in classes if counts[c] == 0]
    if empty:
        raise DataError(f"Class folders without images in {root}: {', '.join(empty)}.")
    return classes


def load_folder(
    path: str, image_size: int, channels: int, batch_size: int, seed: int
) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset, list[str]]:
    """Read `path/<class>/*.png|jpg` into train (70%), val (15%) and test (15%) pipelines.

    Images are resized to `image_size` and scaled to [0, 1]. The split is fixed by `seed`.
    """
    if not path:
        raise DataError("An image folder needs a path: use folder:<path to a directory>.")
    root = Path(path).expanduser()
    classes = _check_folder(root)
    common = dict(
        labels="inferred",
        class_names=classes,
        color_mode="rgb" if channels == 3 else "grayscale",
        image_size=(image_size, image_size),
        seed=seed,
        batch_size=None,
        verbose=False,
    )
    try:
        train, rest = keras.utils.image_dataset_from_directory(
            str(root), validation_split=0.3, subset="both", **common
        )
    except Exception as err:  # keras raises bare ValueErrors for unreadable folders
        raise DataError(f"Cannot read image folder {root}: {err}") from err

    def prepare(ds: tf.data.Dataset, shuffle: bool) -> tf.data.Dataset:
        ds = ds.map(lambda x, y: (x / 255.0, tf.cast(y, tf.int32))).cache()
        if shuffle:
            ds = ds.shuffle(2048, seed=seed)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    val, test = rest.shard(2, 0), rest.shard(2, 1)
    return prepare(train, True), prepare(val, False), prepare(test, False), classes
