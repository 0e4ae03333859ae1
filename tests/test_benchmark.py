"""The benchmark runner end to end on a small dataset, and the metrics' verdicts on shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from xai_keras import explain
from xai_keras.cli import main
from xai_keras.evaluate import pointing_game, shortcut_rate
from xai_keras.evaluate.benchmark import run_benchmark


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out, cache = tmp_path_factory.mktemp("bench"), tmp_path_factory.mktemp("models")
    options = dict(
        method_names=["gradcam", "saliency", "random", "centre"],
        n=12,
        quick=True,
        cache=cache,
        n_sanity=2,
        n_sag=1,
    )
    first = run_benchmark(["digits"], out=out, **options)
    second = run_benchmark(["digits"], out=out / "again", **options)  # loads the cached model
    return out, first, second


def test_results_shape_files_and_tensorboard(bench):
    out, results, _ = bench
    rows = results["datasets"]["digits"]["methods"]
    assert set(rows) == {"gradcam", "saliency", "random", "centre"}
    for key in ("deletion_auc", "insertion_auc", "average_drop", "ms_per_image"):
        assert all(0 <= rows[m][key] < np.inf for m in rows)
    assert "sanity_spearman" in rows["gradcam"] and "sanity_spearman" not in rows["random"]
    assert json.loads((out / "results.json").read_text())["datasets"]["digits"]["methods"]
    # Quick mode computes every column (ROAD at 3 percentiles, sanity at both ends) and says so.
    for key in ("road_morf", "road_lerf", "sanity_top_spearman", "sanity_spearman", "sanity_ssim"):
        assert np.isfinite(rows["gradcam"][key]), key
    md = (out / "results.md").read_text()
    assert "## digits" in md and "| gradcam |" in md and "**" in md
    assert "road percentiles=(20, 50, 80)" in md and "measure_at=ends" in md
    assert "the sanity check on 2 images" in md
    for kind in ("curves", "examples", "sanity"):
        assert (out / f"digits_{kind}.png").stat().st_size > 5000
    tags = set()
    for f in (out / "tb").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            tags.update(v.tag for v in event.summary.value)
    assert {"digits/curves", "digits/examples", "digits/sanity", "digits/results"} <= tags


def test_two_runs_give_the_same_table(bench):
    _, first, second = bench
    a, b = first["datasets"]["digits"], second["datasets"]["digits"]
    assert a["accuracy"] == b["accuracy"]
    for method, row in a["methods"].items():
        for key, value in row.items():
            if key not in ("ms_per_image", "forward_equivalents"):
                assert b["methods"][method][key] == pytest.approx(value, abs=1e-6), (method, key)


def test_gradcam_points_far_better_than_random_and_reveals_the_shortcut(
    trained_shapes, shortcut_shapes
):
    test = trained_shapes.splits.test_arrays
    scores = {}
    for method in ("gradcam", "random"):
        maps = explain(trained_shapes.model, test.images[:100], method=method).maps
        scores[method] = pointing_game(maps, test.masks[:100], tolerance=4).mean()
    assert scores["gradcam"] > scores["random"] + 0.5
    cut = shortcut_shapes.splits.test_arrays
    rates = {
        m: shortcut_rate(
            explain(shortcut_shapes.model, cut.images[:60], method=m).maps,
            cut.cue_masks[:60],
            cut.masks[:60],
            mode="nearest",
        )
        for m in ("gradcam", "saliency", "random")
    }
    assert rates["gradcam"] > 0.6 and rates["saliency"] > 0.6 and rates["random"] < 0.4


def test_cli_benchmark_rejects_unknown_datasets(capsys):
    assert main(["benchmark", "--datasets", "imagenet", "--quick"]) == 2
    assert "Unknown benchmark dataset 'imagenet'" in capsys.readouterr().err


def test_results_md_explains_the_shortcut_models_low_accuracy():
    from xai_keras.evaluate.benchmark import to_markdown

    row = {"deletion_auc": 0.1, "insertion_auc": 0.5}
    results = {
        "meta": {"n": 48, "seed": 0, "quick": True, "machine": "x86_64 Linux, 2 CPUs"},
        "datasets": {
            "shapes_shortcut": {
                "accuracy": 0.177,
                "num_classes": 5,
                "accuracy_images": 300,
                "methods": {"gradcam": row},
            }
        },
    }
    text = " ".join(to_markdown(results).split())
    assert "low accuracy is planted" in text
    assert "the true class 1 time in 5: chance, 0.20" in text
    assert "about +/-0.05 for 300 images" in text
