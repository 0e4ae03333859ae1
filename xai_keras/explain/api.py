"""`explain(model, images)`: one verb for every registered method.

It validates the inputs once, runs the method over fixed-size batches (the last one padded, so
each compiled kernel traces once per input shape), resizes the raw maps of the whole batch to
the input resolution with `tf.image.resize`, and normalises them to [0, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.explain.base import Method, get_method
from xai_keras.explain.cam import SharedCam, shares_pass
from xai_keras.explain.explanation import Explanation

__all__ = ["explain", "check_images", "check_targets", "finish_maps"]


def check_images(images: Any, model: keras.Model, name: str = "images") -> tuple[tf.Tensor, bool]:
    """Validate images against the model's input; return a float32 (N, H, W, C) tensor and
    whether a single image (H, W, C) was given."""
    try:
        x = tf.convert_to_tensor(images)
    except (ValueError, TypeError) as err:
        raise InputError(f"`{name}` must be an array or tensor of images: {err}") from None
    if not (x.dtype.is_floating or x.dtype.is_integer):
        raise InputError(f"`{name}` must hold numbers. Received dtype {x.dtype.name}.")
    x = tf.cast(x, tf.float32)
    expected = tuple(model.inputs[0].shape[1:])
    single = x.shape.rank == len(expected)
    if single:
        x = x[None]
    if x.shape.rank != len(expected) + 1:
        raise InputError(
            f"`{name}` must be one image of shape {expected} or a batch (N, *{expected}) "
            f"for model {model.name!r}. Received shape {tuple(x.shape)}."
        )
    for got, want in zip(x.shape[1:], expected):
        if want is not None and got != want:
            raise InputError(
                f"`{name}` have shape {tuple(x.shape[1:])} but model {model.name!r} expects "
                f"{expected} (H, W, C). Resize the images (e.g. tf.image.resize) or check the "
                "channels (grayscale vs RGB)."
            )
    if x.shape[0] == 0:
        raise InputError(f"`{name}` is empty: pass at least one image.")
    if not bool(tf.reduce_all(tf.math.is_finite(x))):
        raise InputError(f"`{name}` contain NaN or infinite values.")
    return x, single


def check_targets(targets: Any, n: int, num_classes: int) -> np.ndarray:
    """Targets as (n,) int32; -1 means "the top class". Accepts None, an int or a sequence."""
    if targets is None:
        return np.full(n, -1, np.int32)
    t = np.asarray(targets)
    if not np.issubdtype(t.dtype, np.integer):
        raise InputError(f"`targets` must be class indices (ints). Received: {targets!r}.")
    if t.ndim == 0:
        t = np.full(n, int(t))
    if t.shape != (n,):
        raise InputError(
            f"`targets` must be one int or {n} ints (one per image). Received shape {t.shape}."
        )
    bad = t[(t < 0) | (t >= num_classes)]
    if bad.size:
        raise InputError(
            f"`targets` must be in [0, {num_classes - 1}] for a model with {num_classes} "
            f"outputs. Received: {bad.tolist()}."
        )
    return t.astype(np.int32)


def finish_maps(raw: tf.Tensor, size: Any, signed: bool) -> tf.Tensor:
    """Raw maps (B, h, w) -> (B, H, W) at input `size`: bilinear resize, then each map scaled
    to [0, 1] by its peak; all-zero or non-finite maps become zeros. Pure TensorFlow, so
    `explain_dataset` compiles it into its distributed step."""
    maps = tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
    maps = tf.abs(maps) if signed else tf.nn.relu(maps)
    maps = tf.where(tf.math.is_finite(maps), maps, tf.zeros_like(maps))
    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return maps / tf.where(peak > 0, peak, tf.ones_like(peak))


def _run(method: Method, x: tf.Tensor, targets: np.ndarray, batch_size: int) -> dict:
    """Run `method` over fixed-size batches (last one padded); gather results in order."""
    n = int(x.shape[0])
    size = min(batch_size, n)
    parts: dict[str, list] = {"raw": [], "logits": [], "targets": [], "attributions": []}
    for start in range(0, n, size):
        xb, tb = x[start : start + size], targets[start : start + size]
        real = int(xb.shape[0])
        if real < size:  # pad so the compiled kernels see one shape
            xb = tf.concat([xb, tf.repeat(xb[-1:], size - real, axis=0)], axis=0)
            tb = np.concatenate([tb, np.repeat(tb[-1:], size - real)])
        out = method.attribute(xb, tf.constant(tb, tf.int32))
        parts["raw"].append(out.raw[:real])
        parts["logits"].append(out.logits[:real])
        parts["targets"].append(out.targets[:real])
        if out.attributions is not None:
            parts["attributions"].append(out.attributions[:real].numpy())
    result = {k: tf.concat(v, 0) for k, v in parts.items() if v and k != "attributions"}
    found = parts["attributions"]
    result["attributions"] = np.concatenate(found) if found else None
    return result


def explain(
    model: keras.Model,
    images: Any,
    method: str | Sequence[str] = "gradcam",
    targets: int | Sequence[int] | None = None,
    layer: str | keras.layers.Layer | None = None,
    batch_size: int = 32,
    class_names: Sequence[str] | None = None,
    **options: Any,
) -> Explanation | list[Explanation]:
    """Explain a Keras image classifier's decisions.

    Args:
        model: a Functional or Sequential Keras model (nested models are fine). A final
            softmax/sigmoid is skipped so methods explain the logits; the model is not changed.
        images: one image (H, W, C) or a batch (N, H, W, C), numpy or tensor, uint8 or float,
            preprocessed the way the model expects.
        method: a name from `xai_keras.methods()`, or a list of names: then a list of
            explanations comes back, and the gradient CAMs of one layer (gradcam, gradcam++,
            xgradcam, layercam, cam, eigencam) share one forward and backward pass.
        targets: class index(es) to explain; None explains each image's top class.
        layer: for CAM methods, the layer (name, "nested/path" or object); default: the last
            layer with a spatial map larger than 1x1.
        batch_size: images per compiled batch (bounds memory); also the chunk size of masked
            forward passes in Score-CAM and occlusion.
        class_names: names used in titles and plots.
        **options: method options, e.g. `steps=` for Integrated Gradients (see each method).

    Returns:
        An `Explanation` with `maps` (N, H, W) in [0, 1], `raw`, `targets`, `scores`, ...
        (a list of them, in order, when `method` is a list).

    Raises:
        InputError: bad images, targets, method name or options.
        LayerError: a layer that is not in the model or has no spatial output.

    Example:
        >>> exp = explain(model, image)                      # Grad-CAM of the top class
        >>> exp = explain(model, batch, method="gradcam++", targets=3)
        >>> exp.save("gradcam.png")
    """
    if not isinstance(model, keras.Model):
        raise InputError(f"`model` must be a keras.Model. Received: {type(model).__name__}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"`batch_size` must be a positive int. Received: {batch_size!r}.")
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise InputError("`method` must name at least one method; see xai_keras.methods().")
    instances = [get_method(name).create(model, layer, **options) for name in names]
    for instance in instances:
        instance.batch_size = batch_size
    x, single = check_images(images, model)
    num_classes = int(model.outputs[0].shape[-1])
    tgt = check_targets(targets, int(x.shape[0]), num_classes)
    results: dict[int, dict] = {}
    shared = [i for i, m in enumerate(instances) if shares_pass(m)] if len(names) > 1 else []
    if len(shared) > 1:  # the gradient CAMs of one layer: one forward and backward pass
        run = _run(SharedCam([instances[i] for i in shared]), x, tgt, batch_size)
        for m, i in enumerate(shared):
            results[i] = dict(run, raw=run["raw"][:, m])
    for i, instance in enumerate(instances):
        if i not in results:
            results[i] = _run(instance, x, tgt, batch_size)
    built = [
        _explanation(instances[i], results[i], x, single, class_names)
        for i in range(len(instances))
    ]
    return built[0] if isinstance(method, str) else built


def _explanation(
    instance: Method,
    result: dict,
    x: tf.Tensor,
    single: bool,
    class_names: Sequence[str] | None,
) -> Explanation:
    """Resize and normalise one method's raw maps and wrap them with scores and classes."""
    cls = type(instance)
    raw = result["raw"]
    maps = finish_maps(raw, x.shape[1:3], cls.signed)
    empty = np.flatnonzero(tf.reduce_max(maps, axis=(1, 2)).numpy() <= 0).tolist()
    if empty:
        warnings.warn(
            f"{cls.name}: the map is all zero for image(s) {empty[:10]} (the gradients or "
            "scores were constant or non-finite); those maps are returned as zeros.",
            RuntimeWarning,
            stacklevel=3,
        )
    logits = result["logits"]
    probs = instance.runner.squash(logits)
    targets_out = result["targets"].numpy()
    return Explanation(
        images=x.numpy(),
        maps=maps.numpy().astype(np.float32),
        raw=np.nan_to_num(raw.numpy()).astype(np.float32),
        targets=targets_out,
        scores=np.take_along_axis(probs.numpy(), targets_out[:, None], axis=1)[:, 0],
        logits=logits.numpy(),
        method=cls.name,
        layer=instance.layer_path,
        score_kind=instance.runner.score_kind,
        class_names=list(class_names) if class_names is not None else None,
        attributions=result["attributions"],
        single=single,
    )
