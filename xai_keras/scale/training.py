"""Train the project's CNN on several devices by running the normal `train` under a strategy.

Keras 3 ties a model to the strategy in scope when it is built, and `fit` then splits each
batch across the strategy's replicas. `train` builds, compiles (or reloads, when resuming) and
fits the model in one go, so entering `strategy.scope()` around it is all that is needed: no
second training path to keep in sync with the first.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from xai_keras.config import Config
from xai_keras.errors import InputError
from xai_keras.training import TrainResult, train

__all__ = ["train_distributed"]


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
            strategy (the default one: one device).
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
    with strategy.scope():
        return train(config, resume=resume, verbose=verbose, callbacks=callbacks)
