"""The run loop of `explain_dataset`: stream the dataset through the method into shards.

Per global batch (the last one padded, so every compiled kernel sees one shape):

    dataset -> (image, target, position, label, file) batches -> strategy.run(attribute +
    resize + normalise) on every replica -> gather by position -> per-image records ->
    `ShardBuffer` -> shard-NNNNN.npz + .jsonl -> manifest.json

Only the current shard's maps are held in memory, so memory stays flat however large the
dataset is. `ShardLoop.run` updates the manifest as shards are committed and returns the
all-zero maps it met (`ZeroMaps`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError, WorkerLostError
from xai_keras.evaluate import registry
from xai_keras.explainers.api import finish_maps
from xai_keras.explainers.base import Method
from xai_keras.scale.manifest import guarded_write
from xai_keras.scale.metrics import map_metrics
from xai_keras.scale.plan import Plan
from xai_keras.scale.store import MAP_DTYPE, write_manifest, write_shard
from xai_keras.scale.workers import collect, quiet_strategy_logs
from xai_keras.sources import Source, file_error

__all__ = [
    "BatchExplainer",
    "Feed",
    "ShardBuffer",
    "ShardLoop",
    "ZeroMaps",
    "make_step",
    "pipeline",
    "records",
]

_FAITHFULNESS_STEPS = 20

# What a collective op raises when a peer worker is gone (killed, preempted, unreachable).
_PEER_LOST = (
    tf.errors.UnavailableError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.DeadlineExceededError,
)


def _peer_cause(message: str) -> str:
    """The line of a collective op's error that says why (not TensorFlow's node trace)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    cause = next((line for line in lines if "aborted by" in line), lines[0] if lines else "")
    return cause[:160]


# An engine's stream of explained batches for a loop (see `ShardLoop.run`).
Feed = Callable[["ShardLoop"], Iterable[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]]

# What `explain` does to raw maps, compiled here into the distributed step.
_finish = tf.function(finish_maps)


def make_step(strategy: tf.distribute.Strategy, method: Method, with_images: bool) -> Callable:
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


def pipeline(
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

    def pad(x, *columns):
        missing = global_batch - tf.shape(x)[0]
        x = tf.pad(x, [[0, missing]] + [[0, 0]] * (len(x.shape) - 1))
        columns = [tf.pad(c, [[0, missing]], constant_values=-1) for c in columns]
        return (
            tf.ensure_shape(x, (global_batch, *x.shape[1:])),
            *[tf.ensure_shape(c, (global_batch,)) for c in columns],
        )

    ds = ds.enumerate(start=start).map(with_target).batch(global_batch).map(pad)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(2)


class ShardBuffer:
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


def records(
    arrays: dict[str, np.ndarray],
    source: Source,
    shard_size: int,
    border: float,
    class_names: Sequence[str] | None,
    faithfulness: dict[str, np.ndarray],
) -> list[dict]:
    """One JSON-able record per real image of a batch."""
    stats = map_metrics(arrays["maps"], border)
    rows = []
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
        rows.append(r)
    return rows


@dataclass
class ZeroMaps:
    """The all-zero maps a run met: how many, and the positions of the first few."""

    count: int = 0
    positions: list[int] = field(default_factory=list)
    keep: int = 10

    def add(self, found: Sequence[int]) -> None:
        self.count += len(found)
        self.positions += list(found[: max(0, self.keep - len(self.positions))])


def _stored(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A shard's arrays as written (maps in MAP_DTYPE)."""
    return {
        "maps": arrays["maps"].astype(MAP_DTYPE),
        "targets": arrays["targets"].astype(np.int32),
        "scores": arrays["scores"].astype(np.float32),
        "labels": arrays["labels"].astype(np.int32),
        "positions": arrays["positions"].astype(np.int64),
    }


class BatchExplainer:
    """The model's half of the loop: one padded batch in, its real rows' maps, targets,
    scores, labels, file indices, finiteness and per-image metrics out, as numpy arrays.

    `explain_dataset` calls it in its own process; a distributed engine calls it in each of
    its workers (`xai_keras.scale.ray_engine`), so both compute exactly the same thing.
    """

    def __init__(self, plan: Plan):
        self.plan, self.method = plan, plan.method
        self.metrics = plan.settings["metrics"]
        self.step = make_step(plan.strategy, plan.method, bool(self.metrics))
        self.measured = self.method.session.replace(batch_size=plan.global_batch)  # metrics

    def _decide_probabilities(self, x: Any) -> None:
        """Whether the outputs are probabilities is decided eagerly, once, on real images."""
        runner = self.method.runner
        if runner.outputs_are_probabilities is None:
            first = self.plan.strategy.experimental_local_results(x)[0]
            runner.squash(runner.forward_fn(first))

    def __call__(self, batch: tuple) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """`(arrays, metrics)` of one batch of `pipeline` (distributed by the plan's
        strategy); metrics are skipped where an image is not finite (the rows are refused)."""
        self._decide_probabilities(batch[0])
        arrays = collect(self.plan.strategy, self.step(*batch))
        real = arrays["positions"] >= 0
        arrays = {k: v[real] for k, v in arrays.items()}
        faith = {}
        if self.metrics and arrays["finite"].all():  # the step returns the images only then
            faith, _ = registry.compute(
                self.metrics,
                model=self.measured,
                images=arrays["images"],
                maps=arrays["maps"],
                targets=arrays["targets"],
                steps=_FAITHFULNESS_STEPS,
            )
        arrays.pop("images", None)
        return arrays, faith


class ShardLoop:
    """The streaming loop of one run, from the shard `manifest` says is next to the end.

    Updates `manifest` as shards are committed (and writes it, on the writer).
    """

    def __init__(
        self,
        plan: Plan,
        out: Path,
        manifest: dict,
        writer: bool,
        skip_bad: bool = False,
        on_shard: Callable[[int, int], None] | None = None,
    ):
        self.plan, self.out, self.manifest = plan, out, manifest
        self.writer, self.skip_bad, self.on_shard = writer, skip_bad, on_shard
        self.source = plan.source
        self.start = manifest["shards_done"] * plan.shard_size
        self.buffer = ShardBuffer(plan.shard_size, self.start)
        self.zeros = ZeroMaps()

    # -- writing ----------------------------------------------------------------------------
    def _write(self, write: Callable[[], Any], what: str) -> None:
        if self.writer:
            guarded_write(self.out, self.manifest, write, what)

    def _write_manifest(self) -> None:
        self._write(lambda: write_manifest(self.out, self.manifest), "manifest.json")

    def unreadable(self, last_file: int, seen: np.ndarray | None) -> None:
        """Files before `last_file` (exclusive) that are not in `seen` did not come through:
        refuse, naming the first, or record them (skip_bad)."""
        files, first = self.source.files, self.manifest["files_done"]
        if files is None or last_file <= first:
            return
        seen_set = set(seen.tolist()) if seen is not None else set()
        missing = [i for i in range(first, last_file) if i not in seen_set]
        if not missing:
            return
        if not self.skip_bad:
            file = files[missing[0]]
            raise InputError(
                f"Cannot read the image {file} ({file_error(file)}); "
                f"{len(missing)} unreadable file(s) among images {first}..{last_file - 1}. "
                "Remove or fix it, or pass skip_bad=True (--skip-bad) to skip unreadable "
                "files (they are listed in the index and the summary)."
            )
        self.manifest["skipped"] += [
            {"file": files[i], "error": file_error(files[i])} for i in missing
        ]

    def commit(self, part: tuple[dict, list[dict]], final: bool) -> None:
        """Write one shard (its rows are all here) and the manifest that counts it."""
        arrays, rows = part
        manifest, files = self.manifest, self.source.files
        k, first_file = manifest["shards_done"], int(arrays["files"][0])
        if files is not None and first_file < manifest["files_done"]:
            raise InputError(
                f"The folder changed since this run began: {files[first_file]} was unreadable "
                "then and reads now, so the images after it would move. Start again with "
                "overwrite=True (--overwrite)."
            )
        # files up to this shard's last (to the end of the folder for the last shard)
        last = len(files) if final and files else int(arrays["files"][-1]) + 1
        self.unreadable(last, arrays["files"])
        stored = _stored(arrays)
        self._write(lambda: write_shard(self.out, k, stored, rows), f"shard {k}")
        manifest["shards_done"] = k + 1
        manifest["images_done"] = int(arrays["positions"][-1]) + 1
        manifest["files_done"] = int(arrays["files"][-1]) + 1
        manifest["complete"] = final
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._write_manifest()
        if self.on_shard is not None:
            self.on_shard(k, manifest["images_done"])

    # -- explaining -------------------------------------------------------------------------
    def accept(
        self, arrays: dict[str, np.ndarray], faith: dict[str, np.ndarray], renumber: bool = False
    ) -> int:
        """Add one explained batch (a `BatchExplainer` result) to the buffer and commit the
        shards it completes; return how many rows it had. `renumber`: the rows are the next
        images of the dataset, numbered here (an engine's workers do not know how many
        unreadable files came before their part)."""
        if renumber:
            first = self.buffer.next + len(self.buffer)
            arrays["positions"] = np.arange(first, first + len(arrays["positions"]))
        finite = arrays.pop("finite").astype(bool)
        if not finite.all():
            bad = arrays["positions"][~finite].tolist()
            raise InputError(
                f"The images at positions {bad[:10]} contain NaN or infinite values; "
                "clean or filter the dataset (e.g. dataset.filter(...))."
            )
        plan = self.plan
        rows = records(
            arrays, self.source, plan.shard_size, plan.settings["border"], plan.class_names, faith
        )
        self.zeros.add([r["position"] for r in rows if r["empty"]])
        self.buffer.add(arrays, rows)
        while (part := self.buffer.take()) is not None:
            self.commit(part, final=False)
        return len(rows)

    def _stream(self, bar: Any) -> None:
        plan = self.plan
        ds = pipeline(
            self.source, self.start, plan.global_batch, plan.settings["targets"], plan.num_classes
        )
        dist = plan.strategy.experimental_distribute_dataset(ds)
        explainer = BatchExplainer(plan)
        try:
            with quiet_strategy_logs():
                for batch in dist:
                    bar.update(self.accept(*explainer(batch)))
        except tf.errors.InvalidArgumentError as err:
            raise InputError(
                f"Reading or explaining the dataset failed after "
                f"{self.buffer.next + len(self.buffer)} images: "
                f"{err.message.strip().splitlines()[0]}"
            ) from None
        except _PEER_LOST as err:  # a collective op lost a worker: stop, say how to resume
            done = self.manifest["images_done"]
            raise WorkerLostError(
                "A worker of the multi-worker cluster stopped while "
                f"explaining ({_peer_cause(err.message)}); the "
                f"{done} image(s) committed to {self.out} are kept: start every worker again "
                "with resume=True (xai-keras explain-dataset --resume) to finish."
            ) from None

    def _finish(self) -> None:
        """Commit what is left, or say why nothing was explained."""
        manifest, files = self.manifest, self.source.files
        last = self.buffer.take(final=True)
        if last is not None:
            self.commit(last, final=True)
        elif manifest["images_done"] == 0:
            if files:
                self.unreadable(len(files), None)  # refuses unless skip_bad
                skipped = manifest["skipped"][0]
                raise InputError(
                    f"None of the {len(files)} image files could be read, e.g. "
                    f"{skipped['file']} ({skipped['error']})."
                )
            raise InputError("The `dataset` is empty: there is nothing to explain.")
        else:
            if files is not None:
                self.unreadable(len(files), None)
            manifest["complete"] = True
            self._write_manifest()

    def run(self, progress: bool = True, feed: Feed | None = None) -> ZeroMaps:
        """Explain the images from the next shard on; return the all-zero maps met.

        `feed(loop)`, where given, yields the explained batches (`BatchExplainer` results)
        from the image `loop.start` (the next file: `loop.manifest["files_done"]`) on, in
        dataset order, computed elsewhere (an engine's workers); else the plan's strategy
        explains them here."""
        from tqdm import tqdm

        bar = tqdm(
            total=self.source.size,
            initial=self.start,
            unit="img",
            desc=f"explain {self.plan.settings['method']}",
            disable=not progress,
            dynamic_ncols=True,
        )
        try:
            if feed is None:
                self._stream(bar)
            else:
                for arrays, faith in feed(self):
                    bar.update(self.accept(arrays, faith, renumber=True))
        finally:
            bar.close()
        self._finish()
        return self.zeros
