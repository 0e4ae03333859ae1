"""One method's row of metrics on one model: what the benchmark and `evaluate_model` report.

`method_row` explains the images, times it, and computes every registered metric whose needs
are met (`xai_keras.evaluate.registry`): the model-based ones always, the localisation ones
where object masks are given, the shortcut rate where cue masks are, and the sanity check on
the first `n_sanity` images.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.evaluate.presets import FAST_OPTIONS, QUICK_METRIC_OPTIONS, QUICK_OPTIONS
from xai_keras.evaluate.registry import compute, get_metric, metrics
from xai_keras.evaluate.sanity import SanityResult
from xai_keras.evaluate.significance import random_reference
from xai_keras.evaluate.user_data import read_user_data
from xai_keras.explainers import explain
from xai_keras.explainers.base import get_method
from xai_keras.explainers.session import Session

__all__ = ["ModelEvaluation", "evaluate_model", "method_row", "time_forward"]


class ModelEvaluation(dict):
    """What `evaluate_model` returns: a dict (`"n"`, `"accuracy"`, `"informative"`,
    `"methods"`) with attribute access and a readable `summary()` (also its `str`).

    `informative` counts the images whose deletion baseline removes at least half of the
    class's probability (`Curves.informative`); only they are tested against the random map.
    When it is 0 every p-value is 1.0: the model keeps the class with the evidence removed,
    so no map can be told apart from random on these images.

    `explanations` (an attribute, not a key: it stays out of JSON) holds each method's scored
    `Explanation` when `evaluate_model(..., keep_explanations=True)`, else nothing.

    Example:
        >>> result = evaluate_model(model, (images, labels), ["gradcam", "random"])
        >>> print(result)                        # one line per method
        >>> result.methods["gradcam"]["p_deletion"], result.informative
    """

    explanations: dict[str, Any] = {}  # noqa: RUF012 (replaced per instance, never mutated)

    @property
    def n(self) -> int:
        """Images scored."""
        return self["n"]

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy on those images, or None without labels."""
        return self["accuracy"]

    @property
    def informative(self) -> int:
        """Images that can tell a map from a random one (see the class docstring)."""
        return self["informative"]

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        """`{method: {metric: mean value, "p_deletion": ..., "beats_random": ...}}`."""
        return self["methods"]

    def summary(self) -> str:
        """A few lines: images, accuracy, how many were informative, and per method its
        deletion/insertion AUCs, p-values against random and the verdict."""
        accuracy = "" if self.accuracy is None else f", accuracy {self.accuracy:.2f}"
        lines = [
            f"{self.n} images{accuracy}; {self.informative} of {self.n} informative (the "
            "deletion baseline removes at least half of the class's probability; only these "
            "are tested against the random map)"
        ]
        if self.informative == 0:
            lines.append(
                "no informative image: every p-value is 1.0; try other images or a baseline "
                "that removes the evidence"
            )
        width = max([len("method")] + [len(m) for m in self.methods])
        lines.append(
            f"{'method':<{width}}  deletion AUC  insertion AUC  p deletion  p insertion  "
            "beats random"
        )
        for method, row in self.methods.items():
            verdict = "yes" if row.get("beats_random") else "no"
            lines.append(
                f"{method:<{width}}  {row.get('deletion_auc', float('nan')):>12.3f}  "
                f"{row.get('insertion_auc', float('nan')):>13.3f}  "
                f"{row.get('p_deletion', 1.0):>10.2g}  {row.get('p_insertion', 1.0):>11.2g}  "
                f"{verdict:>12}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (
            f"ModelEvaluation(n={self.n}, accuracy={self.accuracy!r}, "
            f"informative={self.informative}, methods={list(self.methods)})"
        )


def time_forward(model: keras.Model | Session, images: np.ndarray, batch_size: int) -> float:
    """Seconds per image of a plain compiled forward pass (after a warm-up)."""
    runner = Session.of(model).runner
    x = tf.constant(images[:batch_size])
    runner.forward_fn(x).numpy()
    start, reps = time.perf_counter(), 3
    for _ in range(reps):
        runner.forward_fn(x).numpy()
    return (time.perf_counter() - start) / (reps * len(x))


def method_row(
    model: keras.Model | Session,
    method: str,
    images: np.ndarray,
    masks: np.ndarray | None,
    n_sanity: int,
    batch_size: int,
    class_names: Sequence[str] | None = None,
    targets: np.ndarray | None = None,
    value_range: Any = None,
    quick: bool = False,
    cue_masks: np.ndarray | None = None,
    extra: Sequence[str] = (),
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, float], Any, Any]:
    """One method's metrics on images (and masks): the benchmark's row for one dataset.

    Returns:
        `(row, explanation, (deletion curves, insertion curves, sanity result or None))`: the
        row maps each computed metric's `key` (its mean over images) and `ms_per_image`.
        `extra` names opt-in metrics (`metrics(default=False)`) to compute too, where their
        needs are met; the model-based and map-only ones on every image, those that explain
        the images themselves (robustness, randomisation, axiomatic) on the first
        `n_sanity`. `method_options` (`{method: {option: value}}`) override the benchmark's
        cheaper settings (`FAST_OPTIONS`, `QUICK_OPTIONS`) for the methods it names, in the
        scored explanations and in the metrics that explain again alike.
    """
    fast = (QUICK_OPTIONS if quick else FAST_OPTIONS).get(method, {})
    given = dict((method_options or {}).get(method, {}))
    options = {**FAST_OPTIONS.get(method, {}), **fast, **given, "value_range": value_range}
    with warnings.catch_warnings():
        # Every method runs at its default layer here, on purpose: that CAM variants coincide
        # there (a GAP head) is what the table shows, not something to warn about per method.
        warnings.filterwarnings("ignore", ".*so the CAM variants coincide", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        # Warm up, so that the timed call reuses the traced kernels: on a full batch, or on
        # one image for methods that loop over images with per-image kernels (RISE, LIME, ...:
        # one image traces them all, and a batch would cost as much as the timed call).
        warm = images[:batch_size] if get_method(method).compiled_step else images[:1]
        explain(model, warm, method=method, batch_size=batch_size, **options)
        start = time.perf_counter()
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
    given = {"masks": masks, "cue_masks": cue_masks}
    have = {"model"} | {need for need, value in given.items() if value is not None}
    _, results = compute(
        metrics(needs=have, default=True) + [n for n in extra if set(get_metric(n).needs) <= have],
        metric_options=QUICK_METRIC_OPTIONS if quick else None,
        model=model,
        images=images,
        maps=exp.maps,
        targets=exp.targets,
        masks=masks,
        cue_masks=cue_masks,
        batch_size=batch_size,
        value_range=value_range,
        # The usual pointing-game tolerance: 15 pixels at 224 x 224, scaled to the image size.
        tolerance=max(1, round(15 / 224 * images.shape[1])),
    )
    sanity = None
    self_explaining = [
        n
        for n in metrics(needs=have | {"method"}, default=True)
        + [n for n in extra if set(get_metric(n).needs) <= have | {"method"}]
        if n not in results
    ]
    if self_explaining and n_sanity > 0 and get_method(method).family != "baseline":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            _, own = compute(
                self_explaining,
                model=model,
                images=images[:n_sanity],
                method=method,
                targets=exp.targets[:n_sanity],
                method_options=options,
            )
        results.update(own)
        sanity = next((r for r in own.values() if isinstance(r, SanityResult)), None)
    row = {}
    for name, result in results.items():
        metric = get_metric(name)
        value = metric.mean(result)
        if value is not None:  # e.g. no off-centre object: no pointing_offcentre
            row[metric.key] = value
    row["ms_per_image"] = ms
    return row, exp, (results.get("deletion"), results.get("insertion"), sanity)


def evaluate_model(
    model: keras.Model | Session,
    data: Any,
    method_names: Sequence[str] = ("gradcam", "saliency", "random"),
    n: int = 100,
    targets: str = "predicted",
    n_sanity: int = 8,
    batch_size: int = 32,
    class_names: Sequence[str] | None = None,
    value_range: Any = None,
    metrics: Sequence[str] = (),
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    keep_explanations: bool = False,
    **model_form: Any,
) -> ModelEvaluation:
    """The benchmark's metrics for your own model on your own data.

    `run_benchmark` trains its own models on built-in datasets; this scores the methods on
    the model and data you care about, with the same metrics: faithfulness (deletion and
    insertion AUC, average drop, increase), localisation (pointing game, energy pointing)
    where object masks are given, the cascading-randomisation sanity check, and cost.

    Args:
        model: a Keras classifier or a `Session` (every model form `explain` takes).
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
            minimum; see `xai_keras.explainers.ranges`).
        metrics: opt-in metrics to add, by registry name (`xai_keras.evaluate.metrics(
            default=False)`: Faithfulness Correlation, IROF, the robustness family, ...);
            those that explain the images themselves run on the first `n_sanity` images.
        method_options: `{method: {option: value}}` for the methods named, e.g.
            `{"rise": {"masks": 500}}`; the others run with the benchmark's settings
            (`FAST_OPTIONS`: SmoothGrad 16 samples, IG 32 steps; the rest at their defaults).
        keep_explanations: keep each method's scored `Explanation` in the result's
            `explanations` attribute (`{method: Explanation}`), e.g. to picture the maps that
            were scored without explaining again.
        **model_form: `output`, `head`, `score`, `inputs`, `reshape`, as in `explain`.

    Returns:
        A `ModelEvaluation`: a dict `{"n": images used, "accuracy": top-1 accuracy or None
        without labels, "informative": images tested against random, "methods": {method:
        {metric: mean value}}}` whose `summary()` (and `str`) is a readable table; one
        dataset's entry of `run_benchmark`'s results: a column per registered metric that
        applies (`metrics()`; the localisation ones need masks), `ms_per_image`
        and `forward_equivalents`. Each method's row also
        says whether it beats a random map on this model: `p_deletion` and `p_insertion`
        (one-sided Wilcoxon signed-rank test, paired by image, against the mean AUC of three
        seeded random maps), `wins_deletion`/`wins_insertion` (images where it is better) and
        `beats_random` (both p < 0.01), over the images whose deletion baseline removes at
        least half of the class's probability (`Curves.informative`).

    Raises:
        InputError: data that does not fit the model (shapes, labels, masks), targets="labels"
            without labels, unknown methods or bad numbers.

    Example:
        >>> val = tf.data.Dataset.from_tensor_slices((x_val, y_val, masks_val)).batch(32)
        >>> result = evaluate_model(model, val, ["gradcam", "saliency", "random"])
        >>> print(result.summary())
        >>> result.methods["gradcam"]["deletion_auc"], result.methods["gradcam"]["pointing_game"]
    """
    session = Session.of(model, batch_size=batch_size, value_range=value_range, **model_form)
    for name, value, low in (("n", n, 1), ("n_sanity", n_sanity, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"The `{name}` argument must be an int >= {low}. Received: {value!r}.")
    if targets not in ("predicted", "labels"):
        raise InputError(
            f'The `targets` argument must be "predicted" or "labels". Received: {targets!r}.'
        )
    names = [get_method(m).name for m in method_names]
    extra = [get_metric(m).name for m in metrics]
    images, labels, masks = read_user_data(data, session, int(n))
    if targets == "labels" and labels is None:
        raise InputError(
            'targets="labels" but the `data` has no labels: pass (image, label) elements '
            'or (images, labels) arrays, or use targets="predicted".'
        )
    accuracy = None
    if labels is not None:
        predicted = session.probabilities(images).argmax(axis=1)
        accuracy = float(np.mean(predicted == labels))
    forward_s = time_forward(session, images, batch_size)
    explained = labels if targets == "labels" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = random_reference(session, images, explained)
    rows, explanations = {}, {}
    for method in names:
        row, exp, (dele, ins, _) = method_row(
            session,
            method,
            images,
            masks,
            int(n_sanity),
            batch_size,
            class_names,
            explained,
            value_range,
            extra=extra,
            method_options=method_options,
        )
        if keep_explanations:
            explanations[method] = exp
        row["forward_equivalents"] = row["ms_per_image"] / (1000 * forward_s)
        comparison = reference.compare(dele.auc, ins.auc)
        del comparison["n"]
        rows[method] = {**row, **comparison}
    result = ModelEvaluation(
        n=len(images),
        accuracy=accuracy,
        informative=int(np.sum(reference.informative)),
        methods=rows,
    )
    result.explanations = explanations
    return result
