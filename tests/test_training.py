"""train(): the saved model, checkpoints, resume after a crash, TensorBoard tags, the CLI."""

from __future__ import annotations

import errno
import json
import os
import uuid
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras.cli import main
from xai_keras.config import load_config
from xai_keras.errors import ConfigError, InputError
from xai_keras.training import train


def _tags(log_dir: Path) -> set[str]:
    tags = set()
    for f in log_dir.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            tags.update(v.tag for v in event.summary.value)
    return tags


_TINY = [
    "data.image_size=32",
    "data.n_train=128",
    "data.n_val=32",
    "data.n_test=32",
    "model.filters=[8,16]",
    "training.batch_size=32",
    "training.epochs=1",
]


def _tiny(out: Path, *overrides: str):
    return load_config(None, [*_TINY, f"out_dir={out}", *overrides])


def _tiny_cli(out: Path, *overrides: str) -> list[str]:
    """`xai-keras train` arguments for the same tiny run, without the sample explanations."""
    sets = [arg for key in [*_TINY, *overrides] for arg in ("--set", key)]
    return ["train", "--out", str(out), "--explain", "0", "--quiet", *sets]


def test_trained_model_reloads_with_same_predictions(trained_shapes):
    r = trained_shapes
    reloaded = keras.models.load_model(r.model_path)
    x = r.splits.test_arrays.images[:16]
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), r.model.predict(x, verbose=0), atol=1e-6
    )
    report = json.loads((r.out_dir / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(r.report["accuracy"])
    assert (r.out_dir / "report.md").read_text().startswith("#")
    assert (r.out_dir / "config.yaml").is_file()
    # No temporary files are left next to the outputs.
    assert not [p for p in r.out_dir.rglob(".*") if p.is_file()]


def test_tensorboard_has_the_expected_tags(trained_shapes):
    log_dir = trained_shapes.log_dir
    assert {"epoch_loss", "epoch_accuracy"} <= _tags(log_dir / "train")
    assert {"epoch_loss", "epoch_accuracy"} <= _tags(log_dir / "validation")
    assert "inputs/training_samples" in _tags(log_dir / "samples")
    assert {"test/accuracy", "test/confusion_matrix", "test/report"} <= _tags(log_dir / "test")


def test_crash_mid_training_keeps_the_checkpoint_and_resumes(tmp_path):
    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("power cut")

    cfg = _tiny(tmp_path, "training.epochs=3")
    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg, verbose=0, callbacks=[Crash()])
    ckpt = tmp_path / "checkpoints"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 1  # epochs 0 and 1 finished and were saved before the crash
    keras.models.load_model(ckpt / "last.keras")  # a complete, loadable file
    resumed = train(cfg, resume=True, verbose=0)
    assert len(resumed.history["loss"]) == 1  # only the remaining epoch ran
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 2


def test_same_seed_same_weights(tmp_path):
    a = train(_tiny(tmp_path / "a"), verbose=0).model.get_weights()
    b = train(_tiny(tmp_path / "b"), verbose=0).model.get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, atol=1e-5)


def test_unwritable_out_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="not writable"):
        train(_tiny(blocker / "run"), verbose=0)


def test_resume_refuses_a_changed_model_config_naming_each_change(tmp_path, capsys):
    train(_tiny(tmp_path), verbose=0)
    saved = (tmp_path / "config.yaml").read_text()
    changed = _tiny(tmp_path, "model.filters=[8,8]", "training.learning_rate=0.01")
    with pytest.raises(
        ConfigError,
        match=r"Cannot resume the run in .*: its checkpoint was trained with a different config "
        r"\(model.filters: \[8, 16\] -> \[8, 8\]; training.learning_rate: 0.003 -> 0.01\)\. "
        r"Resume with the checkpoint's config \(only training.epochs, .* may change\)",
    ):
        train(changed, resume=True, verbose=0)
    assert (tmp_path / "config.yaml").read_text() == saved  # still the config that was trained
    assert main([*_tiny_cli(tmp_path, "model.filters=[8,8]"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.filters: [8, 16] -> [8, 8]" in err
    # More epochs (and the other RESUMABLE_KEYS) are fine: one more epoch is trained.
    resumed = train(
        _tiny(tmp_path, "training.epochs=2", "data.cache=false"), resume=True, verbose=0
    )
    assert len(resumed.history["loss"]) == 1
    assert "epochs: 2" in (tmp_path / "config.yaml").read_text()


def test_kill_after_last_keras_before_state_json_does_not_train_an_epoch_twice(
    tmp_path, monkeypatch
):
    import xai_keras.training as training

    real_write_json = training.write_json

    def killed_before_state_json(path, data):
        if Path(path).name == "state.json" and data["epoch"] == 1:
            raise RuntimeError("killed")  # last.keras of epoch 1 is in place, state.json is not
        return real_write_json(path, data)

    monkeypatch.setattr(training, "write_json", killed_before_state_json)
    cfg = _tiny(tmp_path, "training.epochs=3")
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, verbose=0)
    monkeypatch.undo()
    ckpt = tmp_path / "checkpoints"
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 0  # the readable copy lags
    resumed = train(cfg, resume=True, verbose=0)
    assert len(resumed.history["loss"]) == 1  # epoch 3 only: epoch 2 is in last.keras
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 2


def test_kill_between_best_and_last_keeps_the_newer_best_value(tmp_path, monkeypatch):
    import xai_keras.training as training

    attempt = {"n": 0}
    real_end, real_save = training.AtomicCheckpoint.on_epoch_end, training._save_checkpoint

    def scripted_val_loss(self, epoch, logs=None):  # 10, 9 first; 9.5 for epoch 2 on resume
        return real_end(self, epoch, {**(logs or {}), "val_loss": 10.0 - epoch + attempt["n"] / 2})

    def killed_before_last(model, path, state):
        if attempt["n"] == 0 and path.name == "last.keras" and state["epoch"] == 1:
            raise RuntimeError("killed")  # best.keras of epoch 2 is in place, last.keras is not
        return real_save(model, path, state)

    monkeypatch.setattr(training.AtomicCheckpoint, "on_epoch_end", scripted_val_loss)
    monkeypatch.setattr(training, "_save_checkpoint", killed_before_last)
    cfg = _tiny(tmp_path, "training.epochs=2")
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, verbose=0)
    ckpt = tmp_path / "checkpoints"
    assert training.checkpoint_state(ckpt / "last.keras")["epoch"] == 0
    assert training.checkpoint_state(ckpt / "best.keras")["value"] == 9.0
    attempt["n"] = 1
    resumed = train(cfg, resume=True, verbose=0)  # epoch 2 again: 9.5 is not better than 9
    assert len(resumed.history["loss"]) == 1
    assert json.loads((ckpt / "state.json").read_text())["best"] == 9.0
    assert training.checkpoint_state(ckpt / "best.keras")["value"] == 9.0


def test_resume_deletes_partial_checkpoints_but_nothing_else(tmp_path):
    train(_tiny(tmp_path), verbose=0)
    ckpt = tmp_path / "checkpoints"
    partial = [
        ckpt / f".last.{uuid.uuid4().hex}.keras",  # killed during a checkpoint save
        ckpt / f".best.{uuid.uuid4().hex}.keras",
        tmp_path / f".model.{uuid.uuid4().hex}.keras",
    ]
    for path in partial:
        path.write_bytes(b"PK\x03\x04 half a zip")
    users = [
        ckpt / ".last.notes.keras",
        ckpt / f".last.{uuid.uuid4().hex}.keras.bak",
        ckpt / f"last.{uuid.uuid4().hex}.keras",
        tmp_path / f".mine.{uuid.uuid4().hex}.keras",
    ]
    for path in users:
        path.write_text("the user's")
    link = ckpt / f".last.{uuid.uuid4().hex}.keras"
    link.symlink_to(users[0])
    train(_tiny(tmp_path, "training.epochs=2"), resume=True, verbose=0)
    assert not any(path.exists() for path in partial)
    assert all(path.read_text() == "the user's" for path in users)
    assert link.is_symlink()


def test_too_little_free_space_is_refused_before_training(tmp_path, monkeypatch):
    import shutil

    import xai_keras.training as training

    real = shutil.disk_usage
    monkeypatch.setattr(
        training.shutil, "disk_usage", lambda path: real(path)._replace(free=100_000)
    )
    with pytest.raises(
        InputError, match=r"run has 0.1 MB free; this run needs about .* MB for its checkpoints"
    ):
        train(_tiny(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run" / "checkpoints" / "last.keras").exists()
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_full_disk_during_the_run_is_one_line_saying_what_was_written(
    tmp_path, monkeypatch, capsys
):
    real_save = keras.Model.save

    def disk_full_for_the_model(self, filepath, *args, **kwargs):
        if Path(filepath).name.startswith(".model."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
        return real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", disk_full_for_the_model)
    assert main(_tiny_cli(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert (
        f"Could not write model.keras in {tmp_path} (No space left on device). Written: "
        "config.yaml, checkpoints/last.keras (epoch 1 of 1). Not written: model.keras, "
        "class_names.json, report.json/.md, tb/test. Free some space (or pass another --out) "
        "and run `train` again with --resume" in err
    )
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporaries left


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_explain_writes_pngs(trained_shapes, tmp_path, capsys):
    images = trained_shapes.splits.test_arrays.images[:2]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"img{i}.png"), (img[..., ::-1] * 255).astype(np.uint8))
    names = tmp_path / "names.json"
    names.write_text(json.dumps(trained_shapes.splits.class_names))
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(folder),
            "--model",
            str(trained_shapes.model_path),
            "--method",
            "gradcam,saliency",
            "--classes",
            str(names),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "contact_sheet.png",
        "img0_gradcam.png",
        "img0_saliency.png",
        "img1_gradcam.png",
        "img1_saliency.png",
    ]
    printed = capsys.readouterr().out
    assert any(name in printed for name in trained_shapes.splits.class_names)


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["train", "--set", "training.epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Unknown config key `training.epoch`" in err
    assert main(["explain", "x.png", "--model", str(tmp_path / "none.keras")]) == 2
    assert "Model file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


def test_cli_explain_a_keras_application_with_local_weights(tmp_path, capsys):
    """`--model mobilenetv2 --weights file`: offline, the weights come from a local file."""
    keras.utils.set_random_seed(0)
    weights = tmp_path / "mnv2.weights.h5"
    keras.applications.MobileNetV2(weights=None).save_weights(weights)
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8))
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(image),
            "--model",
            "mobilenetv2",
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0 and (out / "img_gradcam.png").is_file()
    capsys.readouterr()
    args = ["explain", str(image), "--model", "mobilenetv2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    notice = [line for line in capsys.readouterr().err.splitlines() if "random weights" in line]
    # One line of its own, without a Python warning's file:line prefix and source line.
    assert len(notice) == 1 and notice[0].startswith("xai-keras: note: mobilenetv2: no --weights")
    assert main(["explain", str(image), "--model", "resnet50", "--weights", "nope.h5"]) == 2
    assert "Weights file not found" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before", "after", "last"])
def test_cli_debug_is_accepted_before_or_after_the_subcommand(where, capsys):
    from xai_keras.errors import ConfigError

    args = ["train", "--set", "training.epoch=3"]
    args = {
        "before": ["--debug", *args],
        "after": [args[0], "--debug", *args[1:]],
        "last": [*args, "--debug"],
    }[where]
    with pytest.raises(ConfigError, match="Unknown config key `training.epoch`"):
        main(args)  # --debug: the traceback, not the one line
    assert "unrecognized arguments" not in capsys.readouterr().err


def test_printed_commands_work_in_a_fresh_shell(tmp_path, monkeypatch):
    """Outside an activated venv the TensorBoard command names the venv's script by its path."""
    import sys

    from xai_keras.training import program, tensorboard_command

    bindir = tmp_path / ".venv" / "bin"
    bindir.mkdir(parents=True)
    for name in ("python", "tensorboard"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a fresh shell: the venv is not active
    assert tensorboard_command("runs/my run/tb") == (
        ".venv/bin/tensorboard --logdir 'runs/my run/tb' --host localhost --port 6006"
    )
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")  # activated: the bare name works
    assert program("tensorboard") == "tensorboard"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert program("tensorboard") == str(bindir / "tensorboard")


def test_hparams_and_the_test_metrics_share_one_run(tmp_path):
    """The HParams dashboard reads a session's metrics from the run holding its hparams."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert main(_tiny_cli(tmp_path)) == 0
    sessions = {}
    for f in (tmp_path / "tb").rglob("events.out.tfevents.*"):
        run = f.parent.relative_to(tmp_path / "tb").as_posix()
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            for v in event.summary.value:
                sessions.setdefault(run, set()).add(v.tag)
                if v.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        v.metadata.plugin_data.content
                    )
                    hparams = dict(data.session_start_info.hparams)
    runs = [run for run, tags in sessions.items() if "_hparams_/session_start_info" in tags]
    assert runs == ["test"]
    assert {"test/accuracy", "test/macro_f1"} <= sessions["test"]
    assert hparams["training.epochs"].number_value == 1
