"""What an `explain_dataset` call will do, checked before anything is read or written.

`make_plan` validates the arguments (in the order a user meets them), creates the method on a
session sized for one replica's batch, opens the dataset as a `Source` and writes down the
settings a resumed run must share (`Plan.settings`, stored in the manifest).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.checks import check_positive_int
from xai_keras.errors import InputError
from xai_keras.evaluate import registry
from xai_keras.explainers.base import Method, default_method, get_method
from xai_keras.explainers.session import Session
from xai_keras.scale.metrics import check_border
from xai_keras.scale.store import FORMAT, MAP_DTYPE
from xai_keras.sources import Source

__all__ = ["Plan", "make_plan", "model_fingerprint"]


def model_fingerprint(model: keras.Model) -> str:
    """A short hash of the model's weights (names, shapes and a sample of the values), so a
    resumed run can tell that it is explaining the same model."""
    h = hashlib.sha256()
    for w in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(w))
        flat = value.reshape(-1)
        h.update(f"{w.path}:{value.shape}:{value.dtype};".encode())
        h.update(flat[:64].tobytes() + flat[-64:].tobytes())
        h.update(np.float64(flat.astype(np.float64).sum()).tobytes())
    return h.hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    """Method options as JSON for the manifest (arrays by hash)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, tf.Tensor)):
        arr = np.ascontiguousarray(np.asarray(value))
        return {"array_sha256": hashlib.sha256(arr.tobytes()).hexdigest()[:16],
                "shape": list(arr.shape)}  # fmt: skip
    return repr(value)


@dataclass
class Plan:
    """A checked call: the method (on a per-replica session), the data, and the settings."""

    method: Method
    source: Source
    strategy: tf.distribute.Strategy
    settings: dict
    batch_size: int  # as asked
    global_batch: int  # rounded up to a multiple of the replicas
    class_names: list[str] | None
    num_classes: int

    @property
    def shard_size(self) -> int:
        return self.settings["shard_size"]


def _check_targets(targets: Any, num_classes: int) -> None:
    if targets is None or targets == "label":
        return
    if isinstance(targets, bool) or not isinstance(targets, (int, np.integer)):
        raise InputError(
            "`targets` must be None (each image's top class), one class index for every "
            f"image, or 'label' (each image's label). Received: targets={targets!r}."
        )
    if not 0 <= int(targets) < num_classes:
        raise InputError(
            f"`targets` must be in [0, {num_classes - 1}] for a model with {num_classes} "
            f"outputs. Received: targets={targets}."
        )


def _check_metrics(metrics: Any) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics or ())
    # Per-image metrics computable from the model, the images and the maps, read when called
    # (so a metric registered after import is offered too).
    offered = registry.metrics(needs=("model",), per_image=True)
    unknown = [m for m in metrics if m not in offered]
    if unknown:
        raise InputError(
            f"Unknown metric(s) {unknown}. Per-image metrics that can be added: "
            f"{', '.join(offered)} (peak location and border mass are always computed)."
        )
    return tuple(sorted(set(metrics)))


def _check_args(session: Session, args: dict) -> tuple[str, ...]:
    """The arguments that need no data; returns the metrics, sorted and unique."""
    for name in ("batch_size", "shard_size"):
        check_positive_int(args[name], name)
    if any(rows.shape[0] != 1 for rows in session.held.values()):
        raise InputError(
            "explain_dataset holds a multi-input model's other inputs at one row for every "
            "image; give `inputs` one row each (or explain per-image rows with `explain`)."
        )
    _check_targets(args["targets"], session.num_scores())
    metrics = _check_metrics(args["metrics"])
    if args["resume"] and args["overwrite"]:
        raise InputError(
            "Pass either resume=True (continue the run in `out`) or overwrite=True (delete it "
            "and start again), not both."
        )
    if not isinstance(args["skip_bad"], bool):
        raise InputError(
            f"`skip_bad` must be True or False. Received: skip_bad={args['skip_bad']!r}."
        )
    return metrics


def _check_strategy(strategy: Any) -> tf.distribute.Strategy:
    strategy = strategy if strategy is not None else tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise InputError(
            f"`strategy` must be a tf.distribute.Strategy or None. Received: {strategy!r}."
        )
    return strategy


def _method(session: Session, method: str | None, layer: Any, options: dict) -> Method:
    if method is None:
        method = default_method(session.model, layer).name
    if isinstance(method, str) and method.lower() in ("sag", "structured_attention_graph"):
        raise InputError(
            "method='sag' is not supported by explain_dataset: a SAG is a search over masked "
            "forward passes per image (hundreds per image) that returns a graph, not a map. "
            "Use xai_keras.sag(model, image) on the images you pick (e.g. the worst ones of "
            "the summary), or a map method such as 'gradcam' or 'occlusion' here."
        )
    if not isinstance(method, str):
        raise InputError(f"`method` must be a method name. Received: {method!r}.")
    return get_method(method).create(session, layer, **options)


def _check_source(source: Source, skip_bad: bool, targets: Any) -> None:
    if skip_bad and source.kind != "folder":
        raise InputError(
            "skip_bad=True skips unreadable files of an image folder; this `dataset` is "
            f"{'an' if source.kind == 'array' else 'a'} {source.kind}. For a tf.data.Dataset, "
            "drop bad elements yourself (e.g. dataset.ignore_errors()); or pass skip_bad=False."
        )
    if targets == "label" and not source.has_labels:
        raise InputError(
            "targets='label' needs labels, but the dataset has none. Pass (images, labels), a "
            "folder with one sub-folder per class, or targets=None."
        )


def _head_settings(session: Session) -> dict:
    """What is explained, for the manifest, where it is not the model's first output read as
    its final activation (so runs of the default head keep their settings)."""
    head, settings = session.head, {}
    if (head.output, head.kind, head.image_input) != (0, "auto", 0):
        settings["head"] = {"output": head.output, "kind": head.kind, "image": head.image_input}
    for name, fn in (("score", head.score), ("reshape", head.reshape)):
        if fn is not None:
            settings[name] = getattr(fn, "__qualname__", repr(fn))
    if session.held:
        settings["inputs"] = {str(i): _jsonable(rows) for i, rows in session.held.items()}
    if session.value_range is not None:
        settings["value_range"] = repr(session.value_range)
    return settings


def _settings(instance: Method, source: Source, args: dict, metrics: Sequence[str]) -> dict:
    """What a resumed run must share with the run it continues (stored in the manifest)."""
    session = instance.session
    image_input = session.model.inputs[session.head.image_input]
    image_shape = tuple(int(d) if d is not None else None for d in image_input.shape[1:])
    targets = args["targets"]
    return {
        "format": FORMAT,
        "method": type(instance).name,
        "layer": instance.layer_path,
        "options": _jsonable(args["options"]),
        "targets": targets if targets in (None, "label") else int(targets),
        "shard_size": args["shard_size"],
        "border": args["border"],
        "metrics": list(metrics),
        "map_dtype": MAP_DTYPE,
        "image_shape": list(image_shape),
        "dataset_size": source.size,
        "model": model_fingerprint(session.model),
        **_head_settings(session),
    }


def make_plan(session: Session, dataset: Any, method: str | None, **args: Any) -> Plan:
    """Check an `explain_dataset` call. `args`: layer, options, targets, batch_size,
    shard_size, strategy, resume, overwrite, skip_bad, metrics, border, class_names."""
    metrics = _check_args(session, args)
    args["border"] = check_border(args["border"])
    strategy = _check_strategy(args["strategy"])
    replicas = strategy.num_replicas_in_sync
    per_replica = math.ceil(args["batch_size"] / replicas)
    session = session.replace(batch_size=per_replica)  # masked-pass chunks per replica
    instance = _method(session, method, args["layer"], args["options"])
    source = session.source(dataset)
    _check_source(source, args["skip_bad"], args["targets"])
    names = args["class_names"]
    return Plan(
        method=instance,
        source=source,
        strategy=strategy,
        settings=_settings(instance, source, args, metrics),
        batch_size=args["batch_size"],
        global_batch=per_replica * replicas,
        class_names=list(names) if names is not None else source.class_names,
        num_classes=session.num_scores(),
    )
