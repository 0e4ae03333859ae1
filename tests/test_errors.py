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

from xai_keras import explain
from xai_keras.checks import check_choice, check_int, check_number
from xai_keras.errors import InputError
from xai_keras.explain.base import _RUNNERS_ATTR, MAX_FUNCTION_HEADS


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
        ("occlusion", {"baseline": "white"}, "one of 'black', 'mean', 'blur'"),
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


@pytest.mark.parametrize("method", [None, 5, 2.5])
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
        runners = getattr(tiny, _RUNNERS_ATTR)
        first = first or weakref.ref(next(r for r in runners.values() if r.head.score))
        sizes.append(sum(r.head.score is not None for r in runners.values()))
    gc.collect()
    assert max(sizes) == sizes[-1] == 2 * MAX_FUNCTION_HEADS  # gradcam's layer + the input
    assert first() is None  # the oldest runner (and its traces) was freed
    # one function reused: its runners stay cached and are not traced again
    score = lambda p: p[:, 0]  # noqa: E731
    explain(tiny, x16, method="saliency", score=score)
    runner = next(r for r in getattr(tiny, _RUNNERS_ATTR).values() if r.head.score is score)
    traces = runner.input_grads_fn.experimental_get_tracing_count()
    for _ in range(5):
        explain(tiny, x16, method="saliency", score=score)
    assert runner.input_grads_fn.experimental_get_tracing_count() == traces
