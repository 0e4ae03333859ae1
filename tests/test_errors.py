"""Every bad input a clear, one-line error (issue 17): method options, model outputs, the
runner cache under fresh score functions, and the CLI's files and flags."""

from __future__ import annotations

import gc
import re
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras import explain, sag
from xai_keras.checks import check_choice, check_int, check_number
from xai_keras.errors import InputError
from xai_keras.explainers.graph import model_store
from xai_keras.explainers.session import MAX_FUNCTION_HEADS


@pytest.fixture(scope="module")
def tiny() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ],
        name="tiny",
    )


@pytest.fixture(scope="module")
def x16() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)


# -- checks ---------------------------------------------------------------------------------------
def test_checks_return_clean_values_and_share_one_template():
    assert check_int(np.int64(3), "steps", low=1) == 3 and type(check_int(3, "n")) is int
    assert check_int(None, "patch", low=1, allow_none=True) is None
    assert check_number(1, "sigma", low=0, low_open=True) == 1.0
    assert check_choice("mean", "baseline", ("black", "mean")) == "mean"
    with pytest.raises(InputError, match=r"^`steps` must be an int >= 1\. Received: steps=True\.$"):
        check_int(True, "steps", low=1)
    with pytest.raises(InputError, match=r"must be an int in \[0, 5\]\. Received: k=3\.0"):
        check_int(3.0, "k", low=0, high=5)
    with pytest.raises(InputError, match=r"of method 'm' must be a finite number in \(0, 1\]"):
        check_number(float("inf"), "p", low=0, high=1, low_open=True, where="method 'm'")
    with pytest.raises(InputError, match=r"must be one of 'black', 'mean'\. Received: b=array"):
        check_choice(np.zeros(2), "b", ("black", "mean"))


# -- method options -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "options", "rule"),
    [
        ("integrated_gradients", {"steps": -3}, "an int >= 1"),
        ("integrated_gradients", {"steps": 0}, "an int >= 1"),
        ("integrated_gradients", {"steps": 2.5}, "an int >= 1"),
        ("smoothgrad", {"samples": 0}, "an int >= 1"),
        ("smoothgrad", {"noise": float("nan")}, "a finite number >= 0.0"),
        ("smoothgrad", {"seed": -1}, r"an int in \[0, 2147483647\]"),
        ("centre", {"sigma": 0}, "a finite number > 0.0"),
        ("occlusion", {"patch": 0}, "None or an int >= 1"),
        ("occlusion", {"stride": 0}, "None or an int >= 1"),
        ("occlusion", {"stride": -2}, "None or an int >= 1"),
        ("occlusion", {"baseline": "white"}, "one of 'black', 'mean', 'blur'.*"),
        ("scorecam", {"max_channels": 0}, "None or an int >= 1"),
        ("scorecam", {"max_channels": -1}, "None or an int >= 1"),
        ("random", {"cells": 0}, "an int >= 1"),
        ("random", {"seed": 2**40}, r"an int in \[0, 2147483647\]"),
    ],
)
def test_bad_method_options_are_refused_at_creation(tiny, x16, method, options, rule):
    ((name, value),) = options.items()
    received = re.escape(f"{name}={value!r}")
    pattern = rf"^The `{name}` option of method '{method}' must be {rule}\. Received: {received}\.$"
    with pytest.raises(InputError, match=pattern):
        explain(tiny, x16, method=method, **options)


@pytest.mark.parametrize("method", [5, 2.5])  # None is the model's default method
def test_method_that_is_not_a_name_is_refused(tiny, x16, method):
    with pytest.raises(
        InputError, match=rf"`method` must be a method name .* Received: method={method!r}\. "
    ):
        explain(tiny, x16, method=method)


# -- outputs with spatial dimensions --------------------------------------------------------------
def test_segmentation_output_needs_a_score(x16):
    inp = keras.Input((16, 16, 3))
    seg = keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same", name="mask")(inp))
    with pytest.raises(
        InputError,
        match=r"'mask' .* shape \(None, 16, 16, 2\): it has spatial.*"
        r"score=lambda out: tf\.reduce_mean\(out\[\.\.\., k\], axis=\(1, 2\)\)",
    ):
        explain(seg, x16, method="saliency")
    with pytest.raises(InputError, match=r"'mask' .* it has spatial dimensions"):
        sag(seg, x16[0], grid=(2, 2))
    exp = explain(
        seg, x16, method="saliency", score=lambda out: tf.reduce_mean(out[..., 1], axis=(1, 2))
    )
    assert exp.maps.shape == (2, 16, 16)
    # (N, 1, 1, K) and (N, K) heads are still classes
    pooled = keras.Model(inp, keras.layers.Conv2D(3, 16, name="head")(inp))  # (N, 1, 1, 3)
    assert explain(pooled, x16, method="saliency", targets=2).targets.tolist() == [2, 2]


def test_subclassed_segmentation_output_needs_a_score(x16):
    class Seg(keras.Model):
        def __init__(self):
            super().__init__(name="seg")
            self.conv = keras.layers.Conv2D(2, 3, padding="same")

        def call(self, x):
            return self.conv(x)

    with pytest.raises(
        InputError, match=r"Output 0 of model 'seg' has shape \(None, 16, 16, 2\): it has spatial"
    ):
        explain(Seg(), x16, method="saliency")


# -- runner cache ---------------------------------------------------------------------------------
def test_fresh_score_lambdas_keep_the_runner_cache_bounded(tiny, x16):
    first = None
    sizes = []
    for i in range(30):
        explain(tiny, x16, method=["gradcam", "saliency"], score=lambda p, i=i: p[:, i % 3])
        runners = model_store(tiny)["runners"]
        first = first or weakref.ref(next(r for r in runners.values() if r.head.score))
        sizes.append(sum(r.head.score is not None for r in runners.values()))
    gc.collect()
    assert max(sizes) == sizes[-1] == 2 * MAX_FUNCTION_HEADS  # gradcam's layer + the input
    assert first() is None  # the oldest runner (and its traces) was freed
    # one function reused: its runners stay cached and are not traced again
    score = lambda p: p[:, 0]  # noqa: E731
    explain(tiny, x16, method="saliency", score=score)
    runner = next(r for r in model_store(tiny)["runners"].values() if r.head.score is score)
    traces = runner.input_grads_fn.experimental_get_tracing_count()
    for _ in range(5):
        explain(tiny, x16, method="saliency", score=score)
    assert runner.input_grads_fn.experimental_get_tracing_count() == traces


# -- CLI ------------------------------------------------------------------------------------------
def _cli(capsys, *argv: str) -> tuple[int, str]:
    from xai_keras.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def _one_line(err: str) -> str:
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_batch_of_mixed_sizes_names_the_sizes_and_the_resize_that_fixes_it(tiny):
    rng = np.random.default_rng(1)
    images = [rng.uniform(0, 1, shape).astype(np.float32) for shape in
              ((16, 16, 3), (20, 12, 3), (16, 16, 3), (24, 24, 3))]
    with pytest.raises(InputError) as caught:
        explain(tiny, images)
    message = _one_line(str(caught.value))
    assert "`images` are 4 images of different sizes (2 of 16x16, 1 of 20x12, 1 of 24x24)" in (
        message
    )
    assert "[keras.ops.image.resize(im, (16, 16)) for im in images]" in message
    # The advice works as written.
    fixed = [keras.ops.image.resize(im, (16, 16)) for im in images]
    assert explain(tiny, fixed).maps.shape == (4, 16, 16)
    # A dataset of mixed sizes and a model of any size: sizes too, and one size to pick.
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec((None, None, 3), tf.float32)
    )
    anysize = keras.Sequential([keras.Input((None, None, 3)), *tiny.layers], name="anysize")
    with pytest.raises(InputError, match=r"one size, e.g. 224x224 \(the model takes any\)"):
        explain(anysize, dataset)
    # Channels are named where they differ.
    with pytest.raises(InputError, match=r"\(1 of 16x16x3, 1 of 16x16x1\)"):
        explain(tiny, [images[0], images[0][..., :1]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """A tiny fixed-size and a tiny any-size model saved as .keras, and a few image files."""
    import cv2

    root = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    paths = {}
    for name, shape in (("fixed", (16, 16, 3)), ("anysize", (None, None, 3))):
        inp = keras.Input(shape)
        h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
        out = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(h))
        paths[name] = root / f"{name}.keras"
        keras.Model(inp, out, name=name).save(paths[name])
    rng = np.random.default_rng(0)
    for name, (h, w) in (("a", (24, 20)), ("b", (24, 20)), ("c", (12, 12))):
        paths[name] = root / f"{name}.png"
        cv2.imwrite(str(paths[name]), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    paths["jpg"] = root / "whole.jpg"
    cv2.imwrite(str(paths["jpg"]), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = paths["jpg"].read_bytes()
    paths["truncated"] = root / "truncated.jpg"
    paths["truncated"].write_bytes(data[: len(data) // 2])
    return {k: str(v) for k, v in paths.items()}


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "it is empty"), (bytes(range(256)) * 8, "it is not a zip archive")],
)
def test_cli_corrupt_model_file_is_one_line(saved, tmp_path, capsys, content, reason):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(content)
    code, err = _cli(capsys, "explain", saved["a"], "--model", str(bad), "--out", str(tmp_path))
    assert code == 2
    assert f"{bad} is not a readable Keras model file ({reason})" in _one_line(err)
    assert "model.save('name.keras')" in err


def test_cli_any_size_model_keeps_the_image_size_or_takes_size(saved, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("explain", "--model", saved["anysize"], "--out", str(out), "--quiet")
    assert _cli(capsys, *args, saved["a"], saved["b"])[0] == 0  # both 24x20: kept
    code, err = _cli(capsys, *args, saved["a"], saved["c"])
    assert code == 2
    assert "the 2 images differ (1 of 24x20 (a.png), 1 of 12x12 (c.png))" in _one_line(err)
    assert "pass --size H,W" in err
    assert _cli(capsys, *args, saved["a"], saved["c"], "--size", "16,16")[0] == 0
    code, err = _cli(
        capsys, "explain", saved["a"], "--model", saved["fixed"], "--out", str(out), "--size", "8,8"
    )
    assert code == 2 and "does not match the model's input size 16x16" in _one_line(err)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("missing.txt", r"--classes missing.txt: no such file; pass inline JSON"),
        ("bad.json", r"--classes .*bad.json: invalid JSON \(Expecting"),
        ("dict.json", r"a dict must have the keys \"0\"..\"1\" .* it has 'cat', 'dog'"),
        ('["cat", "dog"]', r"--classes gives 2 names but model 'fixed' has 5 classes"),
        ('{"0": "cat", "1": "dog"}', r"--classes gives 2 names but model 'fixed' has 5 classes"),
        ('["cat", "dog"', r"--classes: invalid JSON"),
    ],
)
def test_cli_classes_errors_are_one_line(saved, tmp_path, monkeypatch, capsys, classes, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text('["cat", ')
    (tmp_path / "dict.json").write_text('{"cat": 0, "dog": 1}')
    args = ("explain", saved["a"], "--model", saved["fixed"], "--out", str(tmp_path / "o"))
    code, err = _cli(capsys, *args, "--classes", classes)
    assert code == 2
    assert re.search(message, _one_line(err)), err


def test_cli_inline_classes_are_read_as_json(saved, tmp_path, capsys):
    names = '["a0", "a1", "a2", "a3", "a4"]'
    from xai_keras.cli import main, parse_class_names

    args = ["explain", saved["a"], "--model", saved["fixed"], "--out", str(tmp_path)]
    assert main([*args, "--target", "3", "--classes", names]) == 0
    assert f"{saved['a']}: a3 (" in capsys.readouterr().out

    assert parse_class_names(names) == ["a0", "a1", "a2", "a3", "a4"]
    assert parse_class_names('{"1": "dog", "0": "cat"}') == ["cat", "dog"]


def test_cli_truncated_jpeg_is_refused(saved, tmp_path, capsys):
    args = ("explain", "--model", saved["fixed"], "--out", str(tmp_path))
    assert _cli(capsys, *args, saved["jpg"])[0] == 0
    code, err = _cli(capsys, *args, saved["truncated"])
    assert code == 2
    assert f"Image {saved['truncated']} is truncated or corrupt" in _one_line(err)


def test_cli_unwritable_out_is_refused_before_the_work(saved, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")  # works as root too, unlike chmod
    import xai_keras.cli.sag
    import xai_keras.evaluate.benchmark as bench

    def never(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(bench, "run_benchmark", never)
    monkeypatch.setattr(xai_keras.cli.sag, "load_model", never)
    out = str(blocker / "sag.png")
    code, err = _cli(capsys, "sag", "--model", saved["fixed"], "--image", saved["a"], "--out", out)
    assert code == 2 and f"The folder of --out {blocker} is not writable" in _one_line(err)
    code, err = _cli(capsys, "benchmark", "--quick", "--out", str(blocker / "bench"))
    assert code == 2 and f"The --out folder {blocker / 'bench'} is not writable" in _one_line(err)


def test_cli_full_disk_says_what_was_written(saved, tmp_path, monkeypatch, capsys):
    import errno

    import xai_keras.io

    real = xai_keras.io.save_figure
    calls = []

    def fill_up(fig, path, dpi=100):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(fig, path, dpi)

    monkeypatch.setattr(xai_keras.io, "save_figure", fill_up)
    out = tmp_path / "out"
    args = ("explain", saved["a"], saved["b"], "--model", saved["fixed"], "--out", str(out))
    code, err = _cli(capsys, *args, "--method", "gradcam", "--quiet")
    assert code == 2
    assert "No space left on device" in _one_line(err)
    assert f"1 of 3 files were written to {out} (the last: a_gradcam.png)" in err
    assert "the other 2 were not" in err


def test_cli_full_disk_in_sag_and_benchmark_is_one_line(saved, tmp_path, monkeypatch, capsys):
    import errno
    import sys

    import xai_keras.evaluate.benchmark as bench

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.json"))

    sag_module = sys.modules["xai_keras.explainers.sag"]
    monkeypatch.setattr(sag_module.SAG, "to_json", full)
    out = tmp_path / "sag.png"
    args = ("sag", "--model", saved["fixed"], "--image", saved["a"], "--grid", "2x2")
    code, err = _cli(capsys, *args, "--out", str(out), "--quiet")
    assert code == 2 and "No space left on device" in _one_line(err)
    assert f"1 of 2 files were written to {tmp_path} (the last: sag.png)" in err
    monkeypatch.setattr(bench, "run_benchmark", full)
    bench_args = ("--out", str(tmp_path / "b"), "--cache", str(tmp_path / "c"), "--quiet")
    code, err = _cli(capsys, "benchmark", "--quick", *bench_args)
    assert code == 2 and "No space left on device" in _one_line(err)
