"""What a newcomer meets first: the names importable from `xai_keras`, the version in one
place, `evaluate_model`'s readable result."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import numpy as np

import xai_keras

ROOT = Path(__file__).resolve().parents[1]


def test_the_front_door_names_import_from_the_package():
    from xai_keras import deletion, evaluate_model, insertion
    from xai_keras.evaluate import deletion as metric_deletion
    from xai_keras.evaluate.scoring import evaluate_model as significance

    assert deletion is metric_deletion and insertion.__module__.endswith("faithfulness")
    # The public evaluate_model is the significance one; the accuracy report has its own name.
    assert evaluate_model is significance
    from xai_keras.report import evaluate_accuracy

    assert evaluate_accuracy is not evaluate_model
    for name in xai_keras.__all__:
        assert getattr(xai_keras, name) is not None, name


def test_the_version_lives_in_one_place():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["version"] == "attr: xai_keras.__version__"
    assert cfg["metadata"]["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT")
    out = subprocess.run(
        [sys.executable, "-m", "xai_keras.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == f"xai-keras {xai_keras.__version__}"
    assert f"## {xai_keras.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_evaluate_model_returns_a_result_that_reads(gap_model, images32):
    from xai_keras import ModelEvaluation, evaluate_model

    labels = np.arange(len(images32)) % 4
    result = evaluate_model(gap_model, (images32, labels), ["random"], n_sanity=0)
    assert isinstance(result, ModelEvaluation) and isinstance(result, dict)
    assert result.n == result["n"] == 5 and 0 <= result.informative <= 5
    assert result.methods["random"] is result["methods"]["random"]
    text = str(result)
    assert text == result.summary()
    assert f"{result.informative} of 5 informative" in text
    assert "random" in text.splitlines()[-1] and "beats random" in text
    assert repr(result).startswith("ModelEvaluation(n=5,") and len(repr(result)) < 200


def test_an_uninformative_evaluation_says_why_every_p_is_one():
    from xai_keras.evaluate.scoring import ModelEvaluation

    row = {"deletion_auc": 0.5, "insertion_auc": 0.5, "p_deletion": 1.0, "p_insertion": 1.0}
    result = ModelEvaluation(n=4, accuracy=0.25, informative=0, methods={"gradcam": row})
    assert "0 of 4 informative" in result.summary()
    assert "every p-value is 1.0" in result.summary()


# -- value ranges: images that cannot be in the range they go in ----------------------------
def test_images_outside_the_declared_range_warn_in_one_line(gap_model, images32):
    import pytest

    from xai_keras import explain
    from xai_keras.explainers.ranges import ValueRangeWarning

    pixels = (images32[:2] * 255).astype(np.uint8)
    with pytest.warns(ValueRangeWarning, match=r"uint8 images .* outside value_range=\(-1, 1\)"):
        explain(gap_model, pixels, value_range=(-1, 1))
    with pytest.warns(ValueRangeWarning, match=r"outside value_range=unit") as caught:
        explain(gap_model, images32[:2] * 255, value_range="unit")
    assert caught[0].filename == __file__  # points at the user's call, not our internals
    assert "\n" not in str(caught[0].message)
    with pytest.warns(ValueRangeWarning, match="not rescaled"):
        explain(gap_model, pixels)  # a float model, no range declared


def test_images_in_their_range_do_not_warn(gap_model, images32):
    import warnings

    from xai_keras import explain
    from xai_keras.explainers.ranges import ValueRangeWarning

    pixels = (images32[:2] * 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValueRangeWarning)
        explain(gap_model, images32[:2], value_range="unit")
        explain(gap_model, images32[:2] * 2 - 1, value_range=(-1, 1))
        explain(gap_model, pixels, value_range="pixels")
        explain(gap_model, images32[:2])  # float images, no range: nothing to check


def test_sag_with_one_number_as_grid_says_what_grid_takes(gap_model, images32):
    import pytest

    from xai_keras import sag
    from xai_keras.errors import InputError

    for grid in (7, (7,), (7, 0), (2.5, 3), "7x7"):
        with pytest.raises(InputError, match=r"`grid` argument must be \(rows, cols\)"):
            sag(gap_model, images32[0], grid=grid)


def test_the_repr_of_an_explanation_is_one_short_line(gap_model, images32):
    from xai_keras import explain

    exp = explain(gap_model, np.concatenate([images32, images32]))  # 10 images
    text = repr(exp)
    assert "\n" not in text and len(text) < 250, text
    assert text.startswith("Explanation(method='gradcam', 10 images 32x32x3, layer=")
    assert ", ...]" in text  # targets and scores cut after 8
    assert repr(exp[0]).count("1 image ") == 1


# -- the command line: paths checked before TensorFlow loads, errors in flags ----------------
def _cli_in_a_fresh_process(*args: str) -> tuple[int, str, bool]:
    code = (
        "import sys; from xai_keras.cli import main; rc = main(sys.argv[1:]); "
        "print('TF' if 'tensorflow' in sys.modules else 'noTF'); sys.exit(rc)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    return out.returncode, out.stderr.strip(), out.stdout.strip().endswith("noTF")


def test_cli_path_mistakes_are_answered_before_tensorflow_loads(tmp_path):
    image = ROOT / "docs" / "sag.png"
    code, err, no_tf = _cli_in_a_fresh_process("explain", str(image), "--model", "xception")
    assert code == 2 and no_tf and err.count("\n") == 0
    assert "Model file not found: xception (--model)" in err and "resnet50, vgg16" in err
    code, err, no_tf = _cli_in_a_fresh_process("explain", "nope.png", "--model", "resnet50")
    assert code == 2 and no_tf and "Not found: nope.png" in err
    weights = ("--weights", "nope.h5")
    code, err, no_tf = _cli_in_a_fresh_process("explain", str(image), "--model", "vgg16", *weights)
    assert code == 2 and no_tf and "Weights file not found: nope.h5 (--weights)" in err
    code, err, no_tf = _cli_in_a_fresh_process("sag", "--model", "m.keras", "--image", "x.png")
    assert code == 2 and no_tf and "Model file not found: m.keras" in err


def test_cli_errors_name_the_flag_not_the_python_argument():
    from xai_keras.cli import build_parser
    from xai_keras.cli._preflight import name_flags

    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    explain = sub.choices["explain"]
    assert (
        name_flags("`targets` must be in [0, 3]. Received: [9].", explain)
        == "`--target` must be in [0, 3]. Received: [9]."
    )
    assert (
        name_flags("The `batch_size` argument must be >= 1. Received: batch_size=0.", explain)
        == "The `--batch-size` argument must be >= 1. Received: --batch-size 0."
    )
    assert name_flags("`grid` is wrong", explain) == "`grid` is wrong"  # no such flag: as is


def test_cli_target_error_names_the_flag(gap_model, images32, tmp_path, capsys):
    import cv2

    from xai_keras.cli import main

    gap_model.save(tmp_path / "m.keras")
    cv2.imwrite(str(tmp_path / "a.png"), (images32[0] * 255).astype(np.uint8))
    args = ["explain", str(tmp_path / "a.png"), "--model", str(tmp_path / "m.keras")]
    assert main([*args, "--target", "9", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "`--target`" in err and "`targets`" not in err


def test_saving_into_a_folder_that_cannot_be_written_is_one_line(
    gap_model, images32, monkeypatch, tmp_path
):
    import errno
    import os

    import pytest

    from xai_keras import explain
    from xai_keras.errors import InputError

    exp = explain(gap_model, images32[:1])
    real_open = os.open

    def read_only(path, *args, **kwargs):  # what a read-only folder does (chmod stops no root)
        if str(path).endswith(".png"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(InputError) as caught:
        exp.save(tmp_path / "gradcam.png")
    message = str(caught.value)
    assert message.startswith(
        f"Cannot save {tmp_path / 'gradcam.png'}: read-only file system in {tmp_path}."
    )
    assert "\n" not in message and f"{tmp_path}/." not in message  # no hidden temporary name


def test_benchmark_quick_has_cheap_settings_for_every_sampling_method():
    from xai_keras import methods
    from xai_keras.evaluate.presets import QUICK_OPTIONS
    from xai_keras.explainers.base import get_method

    costly = {"samples", "masks", "steps", "max_channels", "patch"}  # work grows with these
    for name in methods():
        cost = costly & set(get_method(name).options())
        if cost:
            assert cost & set(QUICK_OPTIONS.get(name, {})), f"{name}: no quick setting of {cost}"
