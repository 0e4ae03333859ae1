"""Train the project's CNN on several devices by running the normal `train` under a strategy.

Keras 3 ties a model to the strategy in scope when it is built, and `fit` then splits each
batch across the strategy's replicas. `train` builds, compiles (or reloads, when resuming) and
fits the model in one go, so entering `strategy.scope()` around it is all that is needed: no
second training path to keep in sync with the first.

Several workers (`MultiWorkerMirroredStrategy`): Keras 3's TensorFlow trainer fails inside
`fit` there (keras-team/keras#20585, open): its first-batch build reduces the whole (x, y)
batch structure with one `strategy.reduce` ("Attempt to convert a value (PerReplica...)"),
and its per-step log reduction averages scalar losses and metrics over `axis=0`. While
`train_distributed` runs under such a strategy, `multi_worker_fit_fixes` replaces those two
steps with what they mean to do (build from this worker's first local batch; average each
log value across replicas with `axis=None`), and restores Keras afterwards. Two workers then
train exactly as one process does (tested on 127.0.0.1). The fixes are checked against the
Keras internals they replace; if those change, a clear error says so instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from xai_keras.config import Config
from xai_keras.errors import InputError
from xai_keras.training import TrainResult, train

__all__ = ["multi_worker_fit_fixes", "train_distributed"]

_UPSTREAM = "https://github.com/keras-team/keras/issues/20585"


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


@contextlib.contextmanager
def multi_worker_fit_fixes() -> Iterator[None]:
    """Patch the two steps of Keras 3's TensorFlow trainer that fail under
    MultiWorkerMirroredStrategy (keras-team/keras#20585) for the duration of the block."""
    try:
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer as tf_trainer

        trainer_cls = tf_trainer.TensorFlowTrainer
        original_build = trainer_cls._maybe_symbolic_build
        original_reduce = tf_trainer.reduce_per_replica
        is_multi_worker = tf_trainer._collective_all_reduce_multi_worker
    except (ImportError, AttributeError):
        raise InputError(
            f"train_distributed cannot run MultiWorkerMirroredStrategy with Keras "
            f"{keras.__version__}: Keras 3's fit fails there ({_UPSTREAM}) and the fix "
            "xai_keras applies does not fit this Keras version. Use MirroredStrategy (one "
            "machine) or the Keras version this project pins."
        ) from None

    def build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None:
            return original_build(self, iterator=iterator, data_batch=data_batch)
        strategy = self.distribute_strategy
        for _, _, it in iterator:  # shapes only: this worker's first local batch will do
            data_batch = tree.map_structure(
                lambda v: (
                    strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                next(it),
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce(values, strategy, reduction="auto"):
        if is_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    trainer_cls._maybe_symbolic_build = build
    tf_trainer.reduce_per_replica = reduce
    try:
        yield
    finally:
        trainer_cls._maybe_symbolic_build = original_build
        tf_trainer.reduce_per_replica = original_reduce


def train_distributed(
    config: Config,
    strategy: tf.distribute.Strategy | None = None,
    resume: bool = False,
    verbose: str | int = "auto",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """`xai_keras.training.train` with the model built, compiled and fitted under `strategy`.

    Args:
        config: the run config. `training.batch_size` is the *global* batch: with R replicas
            each sees batch_size / R images per step (scale the learning rate yourself if you
            grow the batch with R).
        strategy: e.g. `tf.distribute.MirroredStrategy()` (all local GPUs) or
            `MultiWorkerMirroredStrategy()` (see `xai_keras.scale`); None uses the current
            strategy (the default one: one device). Under MultiWorkerMirroredStrategy, Keras
            3's own `fit` fails (keras-team/keras#20585, open); this function works around
            it while it runs (see the module docstring). Every worker runs the same call;
            each writes the same files into `config.out_dir` (atomically, so a shared folder
            is safe).
        resume, verbose, callbacks: as for `train`.

    Returns:
        The `TrainResult` of `train`; the model's variables belong to `strategy`.

    Example:
        >>> strategy = tf.distribute.MirroredStrategy()
        >>> result = train_distributed(load_config("configs/shapes.yaml"), strategy)
    """
    strategy = strategy if strategy is not None else tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise InputError(
            f"`strategy` must be a tf.distribute.Strategy or None. Received: {strategy!r}."
        )
    fixes = multi_worker_fit_fixes() if _multi_worker(strategy) else contextlib.nullcontext()
    with fixes, strategy.scope():
        return train(config, resume=resume, verbose=verbose, callbacks=callbacks)
