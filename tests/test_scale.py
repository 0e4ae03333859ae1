"""explain_dataset: same maps as explain, in order; distributed; resumable; lazy; summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from xai_keras import explain
from xai_keras.data import generate_shapes
from xai_keras.errors import InputError
from xai_keras.evaluate import deletion
from xai_keras.scale import DatasetExplanation, explain_dataset

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "scripts" / "_scale_worker.py"
N = 37  # not a multiple of any batch size used here


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (N, 32, 32, 3)).astype(np.float32), (np.arange(N) % 4).astype(np.int32)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, gap_model, data) -> Path:
    """The model and data, on disk for the subprocess worker."""
    work = tmp_path_factory.mktemp("scale_worker")
    gap_model.save(work / "model.keras")
    np.save(work / "images.npy", data[0])
    np.save(work / "labels.npy", data[1])
    return work


def _worker(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True
    )


def _run(model, dataset, out, method="gradcam", **kwargs) -> DatasetExplanation:
    kwargs = {"batch_size": 8, "shard_size": 10, "progress": False, **kwargs}
    return explain_dataset(model, dataset, method, out=out, **kwargs)


def _check_same(result: DatasetExplanation, reference, labels=None) -> None:
    assert len(result) == len(reference.maps)
    np.testing.assert_allclose(result.maps[:], reference.maps, atol=1e-3)  # float16 storage
    np.testing.assert_array_equal(result.targets, reference.targets)
    np.testing.assert_allclose(result.scores, reference.scores, rtol=1e-5)
    assert [r["position"] for r in result.index] == list(range(len(reference.maps)))
    if labels is not None:
        assert [r["label"] for r in result.index] == labels.tolist()


# -- the same maps as explain(), in order ---------------------------------------------------
@pytest.mark.parametrize(
    "method, options",
    [("gradcam", {}), ("saliency", {}), ("occlusion", {"patch": 16, "stride": 8})],
)
def test_same_maps_as_explain_in_dataset_order(gap_model, data, tmp_path, method, options):
    images, labels = data
    reference = explain(gap_model, images, method=method, batch_size=8, **options)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)  # batched, not by 8
    result = _run(gap_model, ds, tmp_path / "run", method, **options)
    _check_same(result, reference, labels)
    assert result.maps.shards == 4 and result.complete
    records = [json.loads(line) for line in (tmp_path / "run" / "index.jsonl").open()]
    assert records == result.index
    assert {"shard", "class", "score", "peak_y", "peak_x", "border_share", "corner_share"} <= set(
        records[0]
    )


@pytest.mark.parametrize("kind", ["array", "tuple", "unbatched", "images_only", "dict"])
def test_every_source_kind(gap_model, data, tmp_path, kind):
    images, labels = data
    dataset = {
        "array": images,
        "tuple": (images, labels),
        "unbatched": tf.data.Dataset.from_tensor_slices((images, labels)),
        "images_only": tf.data.Dataset.from_tensor_slices(images).batch(16),
        "dict": tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).batch(3),
    }[kind]
    result = _run(gap_model, dataset, tmp_path / kind, summary=False)
    _check_same(result, explain(gap_model, images, batch_size=8))
    assert ("label" in result.index[0]) == (kind in ("tuple", "unbatched", "dict"))


def test_folder_dataset_and_label_targets(gap_model, tmp_path):
    rng = np.random.default_rng(1)
    for c, name in enumerate(("cat", "dog")):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3 + c):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / "images" / name / f"{i}.png"), pixels)
    result = _run(gap_model, tmp_path / "images", tmp_path / "run", targets="label")
    assert len(result) == 7 and result.class_names == ["cat", "dog"]
    assert [r["label"] for r in result.index] == [0, 0, 0, 1, 1, 1, 1]
    assert [r["class"] for r in result.index] == [0, 0, 0, 1, 1, 1, 1]
    assert result.index[3]["file"].endswith(os.path.join("dog", "0.png"))
    assert result.index[0]["class_name"] == "cat"


# -- distributed ----------------------------------------------------------------------------
def test_mirrored_strategy_on_two_cpus_matches_one_device(gap_model, data, workdir):
    """Two logical CPUs must be set up before TensorFlow starts: done in a subprocess."""
    proc = _worker("mirrored", str(workdir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((workdir / "result.json").read_text())
    assert info["replicas"] == 2 and info["variable_type"] == "MirroredVariable"
    assert np.isfinite(info["train_loss"]).all()  # train_distributed ran under the strategy
    images, _ = data
    for method, options in (("gradcam", {}), ("occlusion", {"patch": 16, "stride": 16})):
        result = DatasetExplanation.open(workdir / f"mirrored-{method}")
        assert result.manifest["replicas"] == 2
        assert len(result) == N  # 37 images, global batch 8: the last batch padded
        _check_same(result, explain(gap_model, images, method=method, batch_size=8, **options))


# -- crash and resume -----------------------------------------------------------------------
def test_killed_run_resumes_to_the_same_result(gap_model, data, workdir, tmp_path):
    crashed = workdir / "crashed"
    proc = _worker("crash", str(workdir), "2")  # SIGKILL halfway through writing shard 2
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    manifest = json.loads((crashed / "manifest.json").read_text())
    assert manifest["shards_done"] == 2 and not manifest["complete"]
    assert not (crashed / "shard-00002.npz").exists()
    assert any(p.name.startswith(".shard-00002.") for p in crashed.iterdir())  # the torn file

    images, labels = data
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    settings = {"batch_size": 6, "shard_size": 8, "summary": False}
    with pytest.raises(InputError, match="resume=True"):
        _run(gap_model, ds, crashed, **settings)
    with pytest.raises(InputError, match="method"):
        _run(gap_model, ds, crashed, "saliency", resume=True, **settings)
    with pytest.raises(InputError, match="shard_size"):
        _run(gap_model, ds, crashed, resume=True, **{**settings, "shard_size": 4})

    done: list[int] = []
    resumed = _run(
        gap_model, ds, crashed, resume=True, on_shard=lambda k, n: done.append(k), **settings
    )
    assert done == [2, 3, 4]  # only the missing shards were explained
    whole = _run(gap_model, ds, tmp_path / "whole", **settings)
    assert len(resumed) == len(whole) == N
    np.testing.assert_allclose(resumed.maps[:], whole.maps[:], atol=1e-3)
    for a, b in zip(resumed.index, whole.index):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], abs=1e-3)
            elif key not in ("peak_y", "peak_x", "peak_region"):  # ties may break either way
                assert a[key] == b[key], key
    assert not [p.name for p in crashed.iterdir() if p.name.startswith(".")]
    assert DatasetExplanation.open(crashed).complete
    done.clear()  # resuming a complete run explains nothing
    _run(gap_model, ds, crashed, resume=True, on_shard=lambda k, n: done.append(k), **settings)
    assert done == []


# -- lazy maps ------------------------------------------------------------------------------
def test_maps_are_read_lazily_one_shard_at_a_time(gap_model, data, tmp_path):
    images, _ = data
    _run(gap_model, images, tmp_path / "run", shard_size=8, summary=False)
    result = DatasetExplanation.open(tmp_path / "run")
    for k in (0, 1, 3, 4):
        (tmp_path / "run" / f"shard-{k:05d}.npz").unlink()
    reference = explain(gap_model, images[17:19]).maps
    np.testing.assert_allclose(result.maps[17], reference[0], atol=1e-3)  # shard 2
    np.testing.assert_allclose(result.maps[17:19], reference, atol=1e-3)
    assert result.maps.loads == 1
    with pytest.raises(InputError, match="shard-00000.npz is missing"):
        result.maps[0]


# -- metrics and summary --------------------------------------------------------------------
def test_deletion_metric_matches_the_evaluate_module(gap_model, data, tmp_path):
    images, _ = data
    result = _run(gap_model, images[:12], tmp_path / "run", metrics=("deletion",))
    maps = explain(gap_model, images[:12]).maps
    expected = deletion(gap_model, images[:12], maps, steps=20).auc
    got = [r["deletion_auc"] for r in result.index]
    np.testing.assert_allclose(got, expected, atol=2e-3)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["worst"]["key"] == "deletion_auc"
    assert summary["worst"]["images"][0]["deletion_auc"] == pytest.approx(max(got))


def test_summary_finds_the_corner_shortcut(trained_shapes, shortcut_shapes, tmp_path):
    test = shortcut_shapes.splits.test_arrays  # markers in random border slots
    images, labels = test.images[:160], test.labels[:160]
    shares, flagged = {}, {}
    for name, run in (("clean", trained_shapes), ("shortcut", shortcut_shapes)):
        result = _run(
            run.model,
            (images, labels),
            tmp_path / name,
            batch_size=32,
            shard_size=64,
            class_names=run.splits.class_names,
            log_dir=tmp_path / "tb" / name,
        )
        summary = result.summary()
        shares[name] = summary["peak_in_border"]
        flagged[name] = summary["flagged_classes"]
        assert (
            summary["worst"]["key"] == "score" and "lowest score" in summary["worst"]["criterion"]
        )
        assert (
            len(summary["per_class"]) >= 2
            and summary["per_class"][0]["name"] in run.splits.class_names
        )
        for file in ("summary.md", "summary.json", "mean_maps.png", "worst_maps.png"):
            assert (tmp_path / name / file).stat().st_size > 0
        assert list((tmp_path / "tb" / name).glob("events.out.tfevents.*"))
    assert shares["shortcut"] > 0.5 and shares["shortcut"] > shares["clean"] + 0.3, shares
    assert len(flagged["shortcut"]) >= 3 and flagged["clean"] == [], flagged


# -- errors ---------------------------------------------------------------------------------
def test_bad_arguments_are_refused_clearly(gap_model, data, tmp_path):
    images, labels = data
    cases = [
        (dict(dataset=np.zeros((4, 16, 16, 3))), "expects"),
        (dict(dataset="/no/such/folder"), "does not exist"),
        (dict(dataset=images, method="sag"), "sag"),
        (dict(dataset=images, method="nope"), "Unknown method"),
        (dict(dataset=images, targets="label"), "needs labels"),
        (dict(dataset=images, targets=9), r"\[0, 3\]"),
        (dict(dataset=images, border=0.7), "border"),
        (dict(dataset=images, batch_size=0), "batch_size"),
        (dict(dataset=images, metrics=("auc",)), "deletion"),
        (dict(dataset=images[:0]), "empty"),
        (dict(dataset=tf.data.Dataset.from_tensor_slices(images[:0])), "empty"),
        (dict(dataset=images, resume=True, overwrite=True), "not both"),
    ]
    for kwargs, match in cases:
        kwargs = {"method": "gradcam", **kwargs}
        with pytest.raises(InputError, match=match):
            _run(gap_model, kwargs.pop("dataset"), tmp_path / "bad", kwargs.pop("method"), **kwargs)
    assert not (tmp_path / "bad" / "manifest.json").exists()
    bad = images.copy()
    bad[20, 3, 3, 0] = np.nan
    with pytest.raises(InputError, match=r"positions \[20\]"):
        _run(gap_model, bad, tmp_path / "nan")


def test_cli_explain_dataset_resumes_and_reports_flags(trained_shapes, tmp_path, capsys):
    from xai_keras.cli import main

    images = generate_shapes(40, 64, seed=21).images
    np.save(tmp_path / "images.npy", images)
    argv = ["explain-dataset", str(tmp_path / "images.npy"), "--model"]
    argv += [str(trained_shapes.model_path), "--out", str(tmp_path / "run"), "--quiet"]
    assert main([*argv, "--shard-size", "16"]) == 0
    assert main([*argv, "--shard-size", "16"]) == 2  # refuses to overwrite silently
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--shard-size", "16", "--resume"]) == 0
    result = DatasetExplanation.open(tmp_path / "run")
    assert len(result) == 40 and result.complete
