"""`explain_dataset`: the front end that ties a run together.

    make_plan (check the call)  ->  open `out` on the writer (lock, manifest; `manifest`)
    -> every worker learns where to start (`workers`)  ->  ShardLoop.run (`loop`)
    -> index and summary on the writer (a barrier for the others)  ->  DatasetExplanation

See `xai_keras.scale` for the layout of `out`, resuming and distribution.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.explainers.session import Session, model_form
from xai_keras.io import ensure_writable_dir
from xai_keras.scale.loop import Feed, ShardLoop, ZeroMaps
from xai_keras.scale.manifest import (
    OutLock,
    guarded_write,
    new_manifest,
    open_out,
    remove_temporaries,
)
from xai_keras.scale.plan import Plan, make_plan, model_fingerprint
from xai_keras.scale.store import (
    MANIFEST,
    DatasetExplanation,
    read_manifest,
    write_index,
    write_manifest,
)
from xai_keras.scale.workers import Progress, Workers

__all__ = ["explain_dataset", "model_fingerprint", "run_plan"]


def explain_dataset(
    model: keras.Model | Session,
    dataset: Any,
    method: str | None = None,
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
        method: a name from `xai_keras.methods()` (not "sag"); default: the model's, as for
            `explain` (Grad-CAM; "chefer" for a vision transformer).
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
    session = Session.of(model, **model_form(locals()))
    plan = make_plan(
        session, dataset, method, layer=layer, options=options, targets=targets,
        batch_size=batch_size, shard_size=shard_size, strategy=strategy, resume=resume,
        overwrite=overwrite, skip_bad=skip_bad, metrics=metrics, border=border,
        class_names=class_names,
    )  # fmt: skip
    return run_plan(
        plan, out, resume=resume, overwrite=overwrite, skip_bad=skip_bad, summary=summary,
        log_dir=log_dir, progress=progress, on_shard=on_shard,
    )  # fmt: skip


def run_plan(
    plan: Plan,
    out: str | os.PathLike,
    *,
    resume: bool,
    overwrite: bool,
    skip_bad: bool,
    summary: bool,
    log_dir: str | os.PathLike | None,
    progress: bool,
    on_shard: Callable[[int, int], None] | None,
    feed: Feed | None = None,
) -> DatasetExplanation:
    """Run a checked call: claim and check `out`, explain from where it stands (here, or by
    an engine's workers through `feed`, see `ShardLoop.run`), then write the index and the
    summary. Every front end that writes a dataset explanation ends here."""
    out, workers = Path(out), Workers(plan.strategy)
    lock = OutLock(out)
    try:
        manifest, resuming = _start(plan, out, workers, lock, resume, overwrite)
        zeros = ZeroMaps()
        if not manifest["complete"]:
            zeros = _explain(
                plan, out, manifest, resuming, workers.writer, progress, on_shard, skip_bad, feed
            )
        result = workers.chief_step(
            lambda: _finish(out, manifest, summary, log_dir),
            f"The chief worker failed to write the index and summary of {out}; its error says why.",
        )
    finally:
        lock.release()
    if not workers.writer:
        result = _read_chiefs(out)
    _warn(type(plan.method), zeros, manifest["skipped"])
    return result


def _open(out: Path, settings: dict, lock: OutLock, resume: bool, overwrite: bool) -> dict | None:
    """On the writer: claim `out` and check it against this call (see `open_out`)."""
    try:
        if out.exists() and not out.is_dir():
            raise InputError(
                "The `out` argument must be a folder (new, empty or holding a run). "
                f"Received: out={str(out)!r}, which is a file."
            )
        ensure_writable_dir(out)
        lock.acquire()  # before touching anything: temporaries may be another run's
        remove_temporaries(out)
        return open_out(out, settings, resume, overwrite)
    except BaseException:
        lock.release()
        raise


def _start(
    plan: Plan, out: Path, workers: Workers, lock: OutLock, resume: bool, overwrite: bool
) -> tuple[dict, bool]:
    """The manifest this worker continues (or starts) from, written first on the writer."""
    manifest = workers.chief_step(
        lambda: _open(out, plan.settings, lock, resume, overwrite),
        f"The chief worker refused to start explain_dataset in {out}; its error says why.",
    )
    progress = workers.start(Progress.of(manifest))
    if not workers.writer and progress.shards:
        manifest = new_manifest(plan.settings, progress.shards, plan.shard_size, progress.files)
        manifest["complete"] = progress.complete
    resuming = manifest is not None
    manifest = manifest if resuming else new_manifest(plan.settings)
    manifest.setdefault("files_done", manifest["images_done"])
    manifest.setdefault("skipped", [])
    manifest.update(
        class_names=plan.class_names,
        has_labels=plan.source.has_labels,
        batch_size=plan.batch_size,
        replicas=plan.strategy.num_replicas_in_sync,
    )
    if workers.writer:  # first, so the folder is known to be ours (and as a probe of the disk)
        _write_manifest(out, manifest)
    return manifest, resuming


def _write_manifest(out: Path, manifest: dict) -> None:
    guarded_write(out, manifest, lambda: write_manifest(out, manifest), "manifest.json")


def _explain(
    plan: Plan,
    out: Path,
    manifest: dict,
    resuming: bool,
    writer: bool,
    progress: bool,
    on_shard: Callable[[int, int], None] | None,
    skip_bad: bool,
    feed: Feed | None,
) -> ZeroMaps:
    """The loop; a run that fails before its first shard leaves no run behind."""
    try:
        return ShardLoop(plan, out, manifest, writer, skip_bad, on_shard).run(progress, feed)
    except BaseException:
        if writer and not resuming and manifest["shards_done"] == 0:
            (out / MANIFEST).unlink(missing_ok=True)  # nothing done: leave no run
        raise


def _finish(out: Path, manifest: dict, summary: bool, log_dir: Any) -> DatasetExplanation:
    """On the writer: the index of all shards, then the summary."""
    guarded_write(
        out,
        manifest,
        lambda: write_index(out, manifest["shards_done"], manifest["skipped"]),
        "index.jsonl",
    )
    result = DatasetExplanation(out)
    if summary:
        from xai_keras.scale.summary import summarize

        guarded_write(
            out,
            manifest,
            lambda: setattr(result, "_summary", summarize(result, out, log_dir)),
            "the summary",
        )
    return result


def _read_chiefs(out: Path) -> DatasetExplanation:
    """Another worker's result: the chief's manifest, complete only if it says so."""
    if read_manifest(out) is None:
        raise InputError(
            f"This worker finished its part, but {out / MANIFEST} written by the chief is "
            "not visible here: every worker must be given the same `out` on a file system "
            "they all share."
        )
    return DatasetExplanation(out)


def _warn(method: type, zeros: ZeroMaps, skipped: Sequence[dict]) -> None:
    """Warn the caller of the front end (`_warn` <- `run_plan` <- front end <- caller)."""
    if zeros.count:
        warnings.warn(
            f"{method.name}: {zeros.count} map(s) are all zero ({method.zero_map_cause}), e.g. "
            f"at positions {zeros.positions}; they are stored as zeros.",
            RuntimeWarning,
            stacklevel=4,
        )
    if skipped:
        warnings.warn(
            f"{len(skipped)} unreadable image file(s) skipped (skip_bad=True), e.g. "
            f"{skipped[0]['file']} ({skipped[0]['error']}); they are listed in index.jsonl and "
            "the summary.",
            RuntimeWarning,
            stacklevel=4,
        )
