"""The multi-worker handshake of `explain_dataset`: who writes, and what every worker learns
from the writer.

Under `MultiWorkerMirroredStrategy` every worker runs the same call; only the chief (or
worker 0 where there is no chief) touches `out`. Two collectives keep the workers in step:
before the loop every worker learns where the chief resumes (`Workers.start`), and after it
every worker waits until the chief's index and summary are written (`Workers.chief_step`).
With one process (any other strategy) both are plain calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError

__all__ = ["Progress", "Workers", "collect", "quiet_strategy_logs"]


class _QuietEagerStrategy(logging.Filter):
    """Methods that loop in Python run `strategy.run` eagerly on purpose (see
    `loop.make_step`); TensorFlow's advice to wrap it in a tf.function is noise there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eagerly has significant overhead" not in record.getMessage()


class _QuietGather(logging.Filter):
    """Gathering across workers eagerly builds a small tf.function per call, by TensorFlow's
    design; its retracing warning says nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "compute_gathered_values" not in record.getMessage()


@contextmanager
def quiet_strategy_logs(gather: bool = True) -> Iterator[None]:
    """Silence TensorFlow's two log lines that eager `strategy.run`/`gather` calls provoke."""
    filters = [_QuietEagerStrategy()] + ([_QuietGather()] if gather else [])
    for f in filters:
        tf.get_logger().addFilter(f)
    try:
        yield
    finally:
        for f in filters:
            tf.get_logger().removeFilter(f)


@dataclass(frozen=True)
class Progress:
    """Where a run stands: shards committed, whether it is complete, and (for folders) how
    many files, readable or not, the committed shards cover."""

    shards: int = 0
    complete: bool = False
    files: int = 0

    @classmethod
    def of(cls, manifest: dict | None) -> Progress:
        if manifest is None:
            return cls()
        return cls(
            shards=manifest["shards_done"],
            complete=bool(manifest["complete"]),
            files=manifest.get("files_done", manifest["images_done"]),
        )


def collect(strategy: tf.distribute.Strategy, values: dict) -> dict[str, np.ndarray]:
    """Per-replica values as numpy arrays (replica order; reordered later by position)."""
    first = next(iter(values.values()))
    if len(strategy.experimental_local_results(first)) < strategy.num_replicas_in_sync:
        # other workers hold the rest (every worker gathers the same keys in the same order)
        return {k: np.asarray(strategy.gather(v, axis=0)) for k, v in values.items()}
    return {
        k: np.concatenate([np.asarray(v) for v in strategy.experimental_local_results(value)])
        for k, value in values.items()
    }


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


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


class Workers:
    """This process's part in a run: whether it writes, and the collectives with the others."""

    def __init__(self, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        self.writer = _is_writer(strategy)
        self.multi = _multi_worker(strategy)

    def from_writer(self, values: Sequence[int]) -> list[int]:
        """Every worker gets the writer's `values` (a collective: every worker must call it at
        the same point)."""
        row = tf.constant([int(self.writer), *[int(v) for v in values]], tf.int64)
        with quiet_strategy_logs(gather=False):  # a handful of eager calls per run
            rows = self.strategy.gather(self.strategy.run(lambda: tf.identity(row)), axis=0)
        rows = np.asarray(rows).reshape(-1, len(values) + 1)
        chief = rows[rows[:, 0] == 1]
        return chief[0, 1:].tolist() if len(chief) else [0] * len(values)

    def chief_step(self, step: Callable[[], Any], refused: str) -> Any:
        """Run `step` on the writer only and return its result. With several workers it is
        also a barrier: an error of the chief's is raised there and, as `refused`, on every
        other worker, once all have arrived."""
        failure, result = None, None
        if self.writer:
            try:
                result = step()
            except BaseException as err:
                if not self.multi:
                    raise
                failure = err
        if self.multi:
            (ok,) = self.from_writer([failure is None])
            if failure is not None:
                raise failure
            if not ok:
                raise InputError(refused)
        return result

    def start(self, progress: Progress) -> Progress:
        """Where every worker starts: the writer's `progress` (read from its manifest)."""
        if not self.multi:
            return progress
        shards, complete, files = self.from_writer(
            [progress.shards, progress.complete, progress.files]
        )
        return Progress(shards, bool(complete), files)
