"""`explain(model, images)`: one verb for every registered method.

It validates the inputs once, runs the method over fixed-size batches (the last one padded, so
each compiled kernel traces once per input shape), resizes the raw maps of the whole batch to
the input resolution with `tf.image.resize`, and normalises them to [0, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.explain.base import Method, get_method, runner_for
from xai_keras.explain.cam import SharedCam, shares_pass
from xai_keras.explain.explanation import Explanation
from xai_keras.explain.graph import hold_inputs
from xai_keras.explain.heads import check_scores_shape, resolve_head
from xai_keras.explain.layer_search import choose_layer
from xai_keras.explain.layers import LayerChoice, feeds_global_pooling, layer_reason
from xai_keras.explain.ranges import ValueRange, resolve_value_range

__all__ = ["explain", "check_images", "check_targets", "finish_maps"]


def _expected_shape(model: keras.Model, index: int) -> tuple | None:
    """(H, W, C) of input `index`, or None for a subclassed model (no symbolic inputs)."""
    try:
        return tuple(model.inputs[index].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _dataset_images(dataset: tf.data.Dataset, model: keras.Model) -> np.ndarray:
    """Every image of a `tf.data.Dataset` (batched or not; images, (images, labels) or dicts)."""
    from xai_keras.scale.data import as_source  # scale builds on explain: import when used

    images = [image for image, _ in as_source(dataset, model).elements.as_numpy_iterator()]
    if not images:
        raise InputError("The `images` dataset is empty: it yielded no images.")
    return np.stack(images)


def check_images(
    images: Any, model: keras.Model, name: str = "images", input_index: int = 0
) -> tuple[tf.Tensor, bool]:
    """Validate images (an array, tensor or `tf.data.Dataset`) against the model's image
    input; return a float32 (N, H, W, C) tensor and whether a single image (H, W, C) was
    given."""
    if isinstance(images, tf.data.Dataset):
        images = _dataset_images(images, model)
    try:
        x = tf.convert_to_tensor(images)
    except (ValueError, TypeError) as err:
        raise InputError(f"`{name}` must be an array or tensor of images: {err}") from None
    if not (x.dtype.is_floating or x.dtype.is_integer):
        raise InputError(f"`{name}` must hold numbers. Received dtype {x.dtype.name}.")
    x = tf.cast(x, tf.float32)
    expected = _expected_shape(model, input_index)
    if expected is None:  # subclassed: any (H, W, C) images
        expected = (None, None, None)
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
    output: int | str | None = None,
    head: str | None = None,
    score: Callable | None = None,
    inputs: dict[str, Any] | None = None,
    reshape: Callable | None = None,
    value_range: Any = None,
    **options: Any,
) -> Explanation | list[Explanation]:
    """Explain a Keras image classifier's decisions.

    Args:
        model: a Functional or Sequential Keras model (nested models are fine), or a
            subclassed one with `layer` named. A final softmax/sigmoid is skipped so methods
            explain the logits; the model is not changed.
        images: one image (H, W, C), a batch (N, H, W, C) (numpy or tensor, uint8 or float,
            preprocessed the way the model expects), or a `tf.data.Dataset` of them.
        method: a name from `xai_keras.methods()`, or a list of names: then a list of
            explanations comes back, and the gradient CAMs of one layer (gradcam, gradcam++,
            xgradcam, layercam, cam, eigencam, hirescam, kpcacam) share one forward and backward
            pass (finercam and shapleycam need their own).
        targets: class index(es) to explain; None explains each image's top class. For a
            single sigmoid unit, 1 is the positive class and 0 the negative logit.
        layer: for CAM methods, the layer (name, "nested/path" or object); default: the last
            layer with a spatial map larger than 1x1 (or square tokens, for transformers)
            before the model pools, skipping a class map (a conv whose channels are the
            classes, as in class-conv heads). "auto" scores the last layer at each of the 4
            deepest resolutions on these images (each Grad-CAM's margin over a random map on
            short deletion and insertion curves, <= 16 images; see
            `xai_keras.explain.layer_search` for the cost) and takes the best;
            `Explanation.layer_reason` says why a layer was chosen.
        batch_size: images per compiled batch (bounds memory); also the chunk size of masked
            forward passes in Score-CAM and occlusion.
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
        **options: method options, e.g. `steps=` for Integrated Gradients (see each method).

    Returns:
        An `Explanation` with `maps` (N, H, W) in [0, 1], `raw`, `targets`, `scores`, ...
        (a list of them, in order, when `method` is a list).

    Raises:
        InputError: bad images, targets, method name, options, output or inputs.
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
    if isinstance(method, str) or not isinstance(method, Iterable):
        names = [get_method(method).name]  # a non-string is refused here, listing the names
    else:
        names = list(method)
    if not names:
        raise InputError("`method` must name at least one method; see xai_keras.methods().")
    spec, held = resolve_head(model, output, head, score, inputs, reshape)
    vrange = resolve_value_range(value_range)
    classes = [get_method(name) for name in names]
    if len(classes) > 1:  # each method gets the layer and options it takes; unknown ones fail
        unused = sorted(set(options) - {o for cls in classes for o in cls.options()})
        if unused:
            raise InputError(
                f"No method in {names} takes option(s) {', '.join(unused)}. "
                + "; ".join(f"{c.name}: {', '.join(c.options()) or 'none'}" for c in classes)
            )
    x, single = check_images(images, model, input_index=spec.image_input)
    n = int(x.shape[0])
    rows = _held_per_image(held, n)
    hold_inputs(model, {i: r[:1] for i, r in (held if rows is None else rows).items()})
    runner = runner_for(model, head=spec)
    if runner.num_scores is None and spec.score is None:  # subclassed: shapes known by running
        first = keras.tree.flatten(model(x[:1], training=False))[spec.output]
        check_scores_shape(first.shape, spec.output, model.name)
    num_scores = runner.num_scores or int(runner.forward_fn(x[:1]).shape[-1])
    tgt = check_targets(targets, n, num_scores)
    if class_names is not None and spec.score is None and len(class_names) != num_scores:
        raise InputError(
            f"`class_names` has {len(class_names)} names but model {model.name!r} has "
            f"{num_scores} classes; give one name per class, in class-index order."
        )
    choice = None
    if isinstance(layer, str) and layer == "auto" and any(c.uses_layer for c in classes):
        choice = choose_layer(model, x if rows is None else x[:1], tgt, spec, batch_size, vrange)
        layer = choice.path
    instances = [
        cls.create(
            model,
            layer if cls.uses_layer or len(classes) == 1 else None,
            spec,
            vrange,
            **(options if len(classes) == 1 else _taken(options, cls)),
        )
        for cls in classes
    ]
    for instance in instances:
        instance.batch_size = batch_size
    _warn_coinciding_cams(model, instances)
    if rows is None:
        results = _compute(instances, x, tgt, batch_size)
    else:  # other inputs differ per image: one image at a time, its row held
        parts = []
        for j in range(n):
            hold_inputs(model, {i: r[j : j + 1] for i, r in rows.items()})
            parts.append(_compute(instances, x[j : j + 1], tgt[j : j + 1], 1))
        results = [_concat([p[i] for p in parts]) for i in range(len(instances))]
    built = [
        _explanation(instance, result, x, single, class_names, vrange, choice, layer)
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


def _held_per_image(held: dict[int, np.ndarray], n: int) -> dict[int, np.ndarray] | None:
    """The held inputs when they differ between images (else None: one row serves all)."""
    for index, rows in held.items():
        if rows.shape[0] not in (1, n):
            raise InputError(
                f"Held input {index} has {rows.shape[0]} rows; give one row, or one per image "
                f"({n})."
            )
    if all(rows.shape[0] == 1 or (rows == rows[:1]).all() for rows in held.values()):
        return None
    return {i: np.broadcast_to(r, (n, *r.shape[1:])) for i, r in held.items()}


def _compute(instances: list[Method], x: tf.Tensor, tgt: np.ndarray, batch_size: int) -> list:
    """Each method's batched results; the gradient CAMs of one layer share one pass."""
    results: dict[int, dict] = {}
    shared = [i for i, m in enumerate(instances) if shares_pass(m)] if len(instances) > 1 else []
    if len(shared) > 1:
        run = _run(SharedCam([instances[i] for i in shared]), x, tgt, batch_size)
        for m, i in enumerate(shared):
            results[i] = dict(run, raw=run["raw"][:, m])
    for i, instance in enumerate(instances):
        if i not in results:
            results[i] = _run(instance, x, tgt, batch_size)
    return [results[i] for i in range(len(instances))]


def _concat(parts: list[dict]) -> dict:
    """One result dict from per-image ones."""
    merged = {k: tf.concat([p[k] for p in parts], 0) for k in ("raw", "logits", "targets")}
    found = [p["attributions"] for p in parts]
    merged["attributions"] = None if found[0] is None else np.concatenate(found)
    return merged


def _explanation(
    instance: Method,
    result: dict,
    x: tf.Tensor,
    single: bool,
    class_names: Sequence[str] | None,
    value_range: ValueRange | None,
    choice: LayerChoice | None,
    layer: Any,
) -> Explanation:
    """Resize and normalise one method's raw maps and wrap them with scores and classes."""
    cls = type(instance)
    raw = result["raw"]
    maps = finish_maps(raw, x.shape[1:3], cls.signed)
    empty = np.flatnonzero(tf.reduce_max(maps, axis=(1, 2)).numpy() <= 0).tolist()
    if empty:
        warnings.warn(
            f"{cls.name}: the map is all zero for image(s) {empty[:10]} ({cls.zero_map_cause});"
            " those maps are returned as zeros.",
            RuntimeWarning,
            stacklevel=3,
        )
    reason = ""
    if instance.layer_path is not None:
        reason = (
            choice.reason if choice else layer_reason(instance.model, layer, instance.layer_path)
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
        layer_reason=reason,
        layer_scores=dict(choice.scores) if choice else None,
        value_range=value_range,
        signed=cls.signed,
    )
