"""Fit the CNN from a config: TensorBoard, atomic checkpoints, early stopping, resume.

Everything a run produces goes under `config.out_dir`:

    model.keras            the best model (lowest validation loss)
    config.yaml            the exact config used
    report.json/.md        test-split metrics (see `xai_keras.report`)
    checkpoints/           best.keras, last.keras and state.json (for --resume)
    tb/                    TensorBoard logs: train/, validation/, test/ and samples

Checkpoints are written to a temporary file and renamed, so a crash mid-epoch (or mid-save)
keeps the previous finished checkpoint intact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import yaml

from xai_keras.config import Config
from xai_keras.data import DatasetSplits, load_dataset
from xai_keras.io import atomic_path, ensure_writable_dir, write_json, write_text
from xai_keras.models import build_cnn
from xai_keras.report import evaluate_model, log_report, write_report

__all__ = ["AtomicCheckpoint", "TrainResult", "train", "tensorboard_command"]

_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9),
    "rmsprop": keras.optimizers.RMSprop,
}


@dataclass
class TrainResult:
    """What `train` produced: the model, its splits, the report, and where files went."""

    model: keras.Model
    splits: DatasetSplits
    report: dict[str, Any]
    out_dir: Path
    model_path: Path
    log_dir: Path
    history: dict[str, list[float]]


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save `last.keras` every epoch and `best.keras` on improvement, atomically.

    `state.json` records the finished epoch and the best value so far, which is what
    `train(..., resume=True)` reads to continue where a crashed run stopped.
    """

    def __init__(self, directory: Path, monitor: str = "val_loss", best: float = np.inf):
        super().__init__()
        self.directory = Path(directory)
        self.monitor = monitor
        self.best = best

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        with atomic_path(self.directory / "last.keras") as tmp:
            self.model.save(tmp)
        if value is not None and value < self.best:
            self.best = float(value)
            with atomic_path(self.directory / "best.keras") as tmp:
                self.model.save(tmp)
        state = {"epoch": epoch, "best": self.best, "monitor": self.monitor}
        write_json(self.directory / "state.json", state)


class _LogInputs(keras.callbacks.Callback):
    """Log a few training images and the hyperparameters to TensorBoard at the start."""

    def __init__(self, log_dir: Path, images: np.ndarray, hparams: dict[str, Any]):
        super().__init__()
        self.log_dir, self.images, self.hparams = log_dir, images, hparams

    def on_train_begin(self, logs: dict | None = None) -> None:
        from tensorboard.plugins.hparams import api as hp

        writer = tf.summary.create_file_writer(str(self.log_dir / "samples"))
        with writer.as_default():
            tf.summary.image("data/samples", self.images, step=0, max_outputs=len(self.images))
            hp.hparams(self.hparams)
        writer.close()


def _flat_hparams(cfg: Config) -> dict[str, Any]:
    """The config as flat `section.key` scalars (lists become strings), for the HParams plugin."""
    flat = {}
    for section, values in cfg.to_dict().items():
        items = values.items() if isinstance(values, dict) else [("", values)]
        for key, value in items:
            name = f"{section}.{key}" if key else section
            flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def tensorboard_command(log_dir: str | Path) -> str:
    """The shell command that opens these logs in TensorBoard, on localhost only."""
    return f"tensorboard --logdir {log_dir} --host localhost --port 6006"


def _resume_state(ckpt_dir: Path) -> tuple[keras.Model, int, float] | None:
    state_file, last = ckpt_dir / "state.json", ckpt_dir / "last.keras"
    if not (state_file.is_file() and last.is_file()):
        return None
    state = json.loads(state_file.read_text())
    return keras.models.load_model(last), int(state["epoch"]) + 1, float(state["best"])


def train(
    config: Config,
    resume: bool = False,
    verbose: str | int = "auto",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Run config -> dataset -> model -> fit -> save -> report, logging to TensorBoard.

    Args:
        config: the full run config; `config.out_dir` receives every output.
        resume: continue from `out_dir/checkpoints/last.keras` if a previous run left one.
        verbose: Keras `fit` verbosity (progress bars).
        callbacks: extra Keras callbacks (e.g. `xai_keras.tensorboard.ExplainCallback`).

    Returns:
        A `TrainResult` with the best model (lowest validation loss) loaded.

    Example:
        >>> result = train(load_config("configs/shapes.yaml"))
        >>> result.report["accuracy"]
    """
    out = ensure_writable_dir(config.out_dir)
    ckpt_dir, log_dir = out / "checkpoints", out / "tb"
    ckpt_dir.mkdir(exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))

    keras.utils.set_random_seed(config.training.seed)
    splits = load_dataset(config.data, config.training.batch_size, config.training.seed)

    initial_epoch, best = 0, np.inf
    previous = _resume_state(ckpt_dir) if resume else None
    if previous is not None:
        model, initial_epoch, best = previous
    else:
        model = build_cnn(config.model, splits.image_shape, splits.num_classes)
        optimizer = _OPTIMIZERS[config.training.optimizer](
            learning_rate=config.training.learning_rate
        )
        model.compile(
            optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )

    samples = next(iter(splits.train.unbatch().batch(8)))[0].numpy()
    history = model.fit(
        splits.train,
        validation_data=splits.val,
        epochs=config.training.epochs,
        initial_epoch=initial_epoch,
        shuffle=False,  # the pipeline shuffles itself (a tf.data dataset cannot be re-shuffled)
        verbose=verbose,
        callbacks=[
            keras.callbacks.TensorBoard(
                str(log_dir), histogram_freq=config.training.histogram_freq
            ),
            AtomicCheckpoint(ckpt_dir, best=best),
            keras.callbacks.EarlyStopping(
                patience=config.training.early_stopping_patience, restore_best_weights=False
            ),
            _LogInputs(log_dir, samples, _flat_hparams(config)),
            *(callbacks or []),
        ],
    )

    best_path = ckpt_dir / "best.keras"
    if best_path.is_file():
        model = keras.models.load_model(best_path)
    model_path = out / "model.keras"
    with atomic_path(model_path) as tmp:
        model.save(tmp)

    report = evaluate_model(model, splits.test, splits.class_names)
    write_report(report, out)
    log_report(report, str(log_dir / "test"), step=0)
    return TrainResult(
        model=model,
        splits=splits,
        report=report,
        out_dir=out,
        model_path=model_path,
        log_dir=log_dir,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
    )
