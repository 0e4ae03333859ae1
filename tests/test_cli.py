"""The `xai-keras` command itself: its layout, start-up time and quiet start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environ["PYTHONPATH"] = str(ROOT) + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env or {})
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "xai_keras.cli", *argv],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=120,
    )
    return proc, time.perf_counter() - start


def test_every_command_is_a_module_with_its_flags_and_handler():
    import importlib

    from xai_keras.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {c.replace("_", "-") for c in COMMANDS}
    for name in COMMANDS:
        module = importlib.import_module(f"xai_keras.cli.{name}")
        assert callable(module.add_parser) and callable(module.run)
        assert sub.choices[name.replace("_", "-")].get_default("func") is module.run


@pytest.mark.parametrize("argv", [("--help",), ("explain", "--help"), ("train", "--help")])
def test_help_does_not_import_tensorflow_and_is_quick(argv):
    code = (
        "import sys\nfrom xai_keras.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    environ = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=environ
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert proc.stderr == ""
    assert seconds < 10  # about 0.5 s idle; generous for a loaded CI machine


def test_commands_print_no_tensorflow_log_lines_unless_debug():
    proc, _ = _run("methods", "rise")  # one method in full loads the registry, so TensorFlow
    assert proc.returncode == 0
    assert "options: masks, cells, p_keep, seed, baseline" in proc.stdout
    assert proc.stderr == "", proc.stderr


def test_methods_lists_every_registered_method_without_tensorflow_in_100_columns():
    code = (
        "import sys\nfrom xai_keras.cli import main\nmain(['methods'])\n"
        "print('HEAVY', [m for m in ('tensorflow', 'keras') if m in sys.modules])\n"
    )
    environ = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    lines = proc.stdout.split("\n`xai-keras methods NAME`")[0].splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].split() == "family name needs what the map is best for".split()
    from xai_keras.explainers import METHODS

    # Every registered method starts a row, its name in the name column (chars 13-35).
    names = [line[13:36].strip() for line in lines[2:] if line[13:36].strip()]
    assert names == list(METHODS)
    row = {line[13:36].strip(): line for line in lines}
    assert row["occlusion"].startswith("perturbation")  # the family's first row names it
    assert row["rise"][:12].strip() == "" and row["rise"][37:47].strip() == "baseline"


def test_methods_name_answers_a_typo_before_tensorflow_loads():
    proc, seconds = _run("methods", "gradcan")
    assert proc.returncode == 2
    assert proc.stderr.startswith("xai-keras methods: error: Unknown method 'gradcan'.")
    assert "TensorFlow" not in proc.stderr and seconds < 10  # about 0.1 s idle


def test_the_log_filter_keeps_errors_and_other_lines():
    from xai_keras.cli._quiet import is_log_line

    assert is_log_line("WARNING: All log messages before absl::InitializeLog() is called are")
    assert is_log_line("I0000 00:00:1796062622.729456   11712 port.cc:153] oneDNN custom ops")
    assert is_log_line("2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/x.cc:32] a")
    assert is_log_line("To enable the following instructions: AVX2 FMA, in other operations")
    assert not is_log_line("E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to")
    assert not is_log_line("Traceback (most recent call last):")
    assert not is_log_line("xai-keras explain: error: Model file not found: m.keras.")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """A run folder as `train` leaves it (model.keras + class_names.json) and two images."""
    import cv2
    import keras
    import numpy as np

    root = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inp, out, name="tiny").save(root / "model.keras")
    (root / "class_names.json").write_text('["circle", "square", "star"]')
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        cv2.imwrite(str(root / f"{name}.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    return {k: str(root / f) for k, f in [("model", "model.keras"), ("a", "a.png")]} | {
        "root": str(root),
        "names": str(root / "class_names.json"),
    }


def test_explain_shows_the_class_names_train_kept_beside_the_model(tiny_run, tmp_path, capsys):
    from xai_keras.cli import main

    args = ["explain", tiny_run["a"], "--model", tiny_run["model"], "--out", str(tmp_path)]
    assert main([*args, "--target", "2", "--quiet"]) == 0
    assert main([*args, "--target", "2"]) == 0
    assert f"{tiny_run['a']}: star (" in capsys.readouterr().out
    assert main([*args, "--target", "2", "--classes", '["c0", "c1", "c2"]']) == 0
    assert f"{tiny_run['a']}: c2 (" in capsys.readouterr().out  # --classes overrides


def test_a_class_names_file_of_another_model_is_ignored_with_a_note(tiny_run, tmp_path, capsys):
    import shutil

    from xai_keras.cli import main

    shutil.copy(tiny_run["model"], tmp_path / "model.keras")
    (tmp_path / "class_names.json").write_text('["a", "b"]')
    args = ["explain", tiny_run["a"], "--model", str(tmp_path / "model.keras")]
    assert main([*args, "--out", str(tmp_path / "o"), "--target", "2"]) == 0
    captured = capsys.readouterr()
    assert f"{tiny_run['a']}: class 2 (" in captured.out
    assert "has 2 names but the model has 3 classes" in captured.err


def test_explain_dataset_summary_uses_the_saved_class_names(tiny_run, tmp_path, capsys):
    from xai_keras.cli import main

    data = tmp_path / "data" / "any"
    data.mkdir(parents=True)
    import shutil

    shutil.copy(tiny_run["a"], data / "a.png")
    out = tmp_path / "maps"
    args = ["explain-dataset", str(data.parent), "--model", tiny_run["model"], "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    summary = (out / "summary.md").read_text()
    assert any(name in summary for name in ("circle", "square", "star")), summary


def test_tensorboard_help_documents_its_options(capsys):
    from xai_keras.cli import main

    with pytest.raises(SystemExit):
        main(["tensorboard", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "localhost" in text and "SIGTERM" in text
    assert "--logdir LOGDIR the folder of TensorBoard event files" in text
    assert "--port PORT the port on localhost" in text


def test_tensorboard_with_a_missing_logdir_is_one_line(tmp_path, capsys):
    from xai_keras.cli import main

    assert main(["tensorboard", "--logdir", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_stopping_xai_keras_tensorboard_stops_its_child(tmp_path, sig):
    """The TensorBoard child (here a stand-in that records its pid) ends with the command."""
    import signal

    pidfile = tmp_path / "child.pid"
    code = (
        "import sys\nimport xai_keras.cli.tensorboard as tb\n"
        "tb._command = lambda log_dir, port: [sys.executable, '-c', "
        f"\"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
        'time.sleep(120)"]\n'
        "from xai_keras.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    environ = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "tensorboard", "--logdir", str(tmp_path)],
        env=environ,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not (pidfile.is_file() and pidfile.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child = int(pidfile.read_text())
    proc.send_signal(getattr(signal, sig))
    assert proc.wait(90) == 0  # generous: a loaded 2-core machine
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the TensorBoard child outlived the command")


def _capture_figures(monkeypatch) -> list:
    import xai_keras.io

    figures, real = [], xai_keras.io.save_figure

    def keep(fig, path, dpi=100):
        figures.append(fig)
        return real(fig, path, dpi)

    monkeypatch.setattr(xai_keras.io, "save_figure", keep)
    return figures


def _texts(fig) -> str:
    return " ".join(t.get_text() for t in fig.texts)


def test_weights_none_means_random_weights_and_the_pictures_say_so(
    tiny_run, tmp_path, monkeypatch, capsys
):
    import warnings

    from xai_keras.cli import main

    figures = _capture_figures(monkeypatch)
    args = ["explain", tiny_run["a"], "--model", "mobilenetv2", "--out", str(tmp_path)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'none' is a choice: no warning
        assert main([*args, "--weights", "none", "--quiet", "--method", "gradcam"]) == 0
    assert figures and all("RANDOM WEIGHTS" in _texts(f) for f in figures)
    figures.clear()
    assert (
        main(["explain", tiny_run["a"], "--model", tiny_run["model"], "--out", str(tmp_path)]) == 0
    )
    assert figures and not any("RANDOM WEIGHTS" in _texts(f) for f in figures)


def test_imagenet_weights_offline_is_one_line_saying_what_to_do(tmp_path, monkeypatch, capsys):
    from keras.src.utils import file_utils

    from xai_keras.cli import main

    def offline(*args, **kwargs):
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/x.h5: None -- "
            "[Errno -3] Temporary failure in name resolution"
        )

    monkeypatch.setattr(file_utils, "get_file", offline)
    image = tmp_path / "x.png"  # an existing image: a missing one is refused before loading
    image.write_bytes((ROOT / "docs" / "sag.png").read_bytes())
    args = ["explain", str(image), "--model", "mobilenetv2", "--weights", "imagenet"]
    assert main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "Downloading the ImageNet weights of mobilenetv2 failed (URL fetch failure" in err
    assert "pass --weights that/file.h5" in err


def test_fit_crop_pad_stretch():
    import numpy as np

    from xai_keras.cli._images import fit_image

    img = np.zeros((10, 30, 3), np.uint8)
    img[:, 10:20] = 255  # a white middle third
    assert (fit_image(img, (10, 10), "crop") == 255).all()  # the middle square kept
    padded = fit_image(img, (30, 30), "pad")
    assert (padded[:10] == 0).all() and (padded[10:20, 10:20] == 255).all()
    stretched = fit_image(img, (10, 10), "stretch")
    assert stretched.shape == (10, 10, 3) and 0 < stretched.mean() < 255


def test_explain_says_when_it_changes_an_images_aspect_ratio(tiny_run, tmp_path, capsys):
    import cv2
    import numpy as np

    from xai_keras.cli import main

    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.random.default_rng(0).integers(0, 255, (16, 40, 3), np.uint8))
    args = ["explain", str(wide), "--model", tiny_run["model"], "--out", str(tmp_path / "o")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 of 1 images (wide.png 40x16) have another aspect ratio than the model's" in err
    assert "stretched (squashed) to it (--fit stretch; --fit crop or pad to change)" in err
    assert main([*args, "--fit", "crop"]) == 0
    assert "centre-cropped to its aspect ratio" in capsys.readouterr().err
    assert main([*args, "--fit", "pad", "--quiet"]) == 0
    assert "note:" not in capsys.readouterr().err
