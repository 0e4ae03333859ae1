"""Fit the CNN from a config: TensorBoard, atomic checkpoints, early stopping, resume.

Everything a run produces goes under `config.out_dir`:

    model.keras            the best model (lowest validation loss)
    class_names.json       the class names, in class-index order (the CLI shows them)
    config.yaml            the exact config used
    report.json/.md        test-split metrics (see `xai_keras.report`)
    checkpoints/           best.keras, last.keras and state.json (for --resume)
    tb/                    TensorBoard logs: train/, validation/, test/ and samples

Checkpoints are written to a temporary file and renamed, so a crash mid-epoch (or mid-save)
keeps the previous finished checkpoint intact. Each checkpoint carries its own state (the finished
epoch, the best value, the run's config) inside the `.keras` archive, so the weights and the
epoch they belong to are replaced in one rename; `state.json` is a readable copy.

Resuming (`train(config, resume=True)`, `xai-keras train --resume`) continues from `last.keras`
and refuses a config that differs from the checkpoint's in anything but `RESUMABLE_KEYS`
(training.epochs, training.early_stopping_patience, training.histogram_freq, data.cache,
out_dir): the model, its optimizer and the data come from the checkpoint and the seed, so any
other change would be silently ignored or would train a different experiment under one name.
Temporaries left by a process killed mid-save (`.last.<hex>.keras` and the like, only names
this module writes) are deleted on resume. Before the first epoch, `train` checks that `out_dir`
is writable and has room for the checkpoints and the model; a write that fails later (a full
disk) raises `InputError` saying which outputs were written and which were not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import shutil
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import yaml

from xai_keras.config import Config
from xai_keras.data import DatasetSplits, load_dataset
from xai_keras.errors import ConfigError, InputError
from xai_keras.io import (
    atomic_path,
    ensure_writable_dir,
    stale_temporaries,
    write_json,
    write_text,
)
from xai_keras.models import build_cnn
from xai_keras.report import evaluate_accuracy, log_report, write_report
from xai_keras.training_files import CLASS_NAMES_FILE

__all__ = [
    "CLASS_NAMES_FILE",
    "AtomicCheckpoint",
    "RESUMABLE_KEYS",
    "TrainResult",
    "checkpoint_state",
    "train",
    "tensorboard_command",
]

# Config keys that may differ between a checkpoint and `train(..., resume=True)`: how long to
# train, when to stop, what to log, whether to cache, and where the run lives. Every other key
# shapes the model, its optimizer (restored from the checkpoint) or the data it sees.
RESUMABLE_KEYS = (
    "training.epochs",
    "training.early_stopping_patience",
    "training.histogram_freq",
    "data.cache",
    "out_dir",
)
_STATE_ENTRY = "xai_keras_state.json"  # inside each checkpoint's .keras (zip) archive
_CHECKPOINT_FILES = ("last.keras", "best.keras", "state.json")

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


def _save_checkpoint(model: keras.Model, path: Path, state: dict[str, Any]) -> None:
    """Save `model` with `state` inside the archive, to a temporary name renamed onto `path`."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(_STATE_ENTRY, json.dumps(state))


def checkpoint_state(path: str | Path) -> dict[str, Any] | None:
    """The state saved inside a checkpoint by `AtomicCheckpoint` (None for any other file).

    `last.keras` holds `epoch` (the last finished epoch, from 0), `best`, `monitor`, `run` and
    the run's `config`; `best.keras` holds `epoch`, `monitor`, `value` and `run`.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            state = json.loads(archive.read(_STATE_ENTRY))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return state if isinstance(state, dict) else None


class _Progress:
    """What a run has written so far, so that a failed write says what was and was not."""

    def __init__(self, out: Path, planned: list[str]):
        self.out, self.planned, self.written = out, planned, []
        self.checkpoint: str | None = None  # e.g. "checkpoints/last.keras (epoch 2 of 5)"

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            raise InputError(self.failure(name, err)) from None
        if name in self.planned:
            self.written.append(name)

    def failure(self, name: str, err: OSError) -> str:
        written = [w for w in self.planned if w in self.written]
        if self.checkpoint is not None:
            written.insert(1, self.checkpoint)
        missing = [p for p in self.planned if p not in self.written]
        resume = (
            "run `train` again with --resume to continue from the last checkpoint"
            if self.checkpoint is not None
            else "run `train` again"
        )
        return (
            f"Could not write {name} in {self.out} ({err.strerror or err}). "
            f"Written: {', '.join(written) or 'nothing'}. Not written: {', '.join(missing)}. "
            f"Free some space (or pass another --out) and {resume}."
        )


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save `best.keras` on improvement and `last.keras` every epoch, each atomically.

    Each file carries its state inside (see `checkpoint_state`), so a checkpoint and the epoch
    it belongs to are replaced by one rename: a kill at any moment leaves a consistent pair.
    `best.keras` is written before `last.keras`, and `train(..., resume=True)` takes the lower
    of the two recorded best values. `state.json` is a readable copy of `last.keras`'s state.
    """

    def __init__(
        self,
        directory: Path,
        monitor: str = "val_loss",
        best: float = np.inf,
        config: dict[str, Any] | None = None,
        run: str | None = None,
        progress: _Progress | None = None,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.monitor = monitor
        self.best = best
        self.config = config
        self.run = run or uuid.uuid4().hex
        self.progress = progress

    def _writing(self, name: str) -> contextlib.AbstractContextManager:
        return self.progress.writing(name) if self.progress else contextlib.nullcontext()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        of = f"epoch {epoch + 1}" + (f" of {self.params['epochs']}" if self.params else "")
        if value is not None and value < self.best:
            best = {"epoch": epoch, "monitor": self.monitor, "value": float(value), "run": self.run}
            with self._writing(f"checkpoints/best.keras ({of})"):
                _save_checkpoint(self.model, self.directory / "best.keras", best)
            self.best = float(value)
        state = {"epoch": epoch, "best": self.best, "monitor": self.monitor, "run": self.run}
        if self.config is not None:
            state["config"] = self.config
        with self._writing(f"checkpoints/last.keras ({of})"):
            _save_checkpoint(self.model, self.directory / "last.keras", state)
        if self.progress is not None:
            self.progress.checkpoint = f"checkpoints/last.keras ({of})"
        with self._writing(f"checkpoints/state.json ({of})"):
            write_json(self.directory / "state.json", state)


class _LogInputs(keras.callbacks.Callback):
    """Log a few training images to TensorBoard at the start."""

    def __init__(self, log_dir: Path, images: np.ndarray):
        super().__init__()
        self.log_dir, self.images = log_dir, images

    def on_train_begin(self, logs: dict | None = None) -> None:
        writer = tf.summary.create_file_writer(str(self.log_dir / "samples"))
        with writer.as_default():
            tf.summary.image(
                "inputs/training_samples",
                self.images,
                step=0,
                max_outputs=len(self.images),
                description="The first training images, as the model sees them.",
            )
        writer.close()


def _log_hparams(log_dir: Path, hparams: dict[str, Any], report: dict[str, Any]) -> None:
    """The hyperparameters, in the run that holds the test metrics (`log_report` writes
    test/accuracy and test/f1/<class> there; test/macro_f1 is added here): the HParams
    dashboard reads a session's metrics from its own run, so runs compare side by side."""
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(log_dir))
    try:
        with writer.as_default(step=0):
            hp.hparams(hparams)
            macro = report.get("macro_avg", {}).get("f1")
            if macro is not None:
                tf.summary.scalar("test/macro_f1", macro)
        writer.flush()
    finally:
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


def program(name: str) -> str:
    """How a fresh shell runs this installation's console script `name` (e.g. "tensorboard"):
    the bare name when the shell's PATH finds this same one, else its path, relative to the
    working folder when inside it (".venv/bin/tensorboard" after `scripts/demo.sh`)."""
    script = Path(sys.executable).parent / name
    if not script.is_file():
        return name
    found = shutil.which(name)
    if found is not None and Path(found).resolve() == script.resolve():
        return name
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def tensorboard_command(log_dir: str | Path) -> str:
    """The shell command that opens these logs in TensorBoard, on localhost only; it works as
    printed in a fresh shell (see `program`)."""
    logdir = shlex.quote(str(log_dir))
    return f"{program('tensorboard')} --logdir {logdir} --host localhost --port 6006"


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _config_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each key outside RESUMABLE_KEYS that differs (absent keys skip)."""
    old, new = _flatten(before), _flatten(now)
    return [
        f"{key}: {old[key]!r} -> {value!r}"
        for key, value in new.items()
        if key in old and key not in RESUMABLE_KEYS and old[key] != value
    ]


@dataclass
class _Resume:
    last: Path
    epoch: int  # the next epoch to train
    best: float
    run: str


def _resume_state(ckpt_dir: Path, out: Path, config: Config) -> _Resume | None:
    """Where a previous run stopped, checked against this config; None if there is nothing."""
    last, state_file = ckpt_dir / "last.keras", ckpt_dir / "state.json"
    if not last.is_file():
        return None
    state = checkpoint_state(last)
    if state is None:  # a checkpoint saved before the state went inside it
        if not state_file.is_file():
            return None
        state = json.loads(state_file.read_text())
    before = state.get("config")
    if before is None and (out / "config.yaml").is_file():
        with contextlib.suppress(yaml.YAMLError, OSError):
            before = yaml.safe_load((out / "config.yaml").read_text())
    changes = _config_changes(before, config.to_dict()) if isinstance(before, dict) else []
    if changes:
        raise ConfigError(
            f"Cannot resume the run in {out}: its checkpoint was trained with a different "
            f"config ({'; '.join(changes)}). Resume with the checkpoint's config (only "
            f"{', '.join(RESUMABLE_KEYS)} may change), or train without --resume or with "
            "another --out to start a new run."
        )
    best = float(state.get("best", np.inf))
    best_state = checkpoint_state(ckpt_dir / "best.keras")
    if best_state is not None and best_state.get("run") == state.get("run"):
        # A kill between saving best.keras and last.keras leaves the newer best value there.
        best = min(best, float(best_state.get("value", np.inf)))
    return _Resume(last, int(state["epoch"]) + 1, best, state.get("run") or uuid.uuid4().hex)


def _clean_temporaries(out: Path, ckpt_dir: Path) -> None:
    """Delete what a kill mid-save left: only `atomic_path` names for files this module writes."""
    outputs = ("model.keras", "config.yaml", "report.json", "report.md")
    for target in [*(out / t for t in outputs), *(ckpt_dir / t for t in _CHECKPOINT_FILES)]:
        for tmp in stale_temporaries(target):
            tmp.unlink(missing_ok=True)


def _check_free_space(out: Path, model: keras.Model) -> None:
    """Refuse to start when the disk cannot hold the checkpoints and the model."""
    # Weights plus two optimizer slots in float32, and the archive's own files; four at once:
    # last.keras, best.keras, model.keras and one temporary being written.
    need = 4 * (model.count_params() * 4 * 3 + 64 * 1024)
    free = shutil.disk_usage(out).free
    if free < need:
        raise InputError(
            f"The output directory {out} has {free / 1e6:.1f} MB free; this run needs about "
            f"{need / 1e6:.1f} MB for its checkpoints and model (and more for TensorBoard "
            "logs). Free some space or pass another --out."
        )


def _run_id(config: Config) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _start_model(
    config: Config, splits: DatasetSplits, previous: _Resume | None
) -> tuple[keras.Model, int, float, str]:
    """(model, initial epoch, best validation loss, run id): the resumed run's last checkpoint,
    or a new compiled CNN."""
    if previous is not None:
        return (keras.models.load_model(previous.last), previous.epoch, previous.best,
                previous.run)  # fmt: skip
    model = build_cnn(config.model, splits.image_shape, splits.num_classes)
    optimizer = _OPTIMIZERS[config.training.optimizer](learning_rate=config.training.learning_rate)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, 0, np.inf, _run_id(config)


def train(
    config: Config,
    resume: bool = False,
    verbose: str | int = "auto",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Run config -> dataset -> model -> fit -> save -> report, logging to TensorBoard.

    Args:
        config: the full run config; `config.out_dir` receives every output.
        resume: continue from `out_dir/checkpoints/last.keras` if a previous run left one;
            the config may differ from that run's only in `RESUMABLE_KEYS`.
        verbose: Keras `fit` verbosity (progress bars).
        callbacks: extra Keras callbacks (e.g. `xai_keras.tensorboard.ExplainCallback`).

    Returns:
        A `TrainResult` with the best model (lowest validation loss) loaded.

    Raises:
        ConfigError: `resume` with a config that changes the checkpoint's model, optimizer or
            data (the message lists each changed key, old -> new).
        InputError: `out_dir` is not writable or too full, or a write failed mid-run (the
            message says what was written and what was not).

    Example:
        >>> result = train(load_config("shapes"))
        >>> result.report["accuracy"]
    """
    out = ensure_writable_dir(config.out_dir)
    ckpt_dir = ensure_writable_dir(out / "checkpoints", "checkpoint directory")
    log_dir = ensure_writable_dir(out / "tb", "TensorBoard log directory")
    previous = None
    if resume:
        _clean_temporaries(out, ckpt_dir)
        previous = _resume_state(ckpt_dir, out, config)

    keras.utils.set_random_seed(config.training.seed)
    splits = load_dataset(config.data, config.training.batch_size, config.training.seed)

    # The run id marks this run's checkpoints. It comes from the config, not from a random
    # draw, so every worker of a multi-worker run agrees on it (and so on whether best.keras
    # is loaded at the end, which creates variables collectively); a fresh run rewrites
    # best.keras at its first epoch, so an earlier run with the same config is never mistaken
    # for this one at the end.
    model, initial_epoch, best, run = _start_model(config, splits, previous)
    _check_free_space(out, model)

    planned = ["config.yaml", "model.keras", CLASS_NAMES_FILE, "report.json/.md", "tb/test"]
    progress = _Progress(out, planned)
    with progress.writing("config.yaml"):
        write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))

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
            AtomicCheckpoint(
                ckpt_dir, best=best, config=config.to_dict(), run=run, progress=progress
            ),
            keras.callbacks.EarlyStopping(
                patience=config.training.early_stopping_patience, restore_best_weights=False
            ),
            _LogInputs(log_dir, samples),
            *(callbacks or []),
        ],
    )

    best_path = ckpt_dir / "best.keras"
    best_state = checkpoint_state(best_path) if best_path.is_file() else None
    # Only this run's best (a file from before states were saved inside counts as this run's).
    if best_path.is_file() and (best_state is None or best_state.get("run") == run):
        model = keras.models.load_model(best_path)
    model_path = out / "model.keras"
    with progress.writing("model.keras"), atomic_path(model_path) as tmp:
        model.save(tmp)
    with progress.writing(CLASS_NAMES_FILE):
        write_json(out / CLASS_NAMES_FILE, list(splits.class_names))

    report = evaluate_accuracy(model, splits.test, splits.class_names)
    with progress.writing("report.json/.md"):
        write_report(report, out)
    with progress.writing("tb/test"):
        log_report(report, str(log_dir / "test"), step=0)
        _log_hparams(log_dir / "test", _flat_hparams(config), report)
    return TrainResult(
        model=model,
        splits=splits,
        report=report,
        out_dir=out,
        model_path=model_path,
        log_dir=log_dir,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
    )
