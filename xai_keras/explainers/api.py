"""`explain(model, images)`: one verb for every registered method.

A thin front end on the `Session` engine: the session checks the images and targets and runs
the method over its padded batches; this module resizes the raw maps of the whole batch to the
input resolution with `tf.image.resize`, normalises them to [0, 1] and wraps them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError, NumericsError
from xai_keras.explainers.base import Method, MethodChoice, default_method, get_method
from xai_keras.explainers.cam import SharedCam, shares_pass
from xai_keras.explainers.explanation import Explanation
from xai_keras.explainers.layer_search import choose_layer
from xai_keras.explainers.layers import LayerChoice, feeds_global_pooling
from xai_keras.explainers.session import Session, check_images, check_targets, model_form

__all__ = ["explain", "check_images", "check_targets", "finish_maps"]


def finish_maps(raw: tf.Tensor, size: Any, signed: bool) -> tf.Tensor:
    """Raw maps (B, h, w) -> (B, H, W) at input `size`: bilinear resize, then each map scaled
    to [0, 1] by its peak; all-zero or non-finite maps become zeros. Pure TensorFlow, so
    `explain_dataset` compiles it into its distributed step."""
    maps = tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
    maps = tf.abs(maps) if signed else tf.nn.relu(maps)
    maps = tf.where(tf.math.is_finite(maps), maps, tf.zeros_like(maps))
    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return maps / tf.where(peak > 0, peak, tf.ones_like(peak))


def _run(session: Session, method: Method, x: tf.Tensor, targets: np.ndarray) -> dict:
    """`method.attribute` over the session's padded batches, results gathered in order.

    A method that loops over images in Python (perturbation methods, Score-CAM: not a
    `compiled_step`) would do a whole image's work for each padding row, and its compiled
    kernels run on chunks of masks, not on the batch: it gets one image per batch instead."""

    def batch(xb: tf.Tensor, tb: tf.Tensor) -> dict:
        out = method.attribute(xb, tf.cast(tb, tf.int32))
        total = None
        if method.completeness_tolerance and out.attributions is not None:
            total = method.expected_total(xb, out.targets)
        return {"raw": out.raw, "logits": out.logits, "targets": out.targets,
                "attributions": out.attributions, "total": total}  # fmt: skip

    size = None if type(method).compiled_step else 1
    result = session.map_batches(batch, x, targets, size=size)
    if result["attributions"] is not None:
        result["attributions"] = result["attributions"].numpy()
    return result


def explain(
    model: keras.Model | Session,
    images: Any,
    method: str | Sequence[str] | None = None,
    targets: int | Sequence[int] | None = None,
    layer: str | keras.layers.Layer | None = None,
    batch_size: int | None = None,
    class_names: Sequence[str] | None = None,
    output: int | str | None = None,
    head: str | None = None,
    score: Callable | None = None,
    inputs: dict[str, Any] | None = None,
    reshape: Callable | None = None,
    value_range: Any = None,
    jit_compile: bool | None = None,
    **options: Any,
) -> Explanation | list[Explanation]:
    """Explain a Keras image classifier's decisions.

    Args:
        model: a Functional or Sequential Keras model (nested models are fine), or a
            subclassed one with `layer` named; or a `Session` prepared once for it (then the
            model-form arguments below default to the session's). A final softmax/sigmoid is
            skipped so methods explain the logits; the model is not changed.
        images: one image (H, W, C), a batch (N, H, W, C) (numpy or tensor, uint8 or float,
            preprocessed the way the model expects), or a `tf.data.Dataset` of them.
        method: a name from `xai_keras.methods()`, or a list of names: then a list of
            explanations comes back, and the gradient CAMs of one layer (gradcam, gradcam++,
            xgradcam, layercam, cam, eigencam, hirescam, kpcacam) share one forward and backward
            pass (finercam and shapleycam need their own). Default (None): Grad-CAM, or for a
            vision transformer whose attention is Keras MultiHeadAttention and no `layer` is
            named, "chefer" (`xai_keras.explainers.default_method` says why, and so does
            `Explanation.method_reason`).
        targets: class index(es) to explain; None explains each image's top class. For a
            single sigmoid unit, 1 is the positive class and 0 the negative logit.
        layer: for CAM methods, the layer (name, "nested/path" or object); default: the last
            layer with a spatial map larger than 1x1 (or square tokens, for transformers)
            before the model pools, skipping a class map (a conv whose channels are the
            classes, as in class-conv heads). "auto" scores the last layer at each of the 4
            deepest resolutions on these images (each Grad-CAM's margin over a random map on
            short deletion and insertion curves, <= 16 images; see
            `xai_keras.explainers.layer_search` for the cost) and takes the best;
            `Explanation.layer_reason` says why a layer was chosen.
        batch_size: images per compiled batch (bounds memory); also the chunk size of masked
            forward passes in Score-CAM, occlusion, RISE, LIME and KernelSHAP. Default 32.
        class_names: names used in titles and plots.
        output: which output of a multi-output model to explain (index or name).
        head: how the output is read: "softmax", "sigmoid" (multi-label, or one unit as two
            classes) or "linear" (regression: values explained as they are); default: from
            the model's final activation.
        score: a function `score(outputs) -> (N,)` explained instead of a class (it gets what
            the model returns, e.g. a list for several outputs). Needed for outputs with
            spatial dimensions (segmentation maps), e.g. the mean of class k's mask:
            `lambda out: tf.reduce_mean(out[..., k], axis=(1, 2))`. Define it once, outside
            any loop, and pass the same function each call: kernels are compiled per function,
            so a new `lambda` per call is traced anew every time (kernels of only the 4 most
            recent functions are kept per model, so memory stays bounded either way).
        inputs: a multi-input model's other inputs, `{name: array}`, one row for all images or
            one row per image; the input left unnamed takes `images`.
        reshape: `(N, T, C) -> (N, h, w, C)` for a token layer that is not a square grid
            (square ones, with or without a class token, are reshaped automatically).
        value_range: the model's input range: a (low, high) pair such as (-1, 1), or "tf",
            "torch", "caffe" (keras.applications preprocessing), "unit", "pixels". Baselines
            use it ("black" is its minimum: for a [-1, 1] model 0 is mid-grey) and pictures
            show images through it. Default: unknown, "black" is 0.
        jit_compile: compile the kernels with XLA (default off: on this project's CPU
            benchmarks XLA was not faster; see the README's speed section).
        **options: method options, e.g. `steps=` for Integrated Gradients (see each method).

    Returns:
        An `Explanation` with `maps` (N, H, W) in [0, 1], `raw`, `targets`, `scores`, ...
        (a list of them, in order, when `method` is a list).

    Raises:
        InputError: bad images, targets, method name, options, output or inputs.
        LayerError: a layer that is not in the model or has no spatial output.

    Example:
        >>> exp = explain(model, image)          # Grad-CAM (Chefer on a ViT) of the top class
        >>> exp = explain(model, batch, method="gradcam++", targets=3)
        >>> exp.save("gradcam.png")
    """
    session = Session.of(
        model, **model_form(locals()), batch_size=batch_size, jit_compile=jit_compile
    )
    chosen = default_method(session.model, layer) if method is None else None
    if chosen is not None:
        method = chosen.name
    if isinstance(method, str) or not isinstance(method, Iterable):
        names = [get_method(method).name]  # a non-string is refused here, listing the names
    else:
        names = list(method)
    if not names:
        raise InputError("`method` must name at least one method; see xai_keras.methods().")
    classes = [get_method(name) for name in names]
    if len(classes) > 1:  # each method gets the layer and options it takes; unknown ones fail
        unused = sorted(set(options) - {o for cls in classes for o in cls.options()})
        if unused:
            raise InputError(
                f"No method in {names} takes option(s) {', '.join(unused)}. "
                + "; ".join(f"{c.name}: {', '.join(c.options()) or 'none'}" for c in classes)
            )
    x, single = session.images(images)
    tgt = session.targets(targets, x)
    class_names = session.check_class_names(class_names, x)
    n = int(x.shape[0])
    choice = None
    if isinstance(layer, str) and layer == "auto" and any(c.uses_layer for c in classes):
        first = next(session.groups(n))  # with rows per image, the first image's row is held
        choice = choose_layer(session, x[first], tgt[first])
        layer = choice.path
    instances = [
        cls.create(
            session,
            layer if cls.uses_layer or len(classes) == 1 else None,
            **(options if len(classes) == 1 else _taken(options, cls)),
        )
        for cls in classes
    ]
    _warn_coinciding_cams(session.model, instances)
    parts = [_compute(session, instances, x[g], tgt[g]) for g in session.groups(n)]
    results = parts[0] if len(parts) == 1 else [_concat(p) for p in zip(*parts)]
    built = [
        _explanation(instance, result, x, single, class_names, choice, chosen)
        for instance, result in zip(instances, results)
    ]
    return built[0] if isinstance(method, str) else built


def _taken(options: dict[str, Any], cls: type[Method]) -> dict[str, Any]:
    """The options method `cls` takes."""
    return {k: v for k, v in options.items() if k in cls.options()}


def _warn_coinciding_cams(model: keras.Model, instances: list[Method]) -> None:
    """Say when a CAM variant equals Grad-CAM by construction at its layer: there the
    gradient is the same at every position (the layer feeds global average pooling through
    linear layers), and the variants differ only in how they weigh positions."""
    for instance in instances:
        same = type(instance).same_when_pooled
        if same and instance.layer_path and feeds_global_pooling(model, instance.layer_path):
            warnings.warn(
                f"{instance.name} {same} at layer {instance.layer_path!r}: the gradient there "
                "is the same at every position (the layer feeds global average pooling "
                "linearly), so the CAM variants coincide by construction. Explain an earlier "
                "layer (or layer='auto') to tell them apart.",
                UserWarning,
                stacklevel=3,
            )


def _compute(session: Session, instances: list[Method], x: tf.Tensor, tgt: np.ndarray) -> list:
    """Each method's batched results; the gradient CAMs of one layer share one pass."""
    results: dict[int, dict] = {}
    shared = [i for i, m in enumerate(instances) if shares_pass(m)] if len(instances) > 1 else []
    if len(shared) > 1:
        run = _run(session, SharedCam([instances[i] for i in shared]), x, tgt)
        for m, i in enumerate(shared):
            results[i] = dict(run, raw=run["raw"][:, m])
    for i, instance in enumerate(instances):
        if i not in results:
            results[i] = _run(session, instance, x, tgt)
    return [results[i] for i in range(len(instances))]


def _concat(parts: Sequence[dict]) -> dict:
    """One result dict from per-image ones."""
    merged = {k: tf.concat([p[k] for p in parts], 0) for k in ("raw", "logits", "targets")}
    found = [p["attributions"] for p in parts]
    merged["attributions"] = None if found[0] is None else np.concatenate(found)
    totals = [p["total"] for p in parts]
    merged["total"] = None if totals[0] is None else tf.concat(totals, 0)
    return merged


def _check_numbers(instance: Method, raw: tf.Tensor, result: dict) -> None:
    """Non-finite maps are an error; attributions that miss their completeness identity
    (sum = f(x) - f(baseline)) by more than the method's tolerance get a warning with the
    figures."""
    name = type(instance).name
    bad = np.flatnonzero(~np.isfinite(raw.numpy()).all(axis=(1, 2))).tolist()
    if bad:
        raise NumericsError(
            f"{name}: the map of image(s) {bad[:10]} is not finite (NaN or inf), so it is "
            "neither drawn nor returned; the model's gradients overflow there (check the "
            "images' value range, or try another baseline or method)."
        )
    total = result.get("total")
    if total is None:
        return
    sums = result["attributions"].reshape(len(raw), -1).sum(axis=1)
    total = total.numpy()
    scale = np.maximum(np.abs(total), 1e-3 * max(float(np.abs(total).max()), 1e-3))
    off = np.abs(sums - total) / scale
    worst = np.flatnonzero(off > instance.completeness_tolerance).tolist()
    if worst:
        i = worst[int(np.argmax(off[worst]))]
        warnings.warn(
            f"{name}: attributions sum to {sums[i]:.4g} but f(x) - f(baseline) is "
            f"{total[i]:.4g} for image {i} ({len(worst)} image(s) off by more than "
            f"{instance.completeness_tolerance:.0%}): the attributions are not complete "
            "there (for integrated_gradients raise `steps`; a baseline where the model is "
            "singular, such as a constant image before a LayerNorm, also does this).",
            RuntimeWarning,
            stacklevel=4,
        )


def _explanation(
    instance: Method,
    result: dict,
    x: tf.Tensor,
    single: bool,
    class_names: list[str] | None,
    choice: LayerChoice | None,
    chosen: MethodChoice | None,
) -> Explanation:
    """Resize and normalise one method's raw maps and wrap them with scores and classes."""
    cls = type(instance)
    raw = result["raw"]
    _check_numbers(instance, raw, result)
    maps = finish_maps(raw, x.shape[1:3], cls.signed)
    empty = np.flatnonzero(tf.reduce_max(maps, axis=(1, 2)).numpy() <= 0).tolist()
    if empty:
        warnings.warn(
            f"{cls.name}: the map is all zero for image(s) {empty[:10]} "
            f"({instance.zero_map_reason()});"
            " those maps are returned as zeros.",
            RuntimeWarning,
            stacklevel=3,
        )
    reason = choice.reason if choice and instance.layer_path else instance.layer_reason
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
        class_names=class_names,
        attributions=result["attributions"],
        single=single,
        layer_reason=reason,
        method_reason=chosen.reason if chosen else "given.",
        layer_scores=dict(choice.scores) if choice else None,
        value_range=instance.session.value_range,
        signed=cls.signed,
    )
