"""Generated bad (and good) input for the front doors: `explain`, `sag` and the metrics.

Hypothesis draws shapes, dtypes, value ranges, NaN/inf, target forms and method or metric
options. The property every case must keep: the call either returns a finite result of the
right shape, or raises ONE clear line (an `xai_keras.errors` exception, i.e. a `ValueError`
whose message is a single line). A raw exception from deep inside TensorFlow or numpy, a NaN in
a map, or a multi-line message fails the test, and Hypothesis shrinks it to the smallest case.

The default tier runs a few hundred cases per entry point (derandomized, no example database:
the same cases every run, see the profiles in `conftest.py`); the `slow` variants run 2,000
each. `HYPOTHESIS_PROFILE=explore` draws new random cases each run, for bug hunting.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import keras
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from xai_keras import explain, methods, sag
from xai_keras.errors import XaiKerasError
from xai_keras.evaluate import get_metric, metrics

# The 2,000-cases-per-entry-point tier takes over an hour on 2 cores, more than CI's budget
# beside the rest: run it on purpose, `XAI_EXHAUSTIVE=1 pytest -m slow tests/test_generated_*.py`.
EXHAUSTIVE = pytest.mark.skipif(
    not os.environ.get("XAI_EXHAUSTIVE"), reason="set XAI_EXHAUSTIVE=1 for 2,000 cases each"
)

SLOW = 2000  # cases per entry point in the slow tier
SIZE = 16  # the tiny model's input: SIZE x SIZE x 3
CLASSES = 3


def tiny_model() -> keras.Model:
    """Conv-ReLU-Conv-ReLU, global average pooling, softmax over 3 classes, on 16x16 RGB:
    every method and metric runs on it in milliseconds once traced."""
    keras.utils.set_random_seed(3)
    L = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    head = L.Dense(CLASSES, activation="softmax", name="head")
    out = head(L.GlobalAveragePooling2D()(h))
    # Sharper logits: an untrained softmax is near uniform, so no baseline would remove a
    # class and every SAG would stop before its search.
    kernel, bias = head.get_weights()
    head.set_weights([10 * kernel, bias])
    return keras.Model(inputs, out, name="tiny")


MODEL = tiny_model()


# -- the property ---------------------------------------------------------------------------
# Refusals that depend on the numbers, not on the arguments: a valid call may get them (a
# model whose gradients overflow on huge inputs, a class whose probability underflows to 0).
DATA_DEPENDENT = ("is not finite", "probability 0 on this image")


def outcome(call, faults: set[str]) -> Any:
    """`call()`'s result, or None when it raised one clear line (an xai_keras error). Any
    other exception propagates and fails the test; so does an error for a case without
    `faults` (a valid call), unless it is a refusal in `DATA_DEPENDENT`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call()
    except XaiKerasError as err:
        message = str(err)
        event(f"refused: {message[:40]}")
        data = any(d in message for d in DATA_DEPENDENT)
        assert faults or data, f"a valid call was refused: {message}"
        assert message.strip(), f"{type(err).__name__} with an empty message"
        assert "\n" not in message, f"a multi-line message:\n{message}"
        assert len(message) < 1200, f"a message of {len(message)} characters: {message[:300]}"
        return None
    event("result")
    return result


def assert_finite_maps(maps: np.ndarray, n: int) -> None:
    assert maps.shape == (n, SIZE, SIZE), maps.shape
    assert np.isfinite(maps).all(), "NaN or inf in a map"
    assert maps.min() >= 0 and maps.max() <= 1, (maps.min(), maps.max())


# -- strategies -----------------------------------------------------------------------------
# A case is a valid call with up to two faults: each aspect (images, targets, an option, ...)
# is drawn from its good values, or from its bad ones when the aspect is among the faults.
GOOD_SHAPES = [(1, SIZE, SIZE, 3), (2, SIZE, SIZE, 3), (3, SIZE, SIZE, 3), (SIZE, SIZE, 3)]
BAD_SHAPES = [
    (0, SIZE, SIZE, 3),
    (2, SIZE, SIZE, 1),
    (1, SIZE, SIZE, 4),
    (2, 8, 8, 3),
    (1, SIZE + 3, SIZE, 3),
    (SIZE, SIZE),
    (SIZE,),
    (),
    (1, 1, SIZE, SIZE, 3),
    (SIZE, SIZE, 0),
]
SPECIALS = [np.nan, np.inf, -np.inf]


@st.composite
def faults(draw, aspects: tuple[str, ...]) -> set[str]:
    """Which aspects of a case are bad: none (a valid call), one or two."""
    k = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    return set(draw(st.lists(st.sampled_from(aspects), min_size=k, max_size=k, unique=True)))


def aspect(draw, bad: set[str], name: str, good: st.SearchStrategy, wrong: st.SearchStrategy):
    return draw(wrong if name in bad else good)


@st.composite
def images(draw, shapes: list[tuple] = GOOD_SHAPES, bad: bool = False) -> Any:
    """Good: an image or a batch of the model's shape, of any real dtype, uniform, normal or
    constant values at scales from 1e-6 to 1e4. Bad: another shape, NaN/inf values, a bool
    or complex dtype, a string, None, a ragged list."""
    fault = draw(st.sampled_from(["shape", "special", "dtype", "other"])) if bad else None
    if fault == "other":
        return draw(
            st.sampled_from(
                ["image.png", "", None, [np.zeros((SIZE, SIZE, 3)), np.zeros((SIZE - 1, SIZE, 3))]]
            )
        )
    shape = draw(st.sampled_from(BAD_SHAPES if fault == "shape" else shapes))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 255.0, 1e-6, 1e4]))
    fill = draw(st.sampled_from(["uniform", "uniform", "normal", "zeros", "constant"]))
    if fill == "uniform":
        x = rng.uniform(0, 1, shape) * scale
    elif fill == "normal":
        x = rng.normal(0, 1, shape) * scale
    else:
        x = np.full(shape, 0.0 if fill == "zeros" else draw(st.floats(-2, 2)) * scale)
    if fault == "dtype":
        dtype = draw(st.sampled_from(["bool", "complex64", "str"]))
    else:
        dtype = draw(st.sampled_from(["float32"] * 6 + ["float64", "float16", "uint8", "int32"]))
    with np.errstate(all="ignore"):
        x = x.astype(dtype) if dtype != "uint8" else np.clip(x * 255, 0, 255).astype(dtype)
    if fault == "special" and x.size:
        x = x.astype(draw(st.sampled_from(["float32", "float64"])))
        for _ in range(draw(st.integers(1, 3))):
            x.flat[rng.integers(x.size)] = draw(st.sampled_from(SPECIALS))
    return x.tolist() if draw(st.integers(0, 9)) == 0 and x.size < 2000 else x


def _n_of(images: Any) -> int:
    """The number of images in `images` (1 for anything that is not a batch)."""
    try:
        shape = np.shape(images)
    except ValueError:  # a ragged list
        return 1
    return shape[0] if len(shape) == 4 else 1


@st.composite
def targets(draw, n: int, bad: bool = False) -> Any:
    """Good: None, one class, n classes as a list or an array. Bad: out of range, the wrong
    count, floats, bools, strings, nesting, huge ints."""
    if not bad:
        return draw(
            st.one_of(
                st.none(),
                st.integers(0, CLASSES - 1),
                st.sampled_from([np.int64(1), np.int32(0), np.uint8(2)]),
                st.lists(st.integers(0, CLASSES - 1), min_size=n, max_size=n),
                st.lists(st.integers(0, CLASSES - 1), min_size=n, max_size=n).map(np.asarray),
            )
        )
    return draw(
        st.one_of(
            st.sampled_from([-1, -2, CLASSES, CLASSES + 5, 2**40, -(2**40)]),
            st.integers(0, 5)
            .filter(lambda k: k != n)
            .flatmap(lambda k: st.lists(st.integers(0, CLASSES - 1), min_size=k, max_size=k)),
            st.tuples(
                st.lists(st.integers(0, CLASSES - 1), min_size=n, max_size=n),
                st.integers(0, max(n - 1, 0)),
                st.sampled_from([-1, CLASSES, 99]),
            ).map(lambda t: [*t[0][: t[1]], t[2], *t[0][t[1] + 1 :]]),
            st.sampled_from([1.0, 1.5, True, "1", [0.0], [[0]], np.float32(1), float("nan")]),
        )
    )


# Values drawn for a bad option: right and wrong kinds, edges, non-finite numbers.
ANY_VALUE = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([0, -1, 10**9, 2**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, True, False, "", "black", "mean", "blur", "zero", (1, 2), [], {}]),
)
BATCH_SIZES = st.one_of(st.none(), st.integers(1, 4))
BAD_BATCH_SIZES = st.sampled_from([0, -1, 2.5, True, "2", float("nan"), 2**40])
VALUE_RANGES = st.sampled_from([None, (0, 1), (0, 255), (-1, 1), "tf", "unit", "pixels", "0,1"])
BAD_VALUE_RANGES = st.sampled_from(
    [(1, 0), (0, 0), (float("nan"), 1), (0, float("inf")), "nope", (0, 1, 2), 5, "", ("a", "b")]
)

# Small valid options, so every method runs in milliseconds on the tiny model.
SMALL = {
    "scorecam": {"max_channels": 4},
    "finercam": {"comparisons": 1},
    "smoothgrad": {"samples": 2},
    "integrated_gradients": {"steps": 4},
    "occlusion": {"patch": 8},
    "rise": {"masks": 16, "cells": 4},
    "lime": {"samples": 16, "segments": 8},
    "kernelshap": {"samples": 16, "segments": 8},
    "random": {"cells": 4},
}
CHEAP = ["saliency", "gradcam", "occlusion"]
CNN_METHODS = [m for m in methods() if m in methods(model=MODEL)]


@st.composite
def method_options(draw, method: str, bad: bool = False) -> dict:
    """Good: the small options (`SMALL`). Bad: one option (or an unknown one) set to any
    value at all."""
    from xai_keras.explainers.base import get_method

    out = dict(SMALL.get(method, {}))
    if bad:
        names = get_method(method).options()
        name = draw(st.sampled_from([*names, "no_such_option"]))
        out[name] = draw(ANY_VALUE)
    return out


EXPLAIN_ASPECTS = ("images", "targets", "options", "batch_size", "value_range", "layer")


@st.composite
def explain_cases(draw, method_names: list[str]) -> dict:
    from xai_keras.explainers.base import get_method

    bad = draw(faults(EXPLAIN_ASPECTS))
    method = draw(st.sampled_from(method_names))
    x = draw(images(bad="images" in bad))
    case = {
        "images": x,
        "method": method,
        "targets": draw(targets(_n_of(x), bad="targets" in bad)),
        **draw(method_options(method, bad="options" in bad)),
    }
    if "batch_size" in bad or draw(st.booleans()):
        case["batch_size"] = aspect(draw, bad, "batch_size", BATCH_SIZES, BAD_BATCH_SIZES)
    if "value_range" in bad or draw(st.booleans()):
        case["value_range"] = aspect(draw, bad, "value_range", VALUE_RANGES, BAD_VALUE_RANGES)
    if get_method(method).uses_layer:
        # CAM proper needs the layer before the pooling head
        good_layers = [None, "conv2", MODEL.get_layer("conv2")]
        good_layers += ["conv1", MODEL.get_layer("conv1")] if method != "cam" else []
        wrong_layers = ["nope", 3, "", "head", "input_layer", MODEL.layers[0], 1.5]
    else:
        good_layers, wrong_layers = [None], ["conv1", "nope"]
    if "layer" in bad or draw(st.booleans()):
        case["layer"] = aspect(
            draw, bad, "layer", st.sampled_from(good_layers), st.sampled_from(wrong_layers)
        )
    return {"faults": bad, **case}


def check_explain(case: dict) -> None:
    bad = case.pop("faults")
    exp = outcome(lambda: explain(MODEL, **case), bad)
    if exp is None:
        return
    n = _n_of(case["images"])
    assert_finite_maps(exp.maps, n)
    assert exp.targets.shape == (n,) and ((exp.targets >= 0) & (exp.targets < CLASSES)).all()
    assert np.isfinite(exp.scores).all() and np.isfinite(exp.raw).all()


@settings(max_examples=300)
@given(explain_cases(CHEAP))
def test_explain_cheap_methods(case):
    check_explain(case)


@settings(max_examples=60)
@given(explain_cases(CNN_METHODS))
def test_explain_every_method(case):
    check_explain(case)


@pytest.mark.slow
@EXHAUSTIVE
@settings(max_examples=SLOW - 400)
@given(explain_cases(CHEAP))
def test_explain_cheap_methods_slow(case):
    check_explain(case)


@pytest.mark.slow
@EXHAUSTIVE
@settings(max_examples=400)
@given(explain_cases(CNN_METHODS))
def test_explain_every_method_slow(case):
    check_explain(case)


# -- sag ------------------------------------------------------------------------------------
def _ints(low: int, high: int) -> st.SearchStrategy:
    return st.integers(low, high)


BAD_COUNTS = st.sampled_from([0, -1, 1.5, "2", None, float("nan"), True, 2**40])
BAD_FRACTIONS = st.sampled_from([-0.1, 1.5, float("nan"), float("inf"), "0.5", None, True])
SAG_ASPECTS = {
    # name: (good values, bad values); an aspect left out of a case takes sag's default
    "target": (
        st.sampled_from([None, 0, 1, 2, np.int64(1)]),
        st.sampled_from([-1, CLASSES, 1.5, "1", [0, 1], True, float("nan")]),
    ),
    "grid": (
        st.tuples(_ints(1, 4), _ints(1, 4)) | st.lists(_ints(1, 4), min_size=2, max_size=2),
        st.sampled_from(
            [
                (0, 3),
                (3,),
                3,
                (2.0, 2),
                ("a", 2),
                (True, 2),
                (2, 2, 2),
                None,
                (17, 17),
                (1, 40),
                (-2, 2),
                "2x2",
                (2**40, 1),
            ]
        ),
    ),
    "threshold": (
        st.floats(0.05, 1.0),
        st.sampled_from([0, -0.5, float("nan"), float("inf"), 11.0, "0.9", None, True, [0.5]]),
    ),
    "relative": (st.booleans(), st.sampled_from(["yes", None, 2])),
    "baseline": (
        st.sampled_from(["auto", "blur", "blur_strong", "mean", "black", 0.0, 0.5, 1])
        | st.just(np.full((SIZE, SIZE, 3), 0.2, np.float32)),
        st.sampled_from(
            [
                "nope",
                float("nan"),
                float("inf"),
                None,
                "",
                np.zeros((3, 3)),
                np.zeros((SIZE, SIZE, 3)) + np.nan,
                [1, 2],
                object(),
            ]
        ),
    ),
    "beam_width": (_ints(1, 3), BAD_COUNTS),
    "max_size": (st.none() | _ints(1, 4), BAD_COUNTS.filter(lambda v: v is not None)),
    "max_roots": (_ints(1, 3), BAD_COUNTS),
    "max_overlap": (st.floats(0, 1), BAD_FRACTIONS),
    "floor": (st.floats(0, 1), BAD_FRACTIONS),
    "branching": (_ints(1, 3), BAD_COUNTS),
    "max_depth": (_ints(0, 3), BAD_COUNTS.filter(lambda v: v != 0)),
    "candidates": (st.none() | _ints(1, 5), st.sampled_from([0, -1, 1.5, True, "3"])),
    "rank_by": (
        st.sampled_from(["patch_ig", "gradcam", "saliency", "occlusion"]),
        st.sampled_from(["nope", 3, None, "sag", ""]),
    ),
    "extra_sizes": (_ints(0, 2), st.sampled_from([-1, 1.5, "1", None, float("nan")])),
    "batch_size": (st.none() | _ints(1, 8), BAD_BATCH_SIZES),
    "value_range": (VALUE_RANGES, BAD_VALUE_RANGES),
    "class_names": (st.just(["a", "b", "c"]), st.sampled_from([["a"], "abc", 3, [[1]]])),
}
SAG_SHAPES = [(SIZE, SIZE, 3), (1, SIZE, SIZE, 3)]


@st.composite
def sag_cases(draw) -> dict:
    bad = draw(faults(("image", *SAG_ASPECTS)))
    case = {"image": draw(images(SAG_SHAPES, bad="image" in bad))}
    # small searches: a coarse grid unless the case is about the grid
    case["grid"] = draw(st.sampled_from([(2, 2), (3, 3), (2, 3), (4, 4)]))
    for name, (good, wrong) in SAG_ASPECTS.items():
        if name in bad or draw(st.integers(0, 3)) == 0:
            case[name] = aspect(draw, bad, name, good, wrong)
    return {"faults": bad, **case}


def check_sag(case: dict) -> None:
    bad = case.pop("faults")
    g = outcome(lambda: sag(MODEL, **case), bad)
    if g is None:
        return
    rows, cols = g.grid
    assert 0 <= g.target < CLASSES
    assert np.isfinite(g.probability) and 0 <= g.probability <= 1
    for root in g.roots:
        assert root and all(0 <= p < rows * cols for p in root), root
        assert g.confidence(root) >= g.threshold - 1e-6, (root, g.confidence(root))
    for node in g.nodes.values():
        assert np.isfinite(node["confidence"]), node
    assert all(np.isfinite(v) for v in g.baselines_tried.values()), g.baselines_tried
    assert g.roots or g.message, "no roots and no message saying why"


@settings(max_examples=200)
@given(sag_cases())
def test_sag(case):
    check_sag(case)


@pytest.mark.slow
@EXHAUSTIVE
@settings(max_examples=SLOW)
@given(sag_cases())
def test_sag_slow(case):
    check_sag(case)


# -- metrics --------------------------------------------------------------------------------
# Small valid options per metric (and bad values for each option come from ANY_VALUE).
METRIC_OPTIONS = {
    "deletion": {"steps": _ints(2, 6), "baseline": st.sampled_from(["blur", "black", 0.5])},
    "insertion": {"steps": _ints(2, 6), "baseline": st.sampled_from(["blur", "mean"])},
    "faithfulness_correlation": {"runs": _ints(2, 5), "subset_size": st.none() | _ints(1, 64)},
    "faithfulness_estimate": {"features_in_step": st.sampled_from([16, 32, 64])},
    "pixel_flipping": {"features_in_step": st.sampled_from([16, 32, 64])},
    "region_perturbation": {"patch_size": st.sampled_from([4, 8]), "regions": _ints(2, 5)},
    "irof": {"segments": _ints(2, 8)},
    "infidelity": {"samples": _ints(2, 4), "noise": st.floats(0.01, 0.5)},
    "effective_complexity": {"eps": st.floats(0, 0.5)},
    "pointing_game": {"tolerance": _ints(0, 3)},
    "pointing_offcentre": {"tolerance": _ints(0, 3)},
    "top_k_intersection": {"k": st.sampled_from([0.05, 0.5, 1, 10])},
    "road_morf": {"percentiles": st.sampled_from([(20, 50, 80), (50,)])},
    "road_lerf": {"percentiles": st.sampled_from([(20, 50, 80), (50,)])},
    "max_sensitivity": {"samples": _ints(1, 3), "radius": st.floats(0.001, 0.1)},
    "avg_sensitivity": {"samples": _ints(1, 3)},
    "local_lipschitz": {"samples": _ints(1, 3)},
    "relative_input_stability": {"samples": _ints(1, 3)},
    "smooth_mprt": {"samples": _ints(1, 2)},
    "completeness": {"baseline": st.sampled_from(["black", "mean", 0.0])},
    "input_invariance": {"shift": st.none() | st.floats(-1, 1)},
}
# The metrics that explain the images themselves run with these methods (and small options).
METRIC_METHODS = {"completeness": ["integrated_gradients", "saliency"]}
EXPENSIVE_METRICS = {"sanity_top_spearman", "sanity_spearman", "sanity_ssim", "smooth_mprt"}
CHEAP_METRICS = [
    m for m in metrics() if "method" not in get_metric(m).needs and m not in EXPENSIVE_METRICS
]
METRIC_ASPECTS = ("images", "maps", "masks", "cue_masks", "targets", "options", "batch_size")


@st.composite
def maps_for(draw, n: int, bad: bool = False) -> Any:
    """Good: non-negative (n, H, W) maps (or one (H, W) map for one image), random, sparse,
    constant or all zero. Bad: another shape, NaN/inf, negative values, not numbers."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if bad:
        return draw(
            st.sampled_from(
                [
                    rng.uniform(0, 1, (n + 1, SIZE, SIZE)),
                    rng.uniform(0, 1, (n, SIZE // 2, SIZE)),
                    rng.uniform(0, 1, (n, SIZE)),
                    np.full((n, SIZE, SIZE), np.nan),
                    np.where(rng.uniform(size=(n, SIZE, SIZE)) < 0.1, np.inf, 1.0),
                    -rng.uniform(0.1, 1, (n, SIZE, SIZE)),
                    "maps",
                    None,
                    np.zeros((0, SIZE, SIZE)),
                ]
            )
        )
    kind = draw(st.sampled_from(["uniform", "uniform", "sparse", "constant", "zeros", "huge"]))
    m = rng.uniform(0, 1, (n, SIZE, SIZE))
    if kind == "sparse":
        m = np.where(m > 0.95, m, 0.0)
    elif kind == "constant":
        m = np.full_like(m, 0.5)
    elif kind == "zeros":
        m = np.zeros_like(m)
    dtypes = ["float32", "float64"] if kind == "huge" else ["float32", "float64", "float16"]
    m = (m * 1e30 if kind == "huge" else m).astype(draw(st.sampled_from(dtypes)))
    return m[0] if n == 1 and draw(st.booleans()) else m


@st.composite
def masks_for(draw, n: int, bad: bool = False) -> Any:
    """Good: boolean (n, H, W) object masks (a box, all True, empty) or 0/1 numbers. Bad:
    another shape, other numbers, not numbers."""
    if bad:
        return draw(
            st.sampled_from(
                [
                    np.ones((n + 1, SIZE, SIZE), bool),
                    np.full((n, SIZE, SIZE), 0.5),
                    np.ones((n, 4, 4), bool),
                    "mask",
                    None,
                    np.full((n, SIZE, SIZE), np.nan),
                ]
            )
        )
    kind = draw(st.sampled_from(["box", "box", "box", "all", "empty"]))
    m = np.zeros((n, SIZE, SIZE), bool)
    if kind == "box":
        top, left = draw(_ints(0, SIZE - 1)), draw(_ints(0, SIZE - 1))
        m[:, top : top + draw(_ints(1, SIZE)), left : left + draw(_ints(1, SIZE))] = True
    elif kind == "all":
        m[:] = True
    return m.astype(np.uint8) if draw(st.booleans()) else m


@st.composite
def metric_cases(draw, names: list[str]) -> dict:
    bad = draw(faults(METRIC_ASPECTS))
    name = draw(st.sampled_from(names))
    metric = get_metric(name)
    x = draw(images(bad="images" in bad))
    n = _n_of(x)
    case = {
        "model": MODEL,
        "images": x,
        "maps": draw(maps_for(n, bad="maps" in bad)),
        "masks": draw(masks_for(n, bad="masks" in bad)),
        "cue_masks": draw(masks_for(n, bad="cue_masks" in bad)),
        "targets": draw(targets(n, bad="targets" in bad)),
    }
    if "batch_size" in bad or draw(st.booleans()):
        case["batch_size"] = aspect(draw, bad, "batch_size", BATCH_SIZES, BAD_BATCH_SIZES)
    options = {k: draw(v) for k, v in METRIC_OPTIONS.get(name, {}).items()}
    if "method" in metric.needs:
        method = draw(st.sampled_from(METRIC_METHODS.get(name, CHEAP)))
        case["method"] = method
        options.update(draw(method_options(method)))
    if "options" in bad:  # an unknown name only where the function takes **options
        keys = [p for p in _parameters(metric) if p not in case]
        takes_any = len(_parameters(metric, True)) > len(_parameters(metric))
        keys += ["no_such_option"] if takes_any else []
        if keys:
            options[draw(st.sampled_from(keys))] = draw(ANY_VALUE)
    return {"faults": bad, "name": name, "options": options, **case}


def _parameters(metric, var_keyword: bool = False) -> list[str]:
    """The names the metric's function takes (and its **options, with `var_keyword`)."""
    import inspect

    params = inspect.signature(metric.function).parameters
    return [p for p, v in params.items() if var_keyword or v.kind is not v.VAR_KEYWORD]


def check_metric(case: dict) -> None:
    """Called as the readers call a metric (by keyword, what its signature names), with the
    case's options on top; per-image values come back (N,) and finite, aggregates finite."""
    bad, name, options = case.pop("faults"), case.pop("name"), case.pop("options")
    metric = get_metric(name)
    params = _parameters(metric)
    kwargs = {k: v for k, v in case.items() if k in params}
    maps = case["maps"]
    n = _n_of(case["images"]) if "images" in params else (len(maps) if np.ndim(maps) == 3 else 1)
    result = outcome(lambda: metric.function(**kwargs, **{**options, **metric.options}), bad)
    if result is None:
        return
    values = np.asarray(metric.values(result), np.float64)
    if metric.per_image:
        assert values.shape == (n,), (name, values.shape)
    else:
        assert values.shape == (), (name, values.shape)
    # NaN only where the metric says it does not apply to an image (an empty mask, a
    # constant map), as its docstring states
    documented = "NaN" in (metric.function.__doc__ or "")
    assert np.isfinite(values[~np.isnan(values)] if documented else values).all(), (name, values)


@settings(max_examples=250)
@given(metric_cases(CHEAP_METRICS))
def test_metrics(case):
    check_metric(case)


@settings(max_examples=40)
@given(metric_cases(metrics()))
def test_every_metric(case):
    check_metric(case)


@pytest.mark.slow
@EXHAUSTIVE
@settings(max_examples=SLOW - 400)
@given(metric_cases(CHEAP_METRICS))
def test_metrics_slow(case):
    check_metric(case)


@pytest.mark.slow
@EXHAUSTIVE
@settings(max_examples=400)
@given(metric_cases(metrics()))
def test_every_metric_slow(case):
    check_metric(case)


# -- regressions: bugs the generated cases found, as plain tests ----------------------------
X1 = np.random.default_rng(0).uniform(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("layer", ["input_layer", 0])
@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_a_cam_of_the_input_layer_is_one_line(method, layer):
    # was: TypeError "Cannot convert ... None to a TensorFlow DType" from inside the kernel
    # (scorecam: AttributeError), as the input layer has no activation to record
    layer = MODEL.layers[0] if layer == 0 else layer
    with pytest.raises(XaiKerasError, match="is the model's input.*method='saliency'"):
        explain(MODEL, X1, method, layer=layer)


@pytest.mark.parametrize("baseline", [None, float("nan"), float("inf"), object(), True, []])
def test_a_baseline_that_is_no_finite_number_is_one_line(baseline):
    # was: TensorFlow's ValueError "Attempt to convert a value (None) ..." (NaN: NaN maps)
    from xai_keras.evaluate import deletion

    for call in (
        lambda: sag(MODEL, X1[0], grid=(2, 2), baseline=baseline),
        lambda: explain(MODEL, X1, "integrated_gradients", steps=2, baseline=baseline),
        lambda: deletion(MODEL, X1, np.ones((1, SIZE, SIZE)), steps=2, baseline=baseline),
    ):
        with pytest.raises(XaiKerasError, match="baseline must be one of .* a finite number"):
            call()


@pytest.mark.parametrize(
    "setting",
    [
        {"threshold": "0.9"},  # was: TypeError "'<' not supported between int and str"
        {"threshold": float("nan")},
        {"threshold": 1.5, "relative": False},
        {"relative": "yes"},  # was: taken as True
        {"floor": float("nan")},  # these were not checked at all
        {"max_overlap": 2.0},
        {"max_depth": -1},
        {"max_size": 0},
        {"extra_sizes": 1.5},
        {"beam_width": 2.5},
        {"max_roots": "3"},  # was: TypeError from min()
    ],
)
def test_sag_search_settings_are_checked_in_one_line(setting):
    name = next(iter(setting))
    with pytest.raises(XaiKerasError, match=f"`{name}` must be"):
        sag(MODEL, X1[0], grid=(2, 2), **setting)


def test_sag_accepts_a_relative_threshold_above_one():
    # a relative confidence can exceed 1 (a patch set surer than the whole image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # maybe no set is that sure: then it says so
        g = sag(MODEL, X1[0], grid=(2, 2), threshold=1.05, relative=True)
    assert g.threshold == 1.05


def test_pointing_game_with_a_tolerance_beyond_the_image():
    # was: cv2's TypeError "Can't parse 'ksize'" for a tolerance of 2**40 pixels
    from xai_keras.evaluate import pointing_game

    maps = np.zeros((2, SIZE, SIZE))
    maps[:, 0, 0] = 1
    masks = np.zeros((2, SIZE, SIZE), bool)
    masks[0, -1, -1] = True  # far from the peak, inside any tolerance beyond the image
    assert pointing_game(maps, masks, tolerance=2**40).tolist() == [1.0, 0.0]
    assert pointing_game(maps, masks, tolerance=0).tolist() == [0.0, 0.0]
