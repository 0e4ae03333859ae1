"""The metric registry: what is registered, how readers call it, and that a new metric reaches
the benchmark table, explain_dataset and the CLI without touching them."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from xai_keras.errors import InputError
from xai_keras.evaluate import (
    get_metric,
    metrics,
    pointing_game,
    pointing_offcentre,
    register_metric,
    registry,
)
from xai_keras.explainers.session import Session


@pytest.fixture
def scratch_registry(monkeypatch):
    """Metrics registered in a test vanish after it."""
    monkeypatch.setattr(registry, "_METRICS", dict(registry._METRICS))


def test_the_registered_metrics_their_order_and_directions():
    # The benchmark's former METRICS table, column -> higher is better, in its order.
    before = {
        "deletion_auc": False,
        "insertion_auc": True,
        "average_drop": False,
        "increase": True,
        "pointing_game": True,
        "pointing_offcentre": True,
        "energy_pointing": True,
        "road_morf": False,  # ROAD, added as one module (evaluate/road.py)
        "road_lerf": True,
        "sanity_top_spearman": False,
        "sanity_spearman": False,
        "sanity_ssim": False,
        "shortcut_rate": True,
    }
    # The metric families added later (`metrics(default=False)`) are opt-in: the benchmark's
    # table keeps these columns.
    default = metrics(default=True)
    assert {get_metric(n).key: get_metric(n).higher_is_better for n in default} == before
    assert list(before) == [get_metric(n).key for n in default]
    assert metrics(needs=("model",), per_image=True, default=True) == [
        "deletion",
        "insertion",
        "average_drop",
        "increase",
        "road_morf",
        "road_lerf",
    ]
    assert metrics(needs=("masks",), default=True) == [
        "pointing_game",
        "pointing_offcentre",
        "energy_pointing",
    ]
    assert not get_metric("shortcut_rate").per_image
    assert [n for n in default if get_metric(n).absolute] == [
        "sanity_top_spearman",
        "sanity_spearman",
        "sanity_ssim",
    ]
    for name in metrics():
        m = get_metric(name)
        assert m.description and "\n" not in m.description
    assert "Petsiuk" in get_metric("deletion").reference


def test_unknown_metric_is_one_line_listing_the_names():
    with pytest.raises(InputError, match=r"Unknown metric 'rode'\. Registered metrics: deletion, "):
        get_metric("rode")


def test_register_metric_checks_its_arguments(scratch_registry):
    with pytest.raises(InputError, match=r"`direction` option of metric 'x' must be one of"):
        register_metric("x", direction="up", description="x")
    with pytest.raises(InputError, match=r"`needs` option of metric 'x' must be one of"):
        register_metric("x", direction="higher", needs=("labels",), description="x")
    with pytest.raises(InputError, match=r"must take the argument\(s\) model, images by name"):
        register_metric("x", direction="higher", needs=("model",), description="x")(
            lambda maps: maps
        )
    with pytest.raises(InputError, match=r"'deletion' is already registered"):
        register_metric("deletion", direction="lower", description="x")(lambda maps: maps)


def test_shared_functions_run_once_and_values_pick_their_part(scratch_registry):
    calls = []

    def pair(maps, scale=1.0):
        calls.append(scale)
        m = np.asarray(maps, np.float64)
        return m.mean(axis=(1, 2)) * scale, m.max(axis=(1, 2))

    register_metric("toy_mean", direction="higher", description="m", value=lambda r: r[0])(pair)
    register_metric("toy_max", direction="lower", description="m", value=lambda r: r[1])(pair)
    maps = np.stack([np.zeros((4, 4)), np.ones((4, 4))])
    values, results = registry.compute(["toy_mean", "toy_max"], maps=maps, scale=2.0, unused=1)
    assert calls == [2.0]  # one call; `scale` passed because `pair` names it, `unused` not
    np.testing.assert_array_equal(values["toy_mean"], [0.0, 2.0])
    np.testing.assert_array_equal(values["toy_max"], [0.0, 1.0])
    assert results["toy_mean"] is results["toy_max"]


def test_pointing_offcentre_is_nan_where_the_object_covers_the_centre():
    maps = np.zeros((2, 9, 9))
    maps[:, 1, 1] = 1.0
    masks = np.zeros((2, 9, 9), bool)
    masks[0, 3:6, 3:6] = True  # covers the centre (4, 4)
    masks[1, 0:3, 0:3] = True
    hits = pointing_offcentre(maps, masks)
    assert np.isnan(hits[0]) and hits[1] == 1.0
    assert pointing_game(maps, masks)[1] == hits[1]
    assert get_metric("pointing_offcentre").mean(hits) == 1.0
    assert get_metric("pointing_offcentre").mean(hits[:1]) is None  # no off-centre object


def _energy_near_centre(maps, masks=None):
    """A toy per-image metric: the share of the map's mass in the central third."""
    m = np.asarray(maps, np.float64)
    h, w = m.shape[1:]
    inner = m[:, h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].sum(axis=(1, 2))
    return inner / np.maximum(m.sum(axis=(1, 2)), 1e-12)


def _toy_model_metric(model, images, maps, targets=None, batch_size=64):
    """A toy per-image metric that needs the model (a model or a `Session`, as readers pass
    it): the target probability."""
    probs = Session.of(model).probabilities(np.asarray(images))
    return probs[np.arange(len(probs)), np.asarray(targets)]


def test_a_new_metric_reaches_the_table_and_explain_dataset(
    scratch_registry, tmp_path, monkeypatch
):
    from xai_keras.evaluate.report import columns, to_markdown
    from xai_keras.scale import DatasetExplanation, explain_dataset

    register_metric("centre_energy", direction="higher", description="c")(_energy_near_centre)
    register_metric("toy_probability", direction="higher", needs=("model",), description="p")(
        _toy_model_metric
    )
    assert list(columns())[-4:] == [
        "centre_energy",
        "toy_probability",
        "ms_per_image",
        "forward_equivalents",
    ]
    rows = {"a": {"centre_energy": 0.2}, "b": {"centre_energy": 0.7}, "c": {"centre_energy": 0.4}}
    results = {
        "meta": {"n": 2, "seed": 0, "quick": False, "machine": "m"},
        "datasets": {"d": {"accuracy": 1.0, "methods": rows}},
    }
    assert "| b | **0.700** |" in to_markdown(results)

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    images = np.random.default_rng(0).random((5, 8, 8, 3)).astype("float32")
    # explain_dataset reads the registry when called: a metric registered late is offered.
    names = tuple(registry.metrics(needs=("model",), per_image=True))
    assert names[-2:] == ("centre_energy", "toy_probability")  # needs no more than the model
    result = explain_dataset(
        model, images, "gradcam", out=tmp_path / "run", metrics=list(names[-2:]), batch_size=4
    )
    index = DatasetExplanation.open(tmp_path / "run").index
    expected = _toy_model_metric(model, images, None, result.targets)
    np.testing.assert_allclose([r["toy_probability"] for r in index], expected, atol=1e-5)
    centre = _energy_near_centre(result.maps[:])
    np.testing.assert_allclose([r["centre_energy"] for r in index], centre, atol=2e-3)
    # The run's first metric in registry order ranks the worst images, by its direction.
    worst = result.summary()["worst"]
    assert worst["key"] == "centre_energy"
    assert worst["criterion"] == "lowest centre energy (least faithful maps)"


def test_cli_metrics_flag_lists_the_registry_choices(tmp_path, capsys):
    from xai_keras.cli import main

    inp = keras.Input((8, 8, 3))  # a real model file: paths are checked before the metrics
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp))).save(tmp_path / "m.keras")
    code = main(["explain-dataset", str(tmp_path), "--model", str(tmp_path / "m.keras"), "--out",
                 str(tmp_path / "o"), "--metrics", "deletion,pointing_game"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    offered = metrics(needs=("model",), per_image=True)  # the opt-in families too
    assert offered[:4] == ["deletion", "insertion", "average_drop", "increase"]
    assert {"faithfulness_correlation", "irof", "sparseness", "road_morf"} <= set(offered)
    assert (
        "--metrics deletion,pointing_game: unknown here: pointing_game. Choose from: "
        f"{', '.join(offered)}." in err
    )


def test_metric_options_reach_only_the_function_they_name(gap_model, images32):
    from xai_keras.evaluate.registry import compute

    maps = np.random.default_rng(0).uniform(size=images32.shape[:3])
    common = dict(model=Session.of(gap_model), images=images32[:2], maps=maps[:2])
    _, plain = compute(["road_morf", "deletion"], **common)
    _, quick = compute(
        ["road_morf", "deletion"],
        metric_options={"road": {"percentiles": (20, 50, 80)}, "nope": {"steps": 1}},
        **common,
    )
    assert plain["road_morf"].percentiles.tolist() == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert quick["road_morf"].percentiles.tolist() == [20, 50, 80]
    # The same curve at the percentiles both measured, up to the imputation noise (its draws
    # follow the percentiles measured).
    np.testing.assert_allclose(quick["road_morf"].morf, plain["road_morf"].morf[:, [1, 4, 7]],
                               atol=2e-3)
    np.testing.assert_array_equal(quick["deletion"].auc, plain["deletion"].auc)
