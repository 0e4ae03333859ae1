"""`explain_with_ray`: `explain_dataset` on a Ray cluster, with Ray Data workers.

One engine behind two front ends. The driver (the calling process) checks the call with the
same `make_plan` as `explain_dataset`, claims `out` and writes every file through the same
`run_plan` and `ShardLoop` (lock, manifest, shards, resume, index, summary); only the model's
work moves: a Ray Data `map_batches` over ranges of items (array rows or image files), run by
a pool of actors (`_Worker`, a callable class) that each load the model once, build the
driver's plan again from the same arguments (and check that it is the same plan: same model
weights, method, layer, options, dataset size) and explain their range with the same
`BatchExplainer`. The driver numbers the rows as they come back in dataset order, so the
output folder is exactly the one `explain_dataset` writes (same maps, records, summary).

    driver: make_plan -> run_plan: open out -> ShardLoop(feed) -> index, summary
    feed:   ray.data.from_items(ranges).map_batches(_Worker, ActorPoolStrategy(size=workers))
    worker: load_model_file -> make_plan -> source.items(first, stop) -> pipeline
            -> BatchExplainer -> (arrays, metrics), pickled into one row per range

Why Ray Data and not Apache Beam: beside tensorflow-cpu 2.21 / keras 3.15 / protobuf 7, `pip
install apache-beam` (2.78) would downgrade protobuf to 6.x (TensorFlow's own requirement) and
python-dateutil, while `ray[data]` (2.60) adds ray, pandas, pyarrow and msgpack and replaces
nothing (see docs/engine.md).

Ray is an optional dependency (`pip install 'xai-keras[ray]'`), imported on the first call.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from xai_keras.checks import check_positive_int
from xai_keras.errors import InputError, XaiKerasError
from xai_keras.explainers.session import Session
from xai_keras.models import load_model_file
from xai_keras.scale.loop import BatchExplainer, ShardLoop, pipeline
from xai_keras.scale.manifest import settings_diff
from xai_keras.scale.plan import Plan, make_plan
from xai_keras.scale.run import explain_dataset, run_plan
from xai_keras.scale.store import DatasetExplanation

__all__ = ["explain_with_ray"]

# Which of explain_dataset's arguments go where.
_SESSION = ("output", "head", "score", "inputs", "reshape", "value_range")
_PLAN = ("layer", "targets", "batch_size", "shard_size", "resume", "overwrite", "skip_bad",
         "metrics", "border", "class_names", "options")  # fmt: skip
_RUN = ("resume", "overwrite", "skip_bad", "summary", "log_dir", "progress", "on_shard")

_KINDS = {"dataset": "a tf.data.Dataset"}
_INSTALL = "pip install 'xai-keras[ray]' (or pip install 'ray[data]')"


def _ray() -> Any:
    """The `ray` module with Ray Data, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(f"explain_with_ray needs Ray Data: {_INSTALL}.") from None
    return ray


@dataclasses.dataclass
class _Job:
    """What every process needs to build the same plan (pickled to the workers)."""

    model_path: str
    unsafe: bool
    method: str
    session_args: dict
    plan_args: dict
    folder: str | None  # the dataset, when it is a folder (arrays travel as Ray objects)
    threads: int | None  # TensorFlow's thread pools in a worker
    settings: dict = dataclasses.field(default_factory=dict)  # the driver's plan's

    def plan(self, model: Any, dataset: Any) -> Plan:
        session = Session.of(model, **self.session_args)
        return make_plan(session, dataset, self.method, strategy=None, **self.plan_args)


def _arguments(dataset: Any, method: str, out: Any, kwargs: dict) -> dict:
    """explain_dataset's arguments, with its defaults, from the keywords of a call."""
    if "strategy" in kwargs:
        raise InputError(
            "explain_with_ray spreads the work over Ray workers (`workers=`); `strategy` is "
            "explain_dataset's, for tf.distribute on one machine or several."
        )
    signature = inspect.signature(explain_dataset)
    try:
        bound = signature.bind(None, dataset, method, out=out, **kwargs)
    except TypeError as err:
        raise InputError(
            f"explain_with_ray: {err}; it takes explain_dataset's arguments."
        ) from None
    bound.apply_defaults()
    return dict(bound.arguments)


def _arrays(dataset: Any) -> tuple[Any, Any] | None:
    """(images, labels or None) for an array dataset, else None (a folder, a stream)."""
    if isinstance(dataset, tuple) and len(dataset) == 2:
        return dataset[0], dataset[1]
    if isinstance(dataset, np.ndarray) or (
        hasattr(dataset, "__array__") and not isinstance(dataset, (str, os.PathLike))
    ):
        return dataset, None
    return None


class _Worker:
    """A Ray Data actor: loads the model once, rebuilds the driver's plan, explains ranges.

    Called by `map_batches` with rows `{"first", "stop"}` (item ranges of one batch each);
    returns one row per range: `{"first", "result"}`, where `result` is the pickled
    `(arrays, metrics)` of `BatchExplainer` for the readable items of the range.
    """

    def __init__(self, job: _Job, images: Any = None, labels: Any = None):
        if job.threads:  # before TensorFlow starts its thread pools (this is a new process)
            tf.config.threading.set_intra_op_parallelism_threads(job.threads)
            tf.config.threading.set_inter_op_parallelism_threads(job.threads)
        images, labels = _resolve(images), _resolve(labels)
        dataset = job.folder if job.folder is not None else images
        if labels is not None:
            dataset = (images, labels)
        self.plan = job.plan(load_model_file(job.model_path, job.unsafe), dataset)
        diff = settings_diff(job.settings, self.plan.settings)
        if diff:
            raise InputError(
                f"A Ray worker on {socket.gethostname()} does not see what the driver sees ("
                + "; ".join(diff)
                + "): give every node the same model file and dataset (same path, same "
                "contents) and the same xai-keras version."
            )
        self.explain = BatchExplainer(self.plan)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        firsts, stops = batch["first"].tolist(), batch["stop"].tolist()
        results = [pickle.dumps(self.range(a, b), protocol=5) for a, b in zip(firsts, stops)]
        return {"first": np.asarray(firsts, np.int64), "result": np.array(results, object)}

    def range(self, first: int, stop: int) -> tuple[dict, dict] | None:
        """`BatchExplainer` of items [first, stop) (one batch); None if none was readable."""
        plan = self.plan
        part = dataclasses.replace(plan.source, elements=plan.source.items(first, stop),
                                   indexed=True)  # fmt: skip
        batches = pipeline(part, 0, plan.global_batch, plan.settings["targets"], plan.num_classes)
        try:
            explained = [self.explain(batch) for batch in batches]
        except tf.errors.InvalidArgumentError as err:
            raise InputError(
                f"Reading or explaining the dataset failed in items {first}..{stop - 1}: "
                f"{err.message.strip().splitlines()[0]}"
            ) from None
        return explained[0] if explained else None


def _resolve(value: Any) -> Any:
    """A Ray object reference as its value (a read-only view of the object store)."""
    if value is not None and type(value).__name__ == "ObjectRef":
        return _ray().get(value)
    return value


def _worker_error(err: BaseException) -> Exception:
    """The one line to raise for a failure a worker reported through Ray: our own error as
    the worker raised it (Ray wraps it in classes of its own), else the last line of what
    Ray says."""
    todo, seen = [err], set()
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, XaiKerasError) and type(e).__module__ == XaiKerasError.__module__:
            return type(e)(str(e).strip().splitlines()[0])  # Ray Data appends its advice
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return InputError(
        f"A Ray worker failed ({type(err).__name__}: {lines[-1] if lines else ''}); "
        "its log is in the Ray session's logs folder (/tmp/ray/session_latest/logs)."
    )


class _RayFeed:
    """The explained batches for a `ShardLoop`, from Ray Data workers, in dataset order.

    Starts a local Ray instance on first use when none is running (and `address` is None),
    and stops it in `close`; a running instance (`ray.init(address=...)` before the call) is
    used as it is and left running.
    """

    def __init__(self, job: _Job, data: tuple | None, size: int, options: dict):
        self.job, self.data, self.size, self.options = job, data, size, options
        self.started = False
        self.batches: Any = None

    def _init(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            address, workers = self.options["address"], self.options["workers"]
            if address is not None:
                ray.init(address=address, logging_level=logging.WARNING)
            else:  # the workers import the package the driver runs
                root = str(Path(__file__).resolve().parents[2])
                path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
                ray.init(
                    num_cpus=workers * self.options["cpus_per_worker"],
                    num_gpus=workers * self.options["gpus_per_worker"] or None,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": path}},
                )
            self.started = True
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        return ray

    def __call__(self, loop: ShardLoop) -> Iterator[tuple[dict, dict]]:
        self.batches = self._batches(loop)
        return self.batches

    def _batches(self, loop: ShardLoop) -> Iterator[tuple[dict, dict]]:
        ray = self._init()
        first, step = loop.manifest["files_done"], self.job.plan_args["batch_size"]
        ranges = [{"first": a, "stop": min(a + step, self.size)}
                  for a in range(first, self.size, step)]  # fmt: skip
        loop.manifest["engine"] = {"name": "ray", "version": ray.__version__,
                                   "workers": self.options["workers"]}  # fmt: skip
        if not ranges:
            return
        blocks = iter(self._dataset(ray, ranges).iter_batches(batch_size=None,
                                                              batch_format="numpy"))  # fmt: skip
        expected = iter(ranges)
        try:
            for block in blocks:
                for a, blob in zip(block["first"].tolist(), block["result"]):
                    if a != next(expected)["first"]:
                        raise RuntimeError(f"Ray Data returned item {a} out of order.")
                    explained = pickle.loads(blob)
                    if explained is not None:
                        yield explained
        except Exception as err:  # Ray's wrapping of a worker's failure (or our own error)
            if type(err).__module__ == XaiKerasError.__module__:
                raise
            raise _worker_error(err) from None
        finally:
            getattr(blocks, "close", lambda: None)()  # stops the workers when we stop early

    def _dataset(self, ray: Any, ranges: list[dict]) -> Any:
        """The Ray Data pipeline: one block per range, explained by the actor pool."""
        refs = {}
        if self.data is not None:
            refs = {"images": ray.put(np.asarray(self.data[0]))}
            if self.data[1] is not None:
                refs["labels"] = ray.put(np.asarray(self.data[1]))
        ds = ray.data.from_items(ranges, override_num_blocks=len(ranges))  # one task each
        ds.context.execution_options.preserve_order = True
        ds.context.enable_progress_bars = False
        ds.context.raise_original_map_exception = True  # a worker's InputError, not Ray's
        return ds.map_batches(
            _Worker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.options["workers"]),
            num_cpus=self.options["cpus_per_worker"],
            num_gpus=self.options["gpus_per_worker"] or None,
            fn_constructor_kwargs={"job": self.job, **refs},
        )

    def close(self) -> None:
        """Stop what is still running: the pipeline, and the Ray instance if we started it."""
        if self.batches is not None:
            self.batches.close()
        if self.started:
            _ray().shutdown()
            self.started = False


def explain_with_ray(
    model_path: str | os.PathLike,
    dataset: Any,
    method: str = "gradcam",
    *,
    out: str | os.PathLike,
    workers: int = 2,
    cpus_per_worker: int = 1,
    gpus_per_worker: float = 0,
    address: str | None = None,
    unsafe: bool = False,
    **kwargs: Any,
) -> DatasetExplanation:
    """Explain every image of a dataset with a pool of Ray Data workers, into the same output
    folder `explain_dataset` writes (same maps, records, index and summary; resumable).

    Each worker is a process that loads the model from `model_path` once and explains whole
    batches; this process checks the call, reads nothing but the results, and writes every
    file (one writer: the lock, the manifest and resuming work as in `explain_dataset`). A
    worker that dies is restarted by Ray and its batch is run again, so no image is lost or
    written twice.

    Args:
        model_path: a saved `.keras` model, readable at this path on every node.
        dataset: an image folder (read by the workers themselves: on a cluster, a path every
            node sees), a numpy array of images or an `(images, labels)` pair of arrays (put
            once in Ray's object store). A `tf.data.Dataset` can only be read from its start,
            so it is refused: use `explain_dataset(..., strategy=...)`.
        method: a name from `xai_keras.methods()` (not "sag").
        out: the output folder, on a file system this process writes.
        workers: Ray actors explaining batches at the same time.
        cpus_per_worker: CPUs each worker asks Ray for; TensorFlow's thread pools in the
            worker get as many threads (so workers do not oversubscribe the cores).
        gpus_per_worker: GPUs each worker asks Ray for (0: none).
        address: a running Ray cluster to use (e.g. "auto" or "ray://head:10001"); None uses
            the instance `ray.init` started in this process, or starts a local one with
            `workers * cpus_per_worker` CPUs and stops it at the end.
        unsafe: load the model with Keras' safe mode off (only for a file you trust: safe
            mode refuses the code a Lambda layer carries).
        **kwargs: every keyword argument of `explain_dataset` but `strategy` (targets, layer,
            batch_size, shard_size, metrics, output, head, score, inputs, reshape,
            value_range, resume, overwrite, skip_bad, border, class_names, summary, log_dir,
            progress, on_shard, and the method's options), with its meaning and default.
            `score` and `reshape` functions are pickled to the workers.

    Returns:
        A `DatasetExplanation` of `out`, as `explain_dataset` returns.

    Raises:
        InputError: as `explain_dataset` (checked here before any worker starts), Ray Data
            missing, a `tf.data.Dataset`, or a worker that sees another model or dataset than
            this process (different weights or files on its node).

    Example:
        >>> result = explain_with_ray("model.keras", "images/", "gradcam", out="runs/gc",
        ...                           workers=2, batch_size=64)
        >>> result.maps[0].shape, result.index[0]["peak_region"]
    """
    args = _arguments(dataset, method, out, kwargs)
    for name, value in (("workers", workers), ("cpus_per_worker", cpus_per_worker)):
        check_positive_int(value, name)
    if isinstance(gpus_per_worker, bool) or not (
        isinstance(gpus_per_worker, (int, float)) and gpus_per_worker >= 0
    ):
        raise InputError(
            "`gpus_per_worker` must be a number >= 0 (a fraction shares a GPU). Received: "
            f"gpus_per_worker={gpus_per_worker!r}."
        )
    _ray()  # before loading anything: a missing engine is one line
    folder = str(dataset) if isinstance(dataset, (str, os.PathLike)) else None
    job = _Job(
        model_path=str(model_path),
        unsafe=unsafe,
        method=method,
        session_args={k: args[k] for k in _SESSION},
        plan_args={k: args[k] for k in _PLAN},
        folder=folder,
        threads=cpus_per_worker,
    )
    plan = job.plan(load_model_file(model_path, unsafe), dataset)
    if plan.source.items is None or plan.source.size is None:
        raise InputError(
            "explain_with_ray reads an image folder or arrays of images, of which each worker "
            f"reads its own part; this `dataset` is {_KINDS.get(plan.source.kind, 'a stream')}, "
            "which can only be "
            "read from its start. Use explain_dataset(..., strategy=...) for it, or write the "
            "images to a folder or a .npy array."
        )
    job.settings = plan.settings
    options = {"workers": workers, "cpus_per_worker": cpus_per_worker,
               "gpus_per_worker": gpus_per_worker, "address": address}  # fmt: skip
    feed = _RayFeed(job, _arrays(dataset) if folder is None else None, plan.source.size, options)
    try:
        return run_plan(plan, out, feed=feed, **{k: args[k] for k in _RUN})
    finally:
        feed.close()
