"""The project's CNN, built with the Keras functional API from a `ModelConfig`.

Layers are named so a reader (and Grad-CAM) finds them: `block{i}_conv{j}`, `block{i}_bn{j}`,
`block{i}_relu{j}`, `block{i}_pool`, and the last block's output is `block{n}_relu{m}`. With
`head="gap"` and `dense_units=0` the model is the CAM architecture (global average pooling
straight into the class layer), for which CAM and Grad-CAM coincide.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras
from keras import layers

from xai_keras.config import ModelConfig
from xai_keras.errors import InputError

__all__ = ["build_cnn", "load_model_file"]


def build_cnn(
    cfg: ModelConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    name: str = "xai_cnn",
) -> keras.Model:
    """Build the CNN: conv blocks (pooled between blocks), a head, logits, then softmax.

    The softmax is its own layer (`probs`) after the `logits` Dense layer, so explanations
    can use the logits without touching the model.

    Args:
        cfg: the model section of the config.
        input_shape: (H, W, C) of the images, which are float32 in [0, 1].
        num_classes: number of classes (>= 2).
        name: the model's name.

    Returns:
        An uncompiled `keras.Model`.
    """
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2. Received: num_classes={num_classes}.")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for b, filters in enumerate(cfg.filters, start=1):
        if b > 1:
            x = layers.MaxPooling2D(2, name=f"block{b - 1}_pool")(x)
        for c in range(1, cfg.convs_per_block + 1):
            x = layers.Conv2D(
                filters,
                cfg.kernel_size,
                padding="same",
                use_bias=not cfg.batch_norm,
                name=f"block{b}_conv{c}",
            )(x)
            if cfg.batch_norm:
                x = layers.BatchNormalization(momentum=0.9, name=f"block{b}_bn{c}")(x)
            x = layers.ReLU(name=f"block{b}_relu{c}")(x)
    if cfg.head == "gap":
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    if cfg.dense_units > 0:
        x = layers.Dense(cfg.dense_units, activation="relu", name="dense")(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    probs = layers.Activation("softmax", name="probs")(logits)
    return keras.Model(inputs, probs, name=name)


def load_model_file(path: str | os.PathLike, unsafe: bool = False) -> keras.Model:
    """Load a `.keras` model with Keras' safe mode on unless `unsafe` (the user trusts the
    file: safe mode refuses to run the code a Lambda layer carries). The CLI and the
    distributed engine's workers load models here, so a bad file is one line everywhere."""
    path = str(path)
    if not Path(path).is_file():
        raise InputError(f"Model file not found: {path}. Pass a saved .keras model.")
    fix = "pass a model saved with model.save('name.keras')"
    if path.lower().endswith(".keras") and not zipfile.is_zipfile(path):
        kind = "it is empty" if Path(path).stat().st_size == 0 else "it is not a zip archive"
        raise InputError(f"{path} is not a readable Keras model file ({kind}); {fix}.")
    _import_kerashub_if_used(path)
    try:
        return keras.models.load_model(path, safe_mode=not unsafe, compile=False)
    except ValueError as err:
        if "safe_mode" in str(err) or "lambda" in str(err).lower():
            raise InputError(
                f"{path} contains code (e.g. a Lambda layer) that safe mode refuses to run. "
                "If you trust the file, pass --unsafe (unsafe=True in Python)."
            ) from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path} is not a readable Keras model file ({reason}); {fix}.") from err
    except (OSError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
        raise InputError(f"{path} is not a readable Keras model file ({reason}); {fix}.") from err


def _import_kerashub_if_used(path: str) -> None:
    """KerasHub's classes are known to Keras only once `keras_hub` is imported: a saved
    KerasHub model (its config names the "keras_hub" module) needs it before loading."""
    try:
        with zipfile.ZipFile(path) as archive:
            uses_hub = b'"keras_hub' in archive.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return
    if not uses_hub:
        return
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        raise InputError(
            f"{path} is a KerasHub model: install keras-hub beside TensorFlow with "
            "`bash scripts/install_hub.sh` (or pip install --no-deps keras-hub)."
        ) from None
