"""Compatibility matrix: which explanation methods work on which Keras models.

Every `keras.applications` classifier of the installed Keras (random weights, 10 classes, a
small input) and a set of model forms (nested, sigmoid heads, several outputs or inputs,
regression, a score function, mixed precision, uint8 input, a ViT-like model, a subclassed
model) is explained with every method of `xai_keras.methods()` on 2 random images. A cell is
"✓" when `xai_keras.explain` returns finite (N, H, W) maps in [0, 1] that are neither all zero
nor constant; otherwise it holds the one-line reason (exception type and the first line of
its message), so the matrix shows whether a user would get a clear error or a traceback.

The same rows are run through the peers that are installed, each with its own default layer
(what their users get): tf-keras-vis (Gradcam, GradcamPlusPlus, Layercam, Scorecam, Saliency
with and without `smooth_samples`, on a `ReplaceToLinear` clone) and xplique (GradCAM,
GradCAMPP, Saliency, GuidedBackprop, SmoothGrad, IntegratedGradients, Occlusion, on the model
with its final softmax/sigmoid made linear, as xplique's documentation asks).

On rows whose explained layer feeds GlobalAveragePooling2D -> Dense, Grad-CAM must equal the
class activation map CAM_c = sum_k w[k, c] A[..., k] up to the factor 1/(h*w) and a ReLU; the
identity table reports how far each library's Grad-CAM is from it (max abs difference relative
to the map's peak, and the lowest per-image correlation).

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.compat_matrix --out docs/compat.md --json /tmp/compat.json
    .venv/bin/python -m scripts.compat_matrix --quick             # one model per family
    .venv/bin/python -m scripts.compat_matrix --models resnet50,vgg16,nested --no-peers
    .venv/bin/python -m scripts.compat_matrix --out docs/compat.md --json /tmp/compat.json \
        --resume                                                   # after an interruption
    .venv/bin/python -m scripts.compat_matrix --help

With Keras 3.15 there are 53 rows (40 applications, 13 forms). On 2 CPU cores the full run
takes about 1.5 hours, the ConvNeXt family a third of it, and needs about 16 GB of memory
(ConvNeXtXLarge); `--quick` (one application per family) takes about 15 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import inspect
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import xai_keras
from scripts.common import corr
from xai_keras.errors import LayerError, XaiKerasError
from xai_keras.explainers import get_method
from xai_keras.io import write_json, write_text

OK = "✓"
N_IMAGES = 2
SEED = 0
NUM_CLASSES = 10
REASON_CHARS = 80
SIZES = (75, 96, 128, 160, 224, 331)  # tried in turn when a model rejects the requested size
TKV, XPLIQUE = "tf-keras-vis", "xplique"
PEERS = (TKV, XPLIQUE)
# One representative per family for --quick (the smallest model of the family).
REPRESENTATIVES = {
    "ResNet50",
    "ResNet50V2",
    "VGG16",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "DenseNet121",
    "InceptionV3",
    "InceptionResNetV2",
    "Xception",
    "NASNetMobile",
    "ConvNeXtTiny",
}


# -- rows: the models ---------------------------------------------------------------------------
@dataclass
class Case:
    """A built model, the images to explain and how to call each library on it.

    Attributes:
        model: the model.
        images: (N, H, W, C) images for the image input, preprocessed as the model expects
            (`preprocess_input` of its application module; [0, 1], or [0, 255] where the model
            rescales them itself).
        kwargs: extra `xai_keras.explain` arguments this model form needs.
        extra_inputs: {input name: (N, ...) array} for the non-image inputs (peers).
        output: the name of the explained output layer of a multi-output model.
        score: a user score function on the model outputs, (N,) scores.
        peers: the peers that can be run on this form.
    """

    model: keras.Model
    images: np.ndarray
    kwargs: dict[str, Any] = field(default_factory=dict)
    extra_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    output: str | None = None
    score: Callable[[Any], Any] | None = None
    peers: tuple[str, ...] = PEERS


@dataclass
class Row:
    """One row of the matrix: a name, a family and how to build its `Case` at a given size."""

    name: str
    family: str
    kind: str  # "application" or "form"
    build: Callable[[int], Case]
    size: int


def random_images(
    size: int, high: float = 1.0, dtype: str = "float32", channels: int = 3
) -> np.ndarray:
    """`N_IMAGES` images with pixels uniform in [0, high]."""
    rng = np.random.default_rng(SEED)
    return rng.uniform(0, high, (N_IMAGES, size, size, channels)).astype(dtype)


def _application_constructors() -> dict[str, Callable[..., keras.Model]]:
    """Every classifier constructor that `keras.applications` exposes, by name."""
    found = {}
    for name in sorted(dir(keras.applications)):
        obj = getattr(keras.applications, name)
        if name[:1].isupper() and callable(obj) and not inspect.isclass(obj):
            params = inspect.signature(obj).parameters
            if {"weights", "classes", "input_shape"} <= set(params):
                found[name] = obj
    return found


def build_application(constructor: Callable[..., keras.Model], size: int) -> keras.Model:
    """`constructor(weights=None, classes=10)` at `size`, or at the smallest larger size of
    `SIZES` that the model accepts."""
    error: Exception | None = None
    for side in (size, *[s for s in SIZES if s > size]):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return constructor(weights=None, classes=NUM_CLASSES, input_shape=(side, side, 3))
        except ValueError as err:  # e.g. "Input size must be at least 75x75"
            error = err
    raise RuntimeError(f"no input size up to {SIZES[-1]} accepted: {error}")


def application_rows(size: int, quick: bool = False) -> list[Row]:
    """A row per `keras.applications` classifier (one per family with `quick`)."""
    rows, families = [], set()
    constructors = _application_constructors()
    # Named representatives first, so a family without one is represented by its first model.
    order = sorted(constructors, key=lambda n: n not in REPRESENTATIVES)
    for name in order:
        constructor = constructors[name]
        family = constructor.__module__.rsplit(".", 1)[-1]
        if quick and family in families:
            continue
        families.add(family)

        def build(side: int, constructor: Callable = constructor) -> Case:
            model = build_application(constructor, side)
            images = random_images(int(model.inputs[0].shape[1]), high=255.0)
            preprocess = getattr(sys.modules[constructor.__module__], "preprocess_input", None)
            return Case(model, preprocess(images) if preprocess else images)

        rows.append(Row(name, family, "application", build, size))
    return sorted(rows, key=lambda r: r.name)


# -- rows: model forms --------------------------------------------------------------------------
def _conv_trunk(x: Any, widths: Sequence[int] = (16, 32), prefix: str = "") -> Any:
    """Conv-conv-pool blocks; the last block is not pooled."""
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{prefix}c{i}")(
            x
        )
        if i < len(widths) - 1:
            x = keras.layers.MaxPooling2D(name=f"{prefix}p{i}")(x)
    return x


def _gap_classifier(size: int, units: int, activation: str | None, name: str) -> keras.Model:
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(_conv_trunk(inputs))
    outputs = keras.layers.Dense(units, activation=activation, name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def form_small_cnn(size: int) -> Case:
    """A small functional CNN with a GAP + softmax dense head (the reference form)."""
    return Case(_gap_classifier(size, NUM_CLASSES, "softmax", "small_cnn"), random_images(size))


def form_sequential(size: int) -> Case:
    """A Sequential CNN with a Flatten head."""
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c0"),
            keras.layers.MaxPooling2D(4, name="p0"),
            keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
            keras.layers.Flatten(),
            keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="sequential_cnn",
    )
    return Case(model, random_images(size))


def form_nested(size: int) -> Case:
    """Input -> Rescaling -> RandomFlip -> MobileNetV2 (no top) -> GAP -> Dense(softmax)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.RandomFlip("horizontal")(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = keras.applications.MobileNetV2(
            include_top=False, weights=None, input_shape=(size, size, 3)
        )
    x = keras.layers.GlobalAveragePooling2D()(base(x))
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return Case(keras.Model(inputs, outputs, name="nested"), random_images(size, high=255.0))


def form_binary_sigmoid(size: int) -> Case:
    """One sigmoid unit: a binary classifier (two classes for explain)."""
    return Case(_gap_classifier(size, 1, "sigmoid", "binary_sigmoid"), random_images(size))


def form_multilabel_sigmoid(size: int) -> Case:
    """Five independent sigmoid units (multi-label)."""
    return Case(_gap_classifier(size, 5, "sigmoid", "multilabel"), random_images(size))


def form_regression(size: int) -> Case:
    """A linear Dense(1) output."""
    return Case(_gap_classifier(size, 1, None, "regression"), random_images(size))


def form_two_outputs(size: int) -> Case:
    """A box head first and the class head second; the class output is chosen by name."""
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(_conv_trunk(inputs))
    box = keras.layers.Dense(4, name="box")(x)
    cls = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="class")(x)
    model = keras.Model(inputs, [box, cls], name="two_outputs")
    return Case(model, random_images(size), kwargs={"output": "class"}, output="class")


def form_two_inputs(size: int) -> Case:
    """An image and an 8-vector of metadata, concatenated after pooling."""
    image = keras.Input((size, size, 3), name="image")
    meta = keras.Input((8,), name="meta")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(_conv_trunk(image))
    x = keras.layers.Concatenate()([x, keras.layers.Dense(8, activation="relu")(meta)])
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    model = keras.Model([image, meta], outputs, name="two_inputs")
    vector = np.random.default_rng(SEED).normal(size=(1, 8)).astype("float32")
    return Case(
        model,
        random_images(size),
        kwargs={"inputs": {"meta": vector}},
        extra_inputs={"meta": np.repeat(vector, N_IMAGES, axis=0)},
        peers=(TKV,),
    )


def _score_difference(outputs: Any) -> Any:
    """A user score: class 0 minus class 1 of the model outputs."""
    return outputs[:, 0] - outputs[:, 1]


def form_score_function(size: int) -> Case:
    """The small CNN explained through a user score function."""
    case = form_small_cnn(size)
    case.model.name = "score_function"
    case.kwargs, case.score = {"score": _score_difference}, _score_difference
    return case


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under the Keras dtype policy `name`, then restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def form_mixed_float16(size: int) -> Case:
    """The small CNN under mixed_float16, with its softmax in float32 (as Keras advises)."""
    with dtype_policy("mixed_float16"):
        inputs = keras.Input((size, size, 3))
        x = keras.layers.GlobalAveragePooling2D(name="gap")(_conv_trunk(inputs))
        x = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
        outputs = keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)
        model = keras.Model(inputs, outputs, name="mixed_float16")
    return Case(model, random_images(size))


def form_uint8(size: int) -> Case:
    """A uint8 image input with the rescaling inside the model."""
    inputs = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(_conv_trunk(x))
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="uint8_input")
    return Case(model, random_images(size, high=255.0, dtype="uint8"))


def _transformer_block(x: Any, dim: int, i: int) -> Any:
    y = keras.layers.LayerNormalization(name=f"ln{i}a")(x)
    y = keras.layers.MultiHeadAttention(2, dim // 2, name=f"mha{i}")(y, y)
    x = keras.layers.Add()([x, y])
    y = keras.layers.LayerNormalization(name=f"ln{i}b")(x)
    y = keras.layers.Dense(2 * dim, activation="gelu", name=f"mlp{i}a")(y)
    return keras.layers.Add()([x, keras.layers.Dense(dim, name=f"mlp{i}b")(y)])


def form_vit(size: int, patch: int = 8, dim: int = 32) -> Case:
    """Patch Conv2D -> tokens -> two attention blocks -> LayerNorm -> GAP1D -> Dense."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(dim, patch, strides=patch, name="patches")(inputs)
    x = keras.layers.Reshape(((size // patch) ** 2, dim), name="tokens")(x)
    for i in range(2):
        x = _transformer_block(x, dim, i)
    x = keras.layers.LayerNormalization(name="ln_final")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return Case(keras.Model(inputs, outputs, name="vit_tiny"), random_images(size))


class SubclassedCnn(keras.Model):
    """A subclassed CNN: conv1 -> pool -> conv2 -> GAP -> dense (softmax)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")
        self.pool = keras.layers.MaxPooling2D(name="pool")
        self.conv2 = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self.dense = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="dense")

    def call(self, x: Any) -> Any:
        return self.dense(self.gap(self.conv2(self.pool(self.conv1(x)))))


def form_subclassed(size: int) -> Case:
    """A subclassed keras.Model, explained at `layer="conv2"`."""
    model = SubclassedCnn(name="subclassed")
    images = random_images(size)
    model(images)  # build
    return Case(model, images, kwargs={"layer": "conv2"})


FORMS: dict[str, Callable[[int], Case]] = {
    "small_cnn": form_small_cnn,
    "sequential": form_sequential,
    "nested": form_nested,
    "binary_sigmoid": form_binary_sigmoid,
    "multilabel_sigmoid": form_multilabel_sigmoid,
    "two_outputs": form_two_outputs,
    "two_inputs": form_two_inputs,
    "regression": form_regression,
    "score_function": form_score_function,
    "mixed_float16": form_mixed_float16,
    "uint8_input": form_uint8,
    "vit_tiny": form_vit,
    "subclassed": form_subclassed,
}


def form_rows(size: int) -> list[Row]:
    return [Row(name, "form", "form", build, size) for name, build in FORMS.items()]


def select_rows(rows: list[Row], names: Sequence[str] | None) -> list[Row]:
    """The rows named in `names` (case-insensitive), in the order of `rows`."""
    if not names:
        return rows
    wanted = {n.strip().lower() for n in names if n.strip()}
    chosen = [r for r in rows if r.name.lower() in wanted]
    unknown = wanted - {r.name.lower() for r in chosen}
    if unknown:
        known = ", ".join(r.name for r in rows)
        raise SystemExit(f"Unknown model(s): {', '.join(sorted(unknown))}. Known: {known}.")
    return chosen


# -- cells --------------------------------------------------------------------------------------
@dataclass
class Cell:
    """The outcome of one (model, method) call.

    status: "ok", "n/a" (the method does not apply to this model, and says so clearly), or
    "fail". `text` is what the matrix shows; `clear` is False for exceptions that are not the
    library's own (a user would see a raw TensorFlow/Keras error).
    """

    status: str
    text: str
    clear: bool = True
    seconds: float = 0.0

    def shown(self) -> str:
        return OK if self.status == "ok" else self.text


def shorten(text: str, limit: int = REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reason(err: BaseException) -> str:
    """'Type: first line of the message', shortened."""
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    return shorten(f"{type(err).__name__}: {first}" if first else type(err).__name__)


def map_problem(maps: Any, shape: tuple[int, ...], unit_range: bool = True) -> str | None:
    """Why `maps` are not a usable explanation of `shape` (N, H, W), or None."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == len(shape) + 1 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    if maps.shape != shape:
        return f"maps have shape {maps.shape}, expected {shape}"
    if not np.isfinite(maps).all():
        return "maps hold NaN or inf"
    if unit_range and (maps.min() < 0 or maps.max() > 1):
        return f"maps outside [0, 1]: [{maps.min():.3g}, {maps.max():.3g}]"
    zero = [i for i in range(shape[0]) if not np.abs(maps[i]).max() > 0]
    if zero:
        return f"all-zero map for image(s) {zero}"
    flat = [i for i in range(shape[0]) if np.ptp(maps[i]) <= 1e-7 * np.abs(maps[i]).max()]
    return f"constant map for image(s) {flat}" if flat else None


def run_cell(fn: Callable[[], Any], shape: tuple[int, ...], unit_range: bool = True) -> tuple:
    """Call `fn` (returns maps); return `(Cell, result or None)`. Never raises."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn()
        maps = result.maps if hasattr(result, "maps") else result
        problem = map_problem(maps, shape, unit_range)
    except Exception as err:  # noqa: BLE001 - every failure is a result here
        clear = isinstance(err, XaiKerasError)
        return Cell("fail", reason(err), clear, time.perf_counter() - start), None
    seconds = time.perf_counter() - start
    if problem:
        return Cell("fail", shorten(problem), True, seconds), result
    return Cell("ok", OK, True, seconds), result


def method_options(name: str, size: int) -> dict[str, Any]:
    """Options that keep the slow methods cheap, limited to those the method accepts."""
    cheap = {
        "scorecam": {"max_channels": 64},
        "integrated_gradients": {"steps": 16},
        "smoothgrad": {"samples": 8},
        "occlusion": {"patch": max(2, size // 4), "stride": max(1, size // 8)},
        "rise": {"masks": 256},
        "lime": {"samples": 256},
        "kernelshap": {"samples": 256},
    }.get(name, {})
    accepted = set(get_method(name).options())
    return {k: v for k, v in cheap.items() if k in accepted}


def _not_applicable(name: str, err_text: str) -> bool:
    """CAM on a model without a GAP + Dense head is refused by design, with a clear error."""
    return name == "cam" and err_text.startswith(LayerError.__name__)


# -- ours ---------------------------------------------------------------------------------------
def run_ours(case: Case, methods: Sequence[str]) -> tuple[dict[str, Cell], dict]:
    """Explain `case` with each method; return the cells and the facts: the default layer and
    its grid, what was explained (`Explanation.score_kind`) and Grad-CAM's CAM identity."""
    shape = case.images.shape[:3]
    cells: dict[str, Cell] = {}
    facts: dict[str, Any] = {"layer": None, "grid": None, "score_kind": None, "identity": None}
    for name in methods:
        size = int(case.images.shape[1])
        options = {**case.kwargs, **method_options(name, size)}
        if not get_method(name).uses_layer:  # `layer=` is for the CAM family only
            options.pop("layer", None)

        def call(name: str = name, options: dict = options) -> Any:
            return xai_keras.explain(case.model, case.images, method=name, **options)

        cell, exp = run_cell(call, shape)
        if cell.status == "fail" and _not_applicable(name, cell.text):
            cell.status = "n/a"
        cells[name] = cell
        if exp is not None and facts["score_kind"] is None:
            facts["score_kind"] = exp.score_kind
        if exp is not None and exp.layer and facts["layer"] is None:
            facts["layer"], facts["grid"] = exp.layer, tuple(exp.raw.shape[1:3])
        if name == "gradcam" and exp is not None and cell.status == "ok":
            facts["identity"] = ours_identity(case, exp)
    return cells, facts



def identity_cam(case: Case, layer: str, targets: np.ndarray) -> np.ndarray | None:
    """relu(sum_k w[k, t] A[..., k]) at the layer's resolution for a GAP + Dense head, or None
    when `layer` does not feed one. (A single sigmoid unit is two classes: target 0 is its
    negative logit; a single linear unit is one.)"""
    from xai_keras.explainers.cam import gap_dense_head
    from xai_keras.explainers.graph import LayerTaps

    if case.score is not None or case.extra_inputs:
        return None
    dense = gap_dense_head(case.model, layer)
    if dense is None:
        return None
    activation = LayerTaps(case.model, [layer])(case.images)[0][0]
    a = np.asarray(keras.ops.convert_to_numpy(activation), np.float64)
    kernel = np.asarray(keras.ops.convert_to_numpy(dense.kernel), np.float64)
    if kernel.shape[1] == 1:
        sigmoid = getattr(dense.activation, "__name__", "") == "sigmoid"
        sign = np.where((targets == 0) & sigmoid, -1.0, 1.0)
        columns = kernel[:, [0] * len(targets)] * sign
    else:
        columns = kernel[:, targets]
    return np.maximum(np.einsum("nhwk,kn->nhw", a, columns), 0.0)


def compare(maps: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max abs difference relative to the reference's peak, and the lowest per-image
    correlation."""
    maps = np.asarray(maps, np.float64).reshape(reference.shape)
    peak = max(float(np.abs(reference).max()), 1e-12)
    return {
        "max_rel_diff": float(np.abs(maps - reference).max() / peak),
        "min_corr": min(corr(m, r) for m, r in zip(maps, reference)),
    }


def ours_identity(case: Case, exp: Any) -> dict | None:
    """Our Grad-CAM raw map x h*w against the CAM identity, or None where it does not apply."""
    try:
        reference = identity_cam(case, exp.layer, np.asarray(exp.targets))
    except Exception as err:  # noqa: BLE001
        return {"error": reason(err)}
    if reference is None:
        return None
    h, w = exp.raw.shape[1:3]
    return {
        "layer": exp.layer,
        "targets": exp.targets.tolist(),
        **compare(exp.raw * h * w, reference),
    }


# -- peers --------------------------------------------------------------------------------------
def peer_version(peer: str) -> str | None:
    """The installed version of a peer that can be imported, or None."""
    module = {TKV: "tf_keras_vis.gradcam", XPLIQUE: "xplique.attributions"}[peer]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            __import__(module)
        return version(peer)
    except (ImportError, PackageNotFoundError):
        return None


def _explained_outputs(case: Case) -> np.ndarray:
    outputs = case.model(_seed_inputs(case), training=False)
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[case.model.output_names.index(case.output)]
    return keras.ops.convert_to_numpy(outputs)


def top_targets(case: Case) -> np.ndarray:
    """The top class of each image on the explained output (0 for single-unit outputs)."""
    return np.argmax(_explained_outputs(case), axis=-1).astype(np.int64)


def output_units(case: Case) -> int:
    """The number of units of the explained output."""
    return int(_explained_outputs(case).shape[-1])


def _seed_inputs(case: Case) -> Any:
    """The model inputs, in order: the images, and `extra_inputs` by name."""
    if not case.extra_inputs:
        return case.images
    return [case.extra_inputs.get(t.name.split(":")[0], case.images) for t in case.model.inputs]


@contextlib.contextmanager
def linear_outputs(model: keras.Model) -> Iterator[None]:
    """Make the output layers' activations linear (as xplique's docs ask), then restore them."""
    saved = []
    for layer in _output_layers(model):
        if getattr(layer, "activation", None) is not None:
            saved.append((layer, layer.activation))
            layer.activation = keras.activations.linear
    try:
        yield
    finally:
        for layer, activation in saved:
            layer.activation = activation


def _output_layers(model: keras.Model) -> list:
    if isinstance(model, keras.Sequential) or not hasattr(model, "output_names"):
        return [model.layers[-1]]
    return [model.get_layer(name) for name in model.output_names]


def _layer_facts(layer: Any) -> tuple[str, tuple, int]:
    """(name, grid (h, w), channels) of a layer's output."""
    shape = tuple(layer.output.shape)
    return layer.name, tuple(shape[1:3]), int(shape[-1])


class TfKerasVisRunner:
    """tf-keras-vis 0.8.x on one case: `ReplaceToLinear` clone, `CategoricalScore`."""

    methods = {
        "gradcam": "Gradcam",
        "gradcam++": "GradcamPlusPlus",
        "layercam": "Layercam",
        "scorecam": "Scorecam",
        "saliency": "Saliency",
        "smoothgrad": "Saliency",
    }

    def __init__(self, case: Case, targets: np.ndarray):
        self.case, self.targets = case, targets
        self._linear: keras.Model | None = None

    def linear(self) -> keras.Model:
        """The model with linear outputs, cloned once (as `model_modifier=ReplaceToLinear()`)."""
        if self._linear is None:
            from tf_keras_vis.gradcam import Gradcam
            from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

            self._linear = Gradcam(self.case.model, model_modifier=ReplaceToLinear()).model
        return self._linear

    def score(self) -> Any:
        from tf_keras_vis.utils.scores import CategoricalScore, InactiveScore

        if self.case.score is not None:
            return self.case.score
        if self.case.output is None:
            return CategoricalScore(self.targets.tolist())
        return [
            CategoricalScore(self.targets.tolist()) if name == self.case.output else InactiveScore()
            for name in self.case.model.output_names
        ]

    def _image_map(self, result: Any) -> Any:
        if isinstance(result, list):  # one map per model input
            index = next(i for i, r in enumerate(result) if np.ndim(r) == 3)
            return result[index]
        return result

    def explain(self, method: str, **kwargs: Any) -> Any:
        import tf_keras_vis.gradcam
        import tf_keras_vis.layercam
        import tf_keras_vis.saliency
        import tf_keras_vis.scorecam

        modules = (tf_keras_vis.gradcam, tf_keras_vis.layercam, tf_keras_vis.saliency)
        if method == "scorecam":  # on the probabilities, as tf-keras-vis advises
            tool = tf_keras_vis.scorecam.Scorecam(self.case.model)
            found = self.default_layer()
            channels = found[2] if found else 64
            kwargs = {"max_N": min(64, channels), **kwargs}
        else:
            cls_name = self.methods[method]
            cls = next(getattr(m, cls_name) for m in modules if hasattr(m, cls_name))
            tool = cls(self.linear(), clone=False)
        if method == "smoothgrad":
            kwargs = {"smooth_samples": 8, **kwargs}
        return self._image_map(tool(self.score(), _seed_inputs(self.case), **kwargs))

    def default_layer(self) -> tuple[str, tuple, int] | None:
        """The layer tf-keras-vis' CAMs pick by default (the last `Conv` layer): name, grid,
        channels."""
        from tf_keras_vis.utils import find_layer
        from tf_keras_vis.utils.model_modifiers import Conv

        model = self.case.model
        layer = find_layer(model, lambda lay: isinstance(lay, Conv), offset=model.layers[-1])
        return _layer_facts(layer) if layer is not None else None

    def gradcam_raw(self, layer: str) -> np.ndarray:
        """Grad-CAM at `layer`, not resized or normalised."""
        from tf_keras_vis.gradcam import Gradcam

        tool = Gradcam(self.linear(), clone=False)
        return np.asarray(
            tool(
                self.score(),
                _seed_inputs(self.case),
                penultimate_layer=layer.split("/")[-1],
                seek_penultimate_conv_layer=False,
                expand_cam=False,
                normalize_cam=False,
            )
        )


class XpliqueRunner:
    """xplique 2.x on one case: white-box explainers on the model with linear outputs."""

    methods = {
        "gradcam": "GradCAM",
        "gradcam++": "GradCAMPP",
        "saliency": "Saliency",
        "guided_backprop": "GuidedBackprop",
        "smoothgrad": "SmoothGrad",
        "integrated_gradients": "IntegratedGradients",
        "occlusion": "Occlusion",
    }

    def __init__(self, case: Case, targets: np.ndarray):
        self.case, self.targets = case, targets
        model = case.model
        if case.output is not None:  # xplique explains one output: give it that one
            model = keras.Model(model.inputs, model.get_layer(case.output).output)
        self.model = model
        self._default: tuple[str, tuple, int] | None = None

    def _targets(self) -> np.ndarray:
        classes = int(self.model.outputs[0].shape[-1])
        return np.eye(classes, dtype=np.float32)[self.targets]

    def _operator(self) -> Any:
        if self.case.score is None:
            return None
        score = self.case.score
        return lambda model, inputs, targets: score(model(inputs))

    def explain(self, method: str, **kwargs: Any) -> Any:
        import xplique.attributions as xa

        size = int(self.case.images.shape[1])
        cheap = {
            "smoothgrad": {"nb_samples": 8},
            "integrated_gradients": {"steps": 16},
            "occlusion": {"patch_size": max(2, size // 4), "patch_stride": max(1, size // 8)},
        }.get(method, {})
        with linear_outputs(self.model):
            tool = getattr(xa, self.methods[method])(
                self.model, operator=self._operator(), **cheap, **kwargs
            )
            if hasattr(tool, "conv_layer") and "conv_layer" not in kwargs:
                self._default = _layer_facts(tool.conv_layer)
            return np.asarray(tool.explain(self.case.images, self._targets()))

    def default_layer(self) -> tuple[str, tuple, int] | None:
        """The layer xplique's Grad-CAM picks: the last top-level layer with `filters`."""
        if self._default is None:
            layer = next((lay for lay in self.model.layers[::-1] if hasattr(lay, "filters")), None)
            if layer is not None:
                self._default = _layer_facts(layer)
        return self._default

    def gradcam_raw(self, layer: str) -> np.ndarray:
        """Grad-CAM at `layer`, as xplique returns it (bicubic-resized to the input)."""
        return self.explain("gradcam", conv_layer=layer.split("/")[-1])[..., 0]


RUNNERS = {TKV: TfKerasVisRunner, XPLIQUE: XpliqueRunner}


def run_peer(peer: str, case: Case, methods: Sequence[str]) -> dict:
    """Cells of one peer on `case`, called with its own default layer."""
    runner = RUNNERS[peer](case, top_targets(case))
    shape = case.images.shape[:3]
    cells: dict[str, Cell] = {}
    for name in [m for m in methods if m in runner.methods]:
        cell, _ = run_cell(lambda name=name: runner.explain(name), shape, unit_range=False)
        cell.clear = True  # not our errors: only ok / not ok counts for peers
        if get_method(name).uses_layer:  # a CAM: the peer's default layer may be 1x1
            flag_one_by_one(cell, runner)
        cells[name] = cell
    return {"cells": cells, "layer": _safe(runner.default_layer), "runner": runner}


def flag_one_by_one(cell: Cell, runner: Any) -> None:
    """Replace the outcome with '1x1 layer (name)' when the peer's default layer is 1x1."""
    found = _safe(runner.default_layer)
    if isinstance(found, tuple) and found[1] == (1, 1):
        cell.status, cell.text = "fail", f"1x1 layer ({found[0]})"


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return None


def peer_identity(
    runner: Any, layer: str, targets: np.ndarray, at: str | None = None
) -> dict | None:
    """A peer's Grad-CAM at layer `at` (default: `layer`, ours) against the CAM identity at
    `layer`, for xai_keras' `targets`. The reference is resized to the peer's map where their
    resolutions differ; at another layer only the correlation is kept."""
    at, case = at or layer, runner.case
    units = output_units(case)
    if units == 1:  # peers explain the unit itself: xai_keras' target 1
        targets = np.ones_like(targets)
    try:
        reference = identity_cam(case, layer, targets)
        if reference is None:
            return None
        runner.targets = np.minimum(targets, units - 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            maps = runner.gradcam_raw(at)
    except Exception as err:  # noqa: BLE001
        return {"error": reason(err)}
    grid = reference.shape[1] * reference.shape[2]  # Grad-CAM = relu(CAM) / (h * w)
    if maps.shape[1:3] != reference.shape[1:3]:
        method = "bicubic" if isinstance(runner, XpliqueRunner) else "bilinear"
        reference = tf.image.resize(reference[..., None], maps.shape[1:3], method=method)
        reference = reference.numpy()[..., 0]
    found = {"layer": at, **compare(maps * grid, reference)}
    if at != layer:
        found["max_rel_diff"] = None
    return found


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise, so the process would
    stay as large as its largest model for the rest of the run)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def release_peer_caches() -> None:
    """xplique 2.0 keeps every model it has explained in a class-level cache
    (`BlackBoxExplainer._cache_models`), so nothing it saw is ever freed; empty it."""
    base = sys.modules.get("xplique.attributions.base")
    cache = getattr(getattr(base, "BlackBoxExplainer", None), "_cache_models", None)
    if isinstance(cache, dict):
        cache.clear()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No Keras progress bars (tf-keras-vis' Score-CAM calls `predict`) or retracing warnings
    (xplique builds its tf.functions per explainer) inside; both settings restored after."""
    interactive, level = keras.config.is_interactive_logging_enabled(), tf.get_logger().level
    keras.config.disable_interactive_logging()
    tf.get_logger().setLevel("ERROR")
    try:
        yield
    finally:
        tf.get_logger().setLevel(level)
        if interactive:
            keras.config.enable_interactive_logging()


# -- one row ------------------------------------------------------------------------------------
def run_row(row: Row, methods: Sequence[str], peers: Sequence[str]) -> dict:
    """Build the row's model, explain it with us and the peers, and free it."""
    with quiet():
        return _run_row(row, methods, peers)


def _run_row(row: Row, methods: Sequence[str], peers: Sequence[str]) -> dict:
    start = time.perf_counter()
    keras.utils.set_random_seed(SEED)
    result: dict[str, Any] = {"name": row.name, "family": row.family, "kind": row.kind}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case = row.build(row.size)
    except Exception as err:  # noqa: BLE001
        result["build_error"] = reason(err)
        result["seconds"] = time.perf_counter() - start
        return result
    result["size"] = int(case.images.shape[1])
    result["params"] = int(case.model.count_params())
    cells, facts = run_ours(case, methods)
    result["ours"] = {k: asdict(v) for k, v in cells.items()}
    result.update(facts)
    result["peer_identity"] = {}
    for peer in peers:
        if peer not in case.peers:
            continue
        out = run_peer(peer, case, methods)
        result[peer] = {
            "cells": {k: asdict(v) for k, v in out["cells"].items()},
            "layer": out["layer"],
        }
        identity = facts.get("identity")
        if identity and "targets" in identity:
            targets, layer = np.asarray(identity["targets"]), facts["layer"]
            own = out["layer"][0] if out["layer"] else None
            runner = out["runner"]
            result["peer_identity"][peer] = {
                "ours": peer_identity(runner, layer, targets),
                "own": peer_identity(runner, layer, targets, at=own) if own else None,
            }
        del out
    del case
    release_peer_caches()
    keras.backend.clear_session()
    gc.collect()
    trim_heap()
    result["seconds"] = time.perf_counter() - start
    return result


# -- report -------------------------------------------------------------------------------------
def passes(cells: dict[str, dict]) -> bool:
    return bool(cells) and all(c["status"] in ("ok", "n/a") for c in cells.values())


def summarize(results: list[dict], peers: Sequence[str]) -> list[tuple[str, str]]:
    """(library, 'passing / run') pairs: rows whose every cell is ✓ (or a clear n/a)."""
    built = [r for r in results if "ours" in r]
    lines = [("xai_keras", f"{sum(passes(r['ours']) for r in built)} / {len(results)}")]
    for peer in peers:
        ran = [r for r in built if peer in r]
        lines.append((peer, f"{sum(passes(r[peer]['cells']) for r in ran)} / {len(ran)}"))
    unclear = sum(
        1 for r in built for c in r["ours"].values() if c["status"] == "fail" and not c["clear"]
    )
    lines.append(("xai_keras cells failing with a non-xai_keras error", str(unclear)))
    return lines


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_escape(str(c)) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell_text(cell: dict) -> str:
    if cell["status"] == "ok":
        return OK
    mark = "n/a: " if cell["status"] == "n/a" else ("" if cell["clear"] else "(!) ")
    return mark + cell["text"]


def _layer_text(layer: Any, grid: Any) -> str:
    if not layer:
        return "—"
    return f"{layer} ({grid[0]}x{grid[1]})" if grid else str(layer)


def matrix(results: list[dict], key: str, methods: Sequence[str]) -> str:
    """Rows x methods for `key` ("ours" or a peer), with the layer column and a ✓ count."""
    rows = []
    for r in results:
        if "build_error" in r:
            rows.append([r["name"], f"size {r.get('size', '?')}: {r['build_error']}"])
            continue
        if key == "ours":
            cells, layer = r["ours"], _layer_text(r.get("layer"), r.get("grid"))
            layer += f"; {r['score_kind']}" if r.get("score_kind") else ""
        elif key in r:
            cells, found = r[key]["cells"], r[key]["layer"]
            layer = _layer_text(*found[:2]) if found else "—"
        else:
            continue
        row = [f"{r['name']} ({r['size']}px)", layer]
        rows.append(row + [_cell_text(cells[m]) if m in cells else "—" for m in methods])
    width = 2 + len(methods)
    rows = [row + [""] * (width - len(row)) for row in rows]
    counts = ["**✓ count**", ""] + [str(sum(1 for r in results if _ok(r, key, m))) for m in methods]
    return table(["model", "layer", *methods], [*rows, counts])


def _ok(result: dict, key: str, method: str) -> bool:
    cells = result.get("ours") if key == "ours" else result.get(key, {}).get("cells")
    return bool(cells) and cells.get(method, {}).get("status") == "ok"


def _identity_text(found: dict | None, with_layer: bool = False) -> str:
    if found is None:
        return "—"
    if "error" in found:
        return found["error"]
    diff = found["max_rel_diff"]
    text = ("—" if diff is None else f"{diff:.1e}") + f" / {found['min_corr']:.3f}"
    return text + (f" ({found['layer']})" if with_layer else "")


def identity_table(results: list[dict], peers: Sequence[str]) -> str:
    rows = []
    for r in results:
        if not r.get("identity"):
            continue
        row = [r["name"], r["layer"], _identity_text(r["identity"])]
        for peer in peers:
            found = r.get("peer_identity", {}).get(peer) or {}
            row += [_identity_text(found.get("ours")), _identity_text(found.get("own"), True)]
        rows.append(row)
    header = ["model", "layer", "xai_keras"]
    for peer in peers:
        header += [f"{peer}, same layer", f"{peer}, own default layer"]
    return table(header, rows)


def versions(peers: Sequence[str]) -> dict[str, str]:
    found = {
        "xai_keras": xai_keras.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
    }
    for peer in PEERS:
        found[peer] = (peer_version(peer) or "not installed") if peer in peers else "skipped"
    return found


def render(results: list[dict], meta: dict) -> str:
    """The whole Markdown report."""
    methods, peers = meta["methods"], meta["peers"]
    env = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    parts = [
        "# Compatibility matrix",
        f"Generated by `{meta['command']}` in {meta['seconds'] / 60:.1f} min ({env}).",
        f"Each model is built with `weights=None` and {NUM_CLASSES} classes at the size shown "
        f"(the smallest accepted at or above the requested one) and explained on {N_IMAGES} "
        "random images. ✓: finite (N, H, W) maps (in [0, 1] for xai_keras), neither all zero "
        "nor constant. Otherwise the exception type and the first line of its message; "
        "`(!)` marks an error that is not an xai_keras error (a user would see a raw "
        "TensorFlow/Keras error), `n/a` a method that refuses the model by design. "
        "Cheap settings: Score-CAM 64 channels, Integrated Gradients 16 steps, SmoothGrad 8 "
        "samples, occlusion patch 1/4 and stride 1/8 of the side. An all-zero map counts as "
        "a failure, although with random weights it can be the exact answer (no position has "
        "positive evidence for the class: Grad-CAM's ReLU leaves nothing); xai_keras then "
        "returns zeros with a RuntimeWarning that says so.",
        "## Summary",
        table(["library", "rows passing fully"], summarize(results, peers)),
        "## xai_keras",
        "`layer`: the layer `explain` chose by default, its grid, and what was explained "
        "(`Explanation.score_kind`: `logits` when a final softmax/sigmoid was skipped).",
        matrix(results, "ours", methods),
    ]
    for peer in peers:
        if meta["versions"].get(peer) in ("not installed", "skipped"):
            parts += [f"## {peer}", f"{peer} is {meta['versions'][peer]}: no results."]
            continue
        offered = [m for m in methods if m in RUNNERS[peer].methods]
        parts += [
            f"## {peer}",
            "Called with its own default layer (`layer`); "
            "`1x1 layer`: that layer's map is 1x1, so the CAM is constant.",
            matrix(results, peer, offered),
        ]
    parts += [
        "## Grad-CAM vs the CAM identity",
        "On rows whose layer feeds GlobalAveragePooling2D -> Dense, Grad-CAM x h*w must equal "
        "relu(sum_k w[k, c] A[..., k]). Cells: max abs difference relative to the map's peak / "
        'lowest per-image correlation, for xai_keras\' targets. "same layer": the peer '
        'explains xai_keras\' layer; "own default layer": the layer the peer picks itself '
        "(what its users get; the reference is resized to that layer's grid, so only the "
        "correlation is shown). xplique's maps come resized to the input (bicubic); the "
        "reference is resized alike.",
        identity_table(results, peers),
    ]
    return "\n\n".join(parts) + "\n"


def _progress(result: dict, peers: Sequence[str]) -> str:
    if "build_error" in result:
        return f"{result['name']}: build failed: {result['build_error']}"
    parts = [f"{result['name']} ({result['size']}px)"]
    for key in ("ours", *peers):
        cells = result["ours"] if key == "ours" else result.get(key, {}).get("cells")
        if cells:
            ok = sum(c["status"] in ("ok", "n/a") for c in cells.values())
            parts.append(f"{'xai_keras' if key == 'ours' else key} {ok}/{len(cells)}")
    return " | ".join(parts) + f" | {result['seconds']:.0f}s"


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/compat.md", help="Markdown file to write")
    parser.add_argument(
        "--json", default=None, help="also save the raw results here (after every model)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="reuse the models already in the --json file"
    )
    parser.add_argument("--models", default=None, help="comma-separated row names to run")
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    parser.add_argument("--quick", action="store_true", help="one application per family")
    parser.add_argument("--size", type=int, default=64, help="input side (default 64)")
    parser.add_argument("--no-peers", action="store_true", help="skip tf-keras-vis and xplique")
    parser.add_argument("--no-forms", action="store_true", help="only keras.applications rows")
    return parser.parse_args(argv)


def build_rows(args: argparse.Namespace) -> list[Row]:
    rows = application_rows(args.size, quick=args.quick)
    if not args.no_forms:
        rows += form_rows(args.size)
    return select_rows(rows, args.models.split(",") if args.models else None)


def run(
    rows: Sequence[Row],
    methods: Sequence[str],
    peers: Sequence[str],
    done: dict[str, dict] | None = None,
    save: Callable[[list[dict]], Any] | None = None,
) -> list[dict]:
    """Run every row (a progress bar and a line per model on stderr). Rows in `done` (by name)
    are taken from there; `save(results so far)` is called after each row."""
    from tqdm import tqdm

    results = []
    bar = tqdm(rows, unit="model", file=sys.stderr)
    for row in bar:
        bar.set_postfix_str(row.name)
        if done and row.name in done:
            results.append(done[row.name])
            continue
        results.append(run_row(row, methods, peers))
        tqdm.write(_progress(results[-1], peers), file=sys.stderr)
        if save is not None:
            save(results)
    return results


def load_done(path: str | None, methods: Sequence[str], peers: Sequence[str]) -> dict:
    """Rows of an earlier run's JSON that ran the same methods and peers, by name."""
    if not path or not Path(path).is_file():
        return {}
    saved = json.loads(Path(path).read_text())
    meta = saved.get("meta", {})
    if meta.get("methods") != list(methods) or meta.get("ran_peers") != list(peers):
        print(f"note: {path} ran other methods or peers; not resuming.", file=sys.stderr)
        return {}
    return {r["name"]: r for r in saved.get("results", [])}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    methods = args.methods.split(",") if args.methods else xai_keras.methods()
    wanted = [] if args.no_peers else list(PEERS)
    meta = {"versions": versions(wanted), "methods": methods}
    peers = [p for p in wanted if meta["versions"][p] not in ("not installed", "skipped")]
    for peer in set(wanted) - set(peers):
        print(f"note: {peer} is not importable; its columns are skipped.", file=sys.stderr)
    meta["peers"], meta["ran_peers"] = wanted, peers
    meta["command"] = "python -m scripts.compat_matrix " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    done = load_done(args.json, methods, peers) if args.resume else {}
    start = time.perf_counter() - sum(r.get("seconds", 0.0) for r in done.values())

    def save(results: list[dict]) -> None:
        meta["seconds"] = time.perf_counter() - start
        write_json(args.json, {"meta": meta, "results": results})

    results = run(build_rows(args), methods, peers, done, save if args.json else None)
    meta["seconds"] = time.perf_counter() - start
    write_text(args.out, render(results, meta))
    if args.json:
        save(results)
    print(table(["library", "rows passing fully"], summarize(results, peers)))
    print(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
