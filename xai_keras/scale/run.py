"""`explain_dataset`: stream a whole dataset through an explanation method into shards on disk.

The loop, per global batch (the last one padded, so every compiled kernel sees one shape):

    dataset -> (image, target, position, label) batches -> strategy.run(attribute + resize +
    normalise) on every replica -> gather by position -> per-image metrics -> shard buffer
    -> shard-NNNNN.npz + .jsonl -> manifest.json

Only the current shard's maps are held in memory, so memory stays flat however large the
dataset is. See `xai_keras.scale` for the layout, resuming and distribution.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.checks import check_positive_int
from xai_keras.errors import InputError
from xai_keras.evaluate import registry
from xai_keras.explain.api import finish_maps
from xai_keras.explain.base import Method, get_method
from xai_keras.explain.session import Session
from xai_keras.io import ensure_writable_dir
from xai_keras.scale.metrics import check_border, map_metrics
from xai_keras.scale.store import (
    FORMAT,
    MANIFEST,
    MAP_DTYPE,
    DatasetExplanation,
    OutLock,
    foreign_files,
    read_manifest,
    remove_outputs,
    remove_temporaries,
    write_index,
    write_manifest,
    write_shard,
)
from xai_keras.sources import Source, file_error

__all__ = ["explain_dataset", "model_fingerprint"]

_FAITHFULNESS_STEPS = 20


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


# What `explain` does to raw maps, compiled here into the distributed step.
_finish = tf.function(finish_maps)


def _make_step(strategy: tf.distribute.Strategy, method: Method, with_images: bool) -> Callable:
    """The per-global-batch step: `strategy.run` of attribute + finish on every replica."""
    runner, signed = method.runner, type(method).signed

    def replica(x, t, p, y, f):
        out = method.attribute(x, t)
        probs = runner.squash(out.logits)
        result = {
            "maps": _finish(out.raw, tf.shape(x)[1:3], signed),
            "targets": out.targets,
            "scores": tf.gather(probs, out.targets, batch_dims=1),
            "positions": p,
            "labels": y,
            "files": f,
            # int32, not bool: the all-gather of MultiWorkerMirroredStrategy has no bool kernel
            "finite": tf.cast(
                tf.reduce_all(tf.math.is_finite(x), axis=tf.range(1, tf.rank(x))), tf.int32
            ),
        }
        if with_images:
            result["images"] = x
        return result

    def xai_keras_scale_step(x, t, p, y, f):
        return strategy.run(replica, args=(x, t, p, y, f))

    # A method whose batch is a few compiled kernels gets the whole replica step (attribution,
    # resize, normalise) compiled into one graph. The others loop in Python per image (occlusion,
    # Score-CAM, RISE, ...) and would unroll into huge graphs: they run eagerly under
    # `strategy.run`, still calling their own compiled kernels.
    if type(method).compiled_step:
        return tf.function(xai_keras_scale_step)
    return xai_keras_scale_step


class _QuietEagerStrategy(logging.Filter):
    """Methods that loop in Python run `strategy.run` eagerly on purpose (see
    `_COMPILED_FAMILIES`); TensorFlow's advice to wrap it in a tf.function is noise there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eagerly has significant overhead" not in record.getMessage()


class _QuietGather(logging.Filter):
    """Gathering across workers eagerly builds a small tf.function per call, by TensorFlow's
    design; its retracing warning says nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "compute_gathered_values" not in record.getMessage()


def _collect(strategy: tf.distribute.Strategy, values: dict) -> dict[str, np.ndarray]:
    """Per-replica values as numpy arrays (replica order; reordered later by position)."""
    first = next(iter(values.values()))
    if len(strategy.experimental_local_results(first)) < strategy.num_replicas_in_sync:
        # other workers hold the rest (every worker gathers the same keys in the same order)
        return {k: np.asarray(strategy.gather(v, axis=0)) for k, v in values.items()}
    return {
        k: np.concatenate([np.asarray(v) for v in strategy.experimental_local_results(value)])
        for k, value in values.items()
    }


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def _from_writer(strategy: tf.distribute.Strategy, writer: bool, values: Sequence[int]) -> list:
    """Every worker gets the writer's `values` (a collective: every worker must call it at the
    same point). Used so that all workers start at the shard the chief resumes from, and as a
    barrier that tells workers whether the chief's step succeeded."""
    row = tf.constant([int(writer), *[int(v) for v in values]], tf.int64)
    quiet = _QuietEagerStrategy()  # a handful of eager calls per run: no overhead to speak of
    tf.get_logger().addFilter(quiet)
    try:
        rows = strategy.gather(strategy.run(lambda: tf.identity(row)), axis=0)
    finally:
        tf.get_logger().removeFilter(quiet)
    rows = np.asarray(rows).reshape(-1, len(values) + 1)
    chief = rows[rows[:, 0] == 1]
    return chief[0, 1:].tolist() if len(chief) else [0] * len(values)


def _pipeline(
    source: Source, start: int, global_batch: int, targets: Any, num_classes: int
) -> tf.data.Dataset:
    """(image, target, position, label, file index) batches of exactly `global_batch`; padded
    rows have position -1. Elements before `start` are skipped (resuming). The file index is
    the image's index in `source.files` for folders, else its position."""
    ds = source.elements.skip(start) if start else source.elements

    def with_target(position, element):
        if source.indexed:
            image, label, file_index = element
        else:
            (image, label), file_index = element, position
        if targets == "label":
            tf.debugging.assert_less(label, num_classes, "a label is >= the number of classes")
            tf.debugging.assert_non_negative(label, "a label is negative")
            target = label
        else:
            target = tf.constant(-1 if targets is None else int(targets), tf.int32)
        return image, target, tf.cast(position, tf.int64), label, tf.cast(file_index, tf.int64)

    def pad(x, t, p, y, f):
        missing = global_batch - tf.shape(x)[0]
        x = tf.pad(x, [[0, missing]] + [[0, 0]] * (len(x.shape) - 1))
        t = tf.pad(t, [[0, missing]], constant_values=-1)
        p = tf.pad(p, [[0, missing]], constant_values=-1)
        y = tf.pad(y, [[0, missing]], constant_values=-1)
        f = tf.pad(f, [[0, missing]], constant_values=-1)
        return (
            tf.ensure_shape(x, (global_batch, *x.shape[1:])),
            tf.ensure_shape(t, (global_batch,)),
            tf.ensure_shape(p, (global_batch,)),
            tf.ensure_shape(y, (global_batch,)),
            tf.ensure_shape(f, (global_batch,)),
        )

    ds = ds.enumerate(start=start).map(with_target).batch(global_batch).map(pad)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(2)


def _is_writer(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes files when several workers run one job."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if resolver is None or not task_type:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


def _check_args(
    session: Session,
    batch_size: Any,
    shard_size: Any,
    targets: Any,
    metrics: Any,
    resume: bool,
    overwrite: bool,
) -> tuple[str, ...]:
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        check_positive_int(value, name)
    if any(rows.shape[0] != 1 for rows in session.held.values()):
        raise InputError(
            "explain_dataset holds a multi-input model's other inputs at one row for every "
            "image; give `inputs` one row each (or explain per-image rows with `explain`)."
        )
    num_classes = session.num_scores()
    if targets is not None and targets != "label":
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
    if resume and overwrite:
        raise InputError(
            "Pass either resume=True (continue the run in `out`) or overwrite=True (delete it "
            "and start again), not both."
        )
    return tuple(sorted(set(metrics)))


def _method(session: Session, method: str, layer: Any, options: dict) -> Method:
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


def _settings_diff(old: dict, new: dict) -> list[str]:
    diff = []
    for key, value in new.items():
        before = old.get(key)
        if key == "dataset_size" and (before is None or value is None):
            continue  # an unknown size cannot be compared
        if before != value:
            diff.append(f"{key}: the run in progress has {before!r}, this call {value!r}")
    return diff


def _open_out(out: Path, settings: dict, resume: bool, overwrite: bool) -> dict | None:
    """Check `out` against this call (the writer, holding the lock); return the manifest to
    continue from (or None for a new run). A folder without a manifest was not written by
    explain_dataset (a run writes its manifest before anything else), so nothing in it is
    touched unless `overwrite`, and then only files with the names a run writes."""
    manifest = read_manifest(out)
    if manifest is None:
        foreign = foreign_files(out)
        if foreign and not overwrite:
            shown = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if foreign[3:] else ""
            )
            raise InputError(
                f"The `out` folder {out} is not empty ({shown}) and holds no explain_dataset "
                "run (no manifest.json). Pass a new or empty folder, or overwrite=True "
                "(--overwrite) to write there anyway (files named as a run names its outputs, "
                "shard-*, index.jsonl, summary.*, *_maps.png, are then replaced; nothing else "
                "is touched)."
            )
        if foreign:
            remove_outputs(out)
        return None
    if not resume and not overwrite:
        state = "a complete" if manifest.get("complete") else "an incomplete"
        raise InputError(
            f"{out} already holds {state} explain_dataset run ({manifest.get('images_done', 0)} "
            "images). Pass resume=True (--resume) to continue it, overwrite=True (--overwrite) "
            "to start again, or another `out` folder."
        )
    if overwrite:
        remove_outputs(out)
        return None
    diff = _settings_diff(manifest.get("settings", {}), settings)
    if diff:
        raise InputError(
            f"Cannot resume the run in {out}: it was started with different settings ("
            + "; ".join(diff)
            + "). Resume with the same model, method, layer, options, targets, shard_size, "
            "border and metrics, or pass overwrite=True / another `out` to start a new run."
        )
    return manifest


class _ShardBuffer:
    """Rows waiting to be written; emits full shards of contiguous positions, in order.

    Batches are kept as they come and joined only when a shard may be complete, so each row
    is copied once or twice, not once per batch.
    """

    def __init__(self, shard_size: int, next_position: int):
        self.shard_size, self.next = shard_size, next_position
        self.parts: list[tuple[dict[str, np.ndarray], list[dict]]] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, arrays: dict[str, np.ndarray], records: list[dict]) -> None:
        self.parts.append((arrays, records))
        self.count += len(records)

    def take(self, final: bool = False) -> tuple[dict, list[dict]] | None:
        """The next shard's rows if they are all here (at the end: whatever is left)."""
        n = self.count if final else self.shard_size
        if n == 0 or self.count < n:
            return None
        arrays = {k: np.concatenate([a[k] for a, _ in self.parts]) for k in self.parts[0][0]}
        records = [r for _, rs in self.parts for r in rs]
        order = np.argsort(arrays["positions"], kind="stable")  # replicas/workers may interleave
        arrays = {k: v[order] for k, v in arrays.items()}
        records = [records[i] for i in order]
        self.parts = [(arrays, records)]
        if not np.array_equal(arrays["positions"][:n], np.arange(self.next, self.next + n)):
            if final:
                raise RuntimeError(
                    f"explain_dataset lost images: positions {self.next}.. are incomplete."
                )
            return None
        rest = {k: v[n:].copy() for k, v in arrays.items()}  # copies: free the joined block
        self.parts = [(rest, records[n:])] if len(records) > n else []
        self.count -= n
        self.next += n
        return {k: v[:n] for k, v in arrays.items()}, records[:n]


def _records(
    arrays: dict[str, np.ndarray],
    source: Source,
    shard_size: int,
    border: float,
    class_names: Sequence[str] | None,
    faithfulness: dict[str, np.ndarray],
) -> list[dict]:
    """One JSON-able record per real image of a batch."""
    stats = map_metrics(arrays["maps"], border)
    records = []
    for i, position in enumerate(arrays["positions"].tolist()):
        target = int(arrays["targets"][i])
        r: dict[str, Any] = {
            "position": position,
            "shard": position // shard_size,
            "row": position % shard_size,
            "class": target,
        }
        if class_names is not None and 0 <= target < len(class_names):
            r["class_name"] = class_names[target]
        r["score"] = round(float(arrays["scores"][i]), 6)
        if source.has_labels:
            r["label"] = int(arrays["labels"][i])
        if source.files is not None:
            r["file"] = source.files[int(arrays["files"][i])]
        r["peak_y"], r["peak_x"] = int(stats["peak_y"][i]), int(stats["peak_x"][i])
        r["peak_region"] = str(stats["peak_region"][i])
        r["border_share"] = round(float(stats["border_share"][i]), 6)
        r["corner_share"] = round(float(stats["corner_share"][i]), 6)
        r["empty"] = bool(stats["empty"][i])
        for name, values in faithfulness.items():
            r[registry.get_metric(name).key] = round(float(values[i]), 6)
        records.append(r)
    return records


def explain_dataset(
    model: keras.Model | Session,
    dataset: Any,
    method: str = "gradcam",
    *,
    out: str | os.PathLike,
    targets: int | str | None = None,
    layer: str | keras.layers.Layer | None = None,
    batch_size: int = 64,
    shard_size: int = 1024,
    output: int | str | None = None,
    head: str | None = None,
    score: Callable | None = None,
    inputs: dict[str, Any] | None = None,
    reshape: Callable | None = None,
    value_range: Any = None,
    strategy: tf.distribute.Strategy | None = None,
    resume: bool = False,
    overwrite: bool = False,
    skip_bad: bool = False,
    metrics: Sequence[str] = (),
    border: float = 0.2,
    class_names: Sequence[str] | None = None,
    summary: bool = True,
    log_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_shard: Callable[[int, int], None] | None = None,
    **options: Any,
) -> DatasetExplanation:
    """Explain every image of a dataset, streaming, into compressed shards under `out`.

    Gives the same maps as `explain(model, images, method, ...)` on the same images, in
    dataset order, but never holds more than one shard of maps in memory, runs on any
    `tf.distribute` strategy, and can be resumed after a crash.

    Args:
        model: a Keras classifier or a `Session` (every model form `explain` takes).
        dataset: a `tf.data.Dataset` of images or (images, labels) (batched or not; dicts
            with an "image" and optionally a "label" key work too), a numpy array of images
            or an `(images, labels)` tuple of arrays, or a folder path (images, optionally one
            sub-folder per class, read in sorted order, resized to the model's input and
            scaled to [0, 1] as the project's folder datasets are). Images are otherwise
            passed to the model as they are. A dataset must give the same order each time it
            is iterated for `resume` to be right.
        method: a name from `xai_keras.methods()` (not "sag").
        out: the output folder (see `xai_keras.scale` for its layout).
        targets: None explains each image's top class; an int that class for every image;
            "label" each image's label.
        layer: the layer for CAM methods (default: the last spatial one).
        batch_size: images per global batch; with R replicas each runs
            ceil(batch_size / R) images per compiled call.
        shard_size: images per shard file (the unit of memory, of writing and of resuming).
        output, head, score, inputs, reshape, value_range: what is explained and how, as in
            `explain` (held `inputs` take one row for every image).
        strategy: a `tf.distribute.Strategy`; None uses the current one (the default
            strategy: one device).
        resume: continue the run in `out`, skipping its complete shards; the settings must be
            those it was started with (the batch size and the strategy may change).
        overwrite: delete a previous run in `out` and start again. Only files named as a run
            names its outputs (shard-*.npz/.jsonl, manifest.json, index.jsonl, summary.md/.json,
            mean_maps.png, worst_maps.png) are deleted or replaced; other files stay. Without
            it, a non-empty `out` that holds no run (no manifest.json) is refused.
        skip_bad: for image folders: skip files that cannot be read or decoded (truncated,
            corrupt, not images) instead of stopping. Skipped files get no map and no
            position; they are listed (file and reason) in the manifest, at the end of
            `index.jsonl` as `{"file", "skipped": true, "error"}` records, in
            `result.skipped` and in the summary. The default (False) stops at the first
            unreadable file, naming it, before its shard is written, so the run can be
            resumed after removing the file or with skip_bad=True.
        metrics: extra per-image metrics, by registry name (`xai_keras.evaluate.metrics()`
            with needs no more than the model): "deletion" and/or "insertion" AUC (20 steps,
            blurred baseline; each costs 21 forward passes per image, on the default device),
            "average_drop", "increase", ... recorded under the metric's key. Peak location and
            border/corner mass are always recorded.
        border: width of the border band, as a fraction of the image side, for the per-image
            border/corner shares and the summary's shortcut finder. The default 0.2 is wider
            than it looks necessary because coarse maps peak at cell centres: a Grad-CAM of an
            8x8 layer on a 64 px image cannot peak nearer than 4 px to the edge, and a model
            that looks at a corner marker typically peaks one cell in (about 12 px).
        class_names: names of the classes (default: the folder names for a folder dataset).
        summary: write `summarize` outputs (Markdown, JSON, PNG) into `out` at the end.
        log_dir: also log the summary to TensorBoard there.
        progress: show a tqdm progress bar (images/s).
        on_shard: called as `on_shard(shard, images_done)` after each shard is committed.
        **options: method options, as for `explain` (e.g. `steps=` for Integrated Gradients).

    Returns:
        A `DatasetExplanation`: `.maps` (lazy, dataset order), `.index`, `.summary()`.

    Raises:
        InputError: bad arguments or images, an unreadable image file (without `skip_bad`),
            a folder `out` that holds another run or foreign files (without
            `resume`/`overwrite`), another run writing to `out` at the same time (a lock file,
            `out/.explain_dataset.lock`, names it; one left by a dead process on this host is
            taken over), `resume` with settings that differ from the run's, or a failed write
            (full disk, read-only folder), saying which shards are kept.

    Several workers (`MultiWorkerMirroredStrategy`): every worker calls this with the same
    arguments and the same `out` on a shared file system; only the chief writes (and holds
    the lock). All workers start from the shard the chief resumes from, and each worker's
    result is read from the chief's manifest once the chief has written it, so it says
    complete exactly when the chief's run is.

    Example:
        >>> ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(64)
        >>> result = explain_dataset(model, ds, "gradcam", out="runs/gradcam-test")
        >>> result.maps[0].shape, result.index[0]["peak_region"]
    """
    session = Session.of(
        model, output=output, head=head, score=score, inputs=inputs, reshape=reshape,
        value_range=value_range,
    )  # fmt: skip
    model = session.model
    metrics = _check_args(session, batch_size, shard_size, targets, metrics, resume, overwrite)
    if not isinstance(skip_bad, bool):
        raise InputError(f"`skip_bad` must be True or False. Received: skip_bad={skip_bad!r}.")
    border = check_border(border)
    strategy = strategy if strategy is not None else tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise InputError(
            f"`strategy` must be a tf.distribute.Strategy or None. Received: {strategy!r}."
        )
    replicas = strategy.num_replicas_in_sync
    per_replica = math.ceil(batch_size / replicas)
    global_batch = per_replica * replicas
    session = session.replace(batch_size=per_replica)  # masked-pass chunks per replica
    instance = _method(session, method, layer, options)
    cls = type(instance)

    source = session.source(dataset)
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
    names = list(class_names) if class_names is not None else source.class_names
    num_classes = session.num_scores()
    image_input = model.inputs[session.head.image_input]
    image_shape = tuple(int(d) if d is not None else None for d in image_input.shape[1:])
    settings = {
        "format": FORMAT,
        "method": cls.name,
        "layer": instance.layer_path,
        "options": _jsonable(options),
        "targets": targets if targets in (None, "label") else int(targets),
        "shard_size": shard_size,
        "border": border,
        "metrics": list(metrics),
        "map_dtype": MAP_DTYPE,
        "image_shape": list(image_shape),
        "dataset_size": source.size,
        "model": model_fingerprint(model),
        **_head_settings(session),
    }

    out = Path(out)
    writer = _is_writer(strategy)
    multi = _multi_worker(strategy)
    lock = OutLock(out)
    manifest, refusal = None, None
    if writer:
        try:
            if out.exists() and not out.is_dir():
                raise InputError(
                    "The `out` argument must be a folder (new, empty or holding a run). "
                    f"Received: out={str(out)!r}, which is a file."
                )
            ensure_writable_dir(out)
            lock.acquire()  # before touching anything: temporaries may be another run's
            remove_temporaries(out)
            manifest = _open_out(out, settings, resume, overwrite)
        except BaseException as err:
            lock.release()
            if not multi:
                raise
            refusal = err
    if multi:  # every worker starts where the chief (which reads the manifest) starts
        ok, shards, complete, files = _from_writer(
            strategy, writer, [refusal is None, *_progress(manifest)]
        )
        if refusal is not None:
            raise refusal
        if not ok:
            raise InputError(
                f"The chief worker refused to start explain_dataset in {out}; its error says why."
            )
        if not writer and shards:
            manifest = {"settings": settings, "shards_done": shards, "complete": bool(complete),
                        "images_done": shards * shard_size, "files_done": files}  # fmt: skip
    resuming = manifest is not None
    if manifest is None:
        manifest = {"settings": settings, "shards_done": 0, "images_done": 0, "complete": False}
    manifest.setdefault("files_done", manifest["images_done"])
    manifest.setdefault("skipped", [])
    manifest.update(
        class_names=names,
        has_labels=source.has_labels,
        batch_size=batch_size,
        replicas=replicas,
    )
    try:
        if writer:  # first, so the folder is known to be ours (and as a probe of the disk)
            _write(out, manifest, lambda: write_manifest(out, manifest), "manifest.json")
        empty = [0]
        if not manifest["complete"]:
            try:
                empty = _explain_shards(
                    instance, strategy, source, out, manifest, settings, global_batch,
                    num_classes, names, writer, progress, on_shard, skip_bad,
                )  # fmt: skip
            except BaseException:
                if writer and not resuming and manifest["shards_done"] == 0:
                    (out / MANIFEST).unlink(missing_ok=True)  # nothing done: leave no run
                raise
        failure, result = None, None
        if writer:
            try:
                _write(
                    out,
                    manifest,
                    lambda: write_index(out, manifest["shards_done"], manifest["skipped"]),
                    "index.jsonl",
                )
                result = DatasetExplanation(out)
                if summary:
                    from xai_keras.scale.summary import summarize

                    _write(
                        out,
                        manifest,
                        lambda: setattr(result, "_summary", summarize(result, out, log_dir)),
                        "the summary",
                    )
            except BaseException as err:
                if not multi:
                    raise
                failure = err
        if multi:  # a barrier: workers read the chief's files only once they are written
            (ok,) = _from_writer(strategy, writer, [failure is None])
            if failure is not None:
                raise failure
            if not ok:
                raise InputError(
                    f"The chief worker failed to write the index and summary of {out}; its "
                    "error says why."
                )
    finally:
        lock.release()
    if not writer:
        if read_manifest(out) is None:
            raise InputError(
                f"This worker finished its part, but {out / MANIFEST} written by the chief is "
                "not visible here: every worker must be given the same `out` on a file system "
                "they all share."
            )
        result = DatasetExplanation(out)  # the chief's manifest: complete only if it says so
    if empty[0]:
        warnings.warn(
            f"{cls.name}: {empty[0]} map(s) are all zero (the gradients or scores were "
            f"constant or non-finite), e.g. at positions {empty[1:]}; they are stored as zeros.",
            RuntimeWarning,
            stacklevel=2,
        )
    if manifest["skipped"]:
        skipped = manifest["skipped"]
        warnings.warn(
            f"{len(skipped)} unreadable image file(s) skipped (skip_bad=True), e.g. "
            f"{skipped[0]['file']} ({skipped[0]['error']}); they are listed in index.jsonl and "
            "the summary.",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


def _progress(manifest: dict | None) -> list[int]:
    if manifest is None:
        return [0, 0, 0]
    done = manifest["shards_done"]
    return [done, bool(manifest["complete"]), manifest.get("files_done", manifest["images_done"])]


def _write(out: Path, manifest: dict, write: Callable[[], Any], what: str) -> None:
    """Run `write`; turn a failed write (full disk, read-only or removed folder) into one
    line saying what is in `out` and what is not."""
    try:
        write()
    except OSError as err:
        reason = err.strerror or str(err)
        done, images = manifest["shards_done"], manifest["images_done"]
        kept = (
            f"{done} complete shard(s) with {images} maps are kept there"
            if done
            else "no maps were written"
        )
        raise InputError(
            f"Writing {what} to {out} failed ({reason}): {kept}, {what} and what follows "
            "were not written. Free some space (or fix the folder) and run again with "
            "resume=True (--resume) to continue."
        ) from None


def _explain_shards(
    instance: Method,
    strategy: tf.distribute.Strategy,
    source: Source,
    out: Path,
    manifest: dict,
    settings: dict,
    global_batch: int,
    num_classes: int,
    names: list[str] | None,
    writer: bool,
    progress: bool,
    on_shard: Callable[[int, int], None] | None,
    skip_bad: bool,
) -> list[int]:
    """The streaming loop; updates `manifest` as shards are committed. Returns the number of
    all-zero maps followed by the positions of up to ten of them."""
    from tqdm import tqdm

    shard_size, border = settings["shard_size"], settings["border"]
    metrics = settings["metrics"]
    start = manifest["shards_done"] * shard_size
    ds = _pipeline(source, start, global_batch, settings["targets"], num_classes)
    dist = strategy.experimental_distribute_dataset(ds)
    step = _make_step(strategy, instance, bool(metrics))
    measured = instance.session.replace(batch_size=global_batch)  # the metrics' passes
    buffer = _ShardBuffer(shard_size, start)
    empty = [0]  # how many all-zero maps, then the first positions of some
    bar = tqdm(
        total=source.size,
        initial=start,
        unit="img",
        desc=f"explain {settings['method']}",
        disable=not progress,
        dynamic_ncols=True,
    )

    def unreadable(last_file: int) -> None:
        """Files before `last_file` (exclusive) that did not come through were unreadable:
        refuse, naming the first, or record them (skip_bad)."""
        first = manifest["files_done"]
        if source.files is None or last_file <= first:
            return
        seen = set(arrays_files.tolist()) if arrays_files is not None else set()
        missing = [i for i in range(first, last_file) if i not in seen]
        if not missing:
            return
        if not skip_bad:
            file = source.files[missing[0]]
            raise InputError(
                f"Cannot read the image {file} ({file_error(file)}); "
                f"{len(missing)} unreadable file(s) among images {first}..{last_file - 1}. "
                "Remove or fix it, or pass skip_bad=True (--skip-bad) to skip unreadable "
                "files (they are listed in the index and the summary)."
            )
        manifest["skipped"] += [
            {"file": source.files[i], "error": file_error(source.files[i])} for i in missing
        ]

    arrays_files: np.ndarray | None = None

    def commit(part: tuple[dict, list[dict]], final: bool) -> None:
        nonlocal arrays_files
        arrays, records = part
        k = manifest["shards_done"]
        arrays_files = arrays["files"]
        if source.files is not None and int(arrays_files[0]) < manifest["files_done"]:
            raise InputError(
                f"The folder changed since this run began: {source.files[int(arrays_files[0])]}"
                " was unreadable then and reads now, so the images after it would move. "
                "Start again with overwrite=True (--overwrite)."
            )
        # files up to this shard's last (to the end of the folder for the last shard)
        unreadable(len(source.files) if final and source.files else int(arrays_files[-1]) + 1)
        if writer:
            stored = {
                "maps": arrays["maps"].astype(MAP_DTYPE),
                "targets": arrays["targets"].astype(np.int32),
                "scores": arrays["scores"].astype(np.float32),
                "labels": arrays["labels"].astype(np.int32),
                "positions": arrays["positions"].astype(np.int64),
            }
            _write(out, manifest, lambda: write_shard(out, k, stored, records), f"shard {k}")
        manifest["shards_done"] = k + 1
        manifest["images_done"] = int(arrays["positions"][-1]) + 1
        manifest["files_done"] = int(arrays_files[-1]) + 1
        manifest["complete"] = final
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        if writer:
            _write(out, manifest, lambda: write_manifest(out, manifest), "manifest.json")
        if on_shard is not None:
            on_shard(k, manifest["images_done"])

    quiet, quiet_gather = _QuietEagerStrategy(), _QuietGather()
    tf.get_logger().addFilter(quiet)
    tf.get_logger().addFilter(quiet_gather)
    try:
        for x, t, p, y, f in dist:
            if instance.runner.outputs_are_probabilities is None:  # decide eagerly, once
                first = strategy.experimental_local_results(x)[0]
                instance.runner.squash(instance.runner.forward_fn(first))
            arrays = _collect(strategy, step(x, t, p, y, f))
            real = arrays["positions"] >= 0
            arrays = {k: v[real] for k, v in arrays.items()}
            finite = arrays.pop("finite").astype(bool)
            if not finite.all():
                bad = arrays["positions"][~finite].tolist()
                raise InputError(
                    f"The images at positions {bad[:10]} contain NaN or infinite values; "
                    "clean or filter the dataset (e.g. dataset.filter(...))."
                )
            faith = {}
            if metrics:  # the step returns the images only then
                faith, _ = registry.compute(
                    metrics,
                    model=measured,
                    images=arrays["images"],
                    maps=arrays["maps"],
                    targets=arrays["targets"],
                    steps=_FAITHFULNESS_STEPS,
                )
            arrays.pop("images", None)
            records = _records(arrays, source, shard_size, border, names, faith)
            found = [r["position"] for r in records if r["empty"]]
            empty[0] += len(found)
            empty += found[: max(0, 11 - len(empty))]
            buffer.add(arrays, records)
            while (part := buffer.take()) is not None:
                commit(part, final=False)
            bar.update(len(records))
    except tf.errors.InvalidArgumentError as err:
        raise InputError(
            f"Reading or explaining the dataset failed after {buffer.next + len(buffer)} "
            f"images: {err.message.strip().splitlines()[0]}"
        ) from None
    finally:
        bar.close()
        tf.get_logger().removeFilter(quiet)
        tf.get_logger().removeFilter(quiet_gather)
    last = buffer.take(final=True)
    if last is not None:
        commit(last, final=True)
    elif manifest["images_done"] == 0:
        if source.files:
            arrays_files = None
            unreadable(len(source.files))  # refuses unless skip_bad
            raise InputError(
                f"None of the {len(source.files)} image files could be read, e.g. "
                f"{manifest['skipped'][0]['file']} ({manifest['skipped'][0]['error']})."
            )
        raise InputError("The `dataset` is empty: there is nothing to explain.")
    else:
        arrays_files = None
        if source.files is not None:
            unreadable(len(source.files))
        manifest["complete"] = True
        if writer:
            _write(out, manifest, lambda: write_manifest(out, manifest), "manifest.json")
    return empty
