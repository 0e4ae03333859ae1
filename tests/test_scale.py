"""explain_dataset: same maps as explain, in order; distributed; resumable; lazy; summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


# -- issue 17: never touch foreign files; lock; unreadable files; bad inputs; full disk ------
def _images_folder(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(n):
        cv2.imwrite(str(root / f"{i}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return root


def test_a_foreign_out_folder_is_never_deleted_or_overwritten(gap_model, data, tmp_path):
    images = data[0][:6]
    out = tmp_path / "mine"
    out.mkdir()
    mine = {"shard-00007.npz": b"not ours", "summary.md": b"my notes", "index.jsonl": b"{}\n"}
    for name, content in mine.items():
        (out / name).write_bytes(content)
    for flags in ({}, {"resume": True}):
        with pytest.raises(InputError, match=r"not empty \(index.jsonl, shard-00007.npz, su"):
            _run(gap_model, images, out, **flags)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == mine  # nothing touched
    (out / "notes.txt").write_text("keep me")
    result = _run(gap_model, images, out, overwrite=True)  # replaces only names a run writes
    assert result.complete and len(result) == 6
    assert (out / "notes.txt").read_text() == "keep me"
    assert (
        not (out / "shard-00007.npz").exists() and (out / "summary.md").read_bytes() != b"my notes"
    )
    with pytest.raises(InputError, match="must be a folder"):
        _run(gap_model, images, out / "notes.txt")
    hidden = tmp_path / "hidden"  # only hidden files (.DS_Store): empty enough, left alone
    hidden.mkdir()
    (hidden / ".DS_Store").write_bytes(b"finder")
    assert _run(gap_model, images, hidden, summary=False).complete
    assert (hidden / ".DS_Store").read_bytes() == b"finder"


def test_a_second_run_on_one_out_is_refused_and_a_stale_lock_is_taken_over(
    gap_model, data, tmp_path
):
    images = data[0][:6]
    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".explain_dataset.lock"
    theirs = out / f".shard-00000.{'a' * 32}.npz"  # the other run's file being written
    theirs.write_bytes(b"half")
    lock.write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname()}))
    with pytest.raises(InputError, match=r"Another explain_dataset run \(pid \d+ on .*delete"):
        _run(gap_model, images, out)
    assert theirs.exists() and lock.exists()  # the running one's files are left alone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)  # fmt: skip
    lock.write_text(
        json.dumps({"pid": int(dead.stdout), "host": __import__("socket").gethostname()})
    )
    result = _run(gap_model, images, out, summary=False)  # a dead owner's lock is taken over
    assert result.complete and not lock.exists() and not theirs.exists()


def test_unreadable_image_is_named_or_skipped_and_recorded(gap_model, tmp_path):
    folder = _images_folder(tmp_path / "images")
    (folder / "2b.png").write_text("not an image")  # sorts third
    good = (folder / "5.png").read_bytes()
    (folder / "6.jpg").write_bytes(cv2.imencode(".jpg", cv2.imread(str(folder / "5.png")))[1][:300])
    assert good
    with pytest.raises(InputError, match=r"Cannot read the image .*2b\.png \(Unknown image file"):
        _run(gap_model, folder, tmp_path / "run", shard_size=4)
    assert not (tmp_path / "run" / "manifest.json").exists()  # nothing done, nothing left
    with pytest.raises(InputError, match="skip_bad"):
        _run(gap_model, np.zeros((2, 32, 32, 3)), tmp_path / "arr", skip_bad=True)
    with pytest.warns(RuntimeWarning, match="2 unreadable image file"):
        result = _run(gap_model, folder, tmp_path / "run", shard_size=4, skip_bad=True)
    assert result.complete and len(result) == 6
    assert [Path(r["file"]).name for r in result.index] == [f"{i}.png" for i in range(6)]
    assert [Path(s["file"]).name for s in result.skipped] == ["2b.png", "6.jpg"]
    assert "JPEG" in result.skipped[1]["error"]
    lines = [json.loads(line) for line in (tmp_path / "run" / "index.jsonl").open()]
    assert lines[-2:] == [{"file": s["file"], "skipped": True, "error": s["error"]}
                          for s in result.skipped]  # fmt: skip
    assert len(json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_files"]) == 2
    assert "2 unreadable file(s) skipped" in (tmp_path / "run" / "summary.md").read_text()
    images = np.stack([cv2.imread(str(folder / f"{i}.png"))[..., ::-1] for i in range(6)]) / 255
    np.testing.assert_allclose(result.maps[:], explain(gap_model, images).maps, atol=1e-3)


def test_full_disk_says_what_was_written_and_resume_finishes(
    gap_model, data, tmp_path, monkeypatch
):
    import errno

    from xai_keras.scale import loop as run

    images = data[0][:20]
    real = run.write_shard

    def full(out, k, arrays, records):
        if k == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(out, k, arrays, records)

    monkeypatch.setattr(run, "write_shard", full)
    with pytest.raises(InputError, match=r"shard 1 .*No space left on device.*1 complete shard"):
        _run(gap_model, images, tmp_path / "run", shard_size=8)
    monkeypatch.setattr(run, "write_shard", real)
    result = _run(gap_model, images, tmp_path / "run", shard_size=8, resume=True)
    assert result.complete and len(result) == 20
    np.testing.assert_allclose(result.maps[:], explain(gap_model, images).maps, atol=1e-3)


def test_cli_bad_npy_and_image_instead_of_folder_give_one_line(workdir, tmp_path, capsys):
    from xai_keras.cli import main

    np.save(tmp_path / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "whole.npy", np.zeros((4, 32, 32, 3), np.float32))
    raw = (tmp_path / "whole.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.npy").write_text("1 2 3\n")
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((32, 32, 3), np.uint8))
    cases = {
        "object.npy": "Cannot read .*object.npy as a .npy array",
        "truncated.npy": "Cannot read .*truncated.npy as a .npy array",
        "text.npy": "Cannot read .*text.npy as a .npy array",
        "x.png": "must be a folder of images .*x.png is an image file",
    }
    for name, match in cases.items():
        argv = ["explain-dataset", str(tmp_path / name), "--model", str(workdir / "model.keras")]
        assert main([*argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and __import__("re").search(match, err), err


# -- several workers ------------------------------------------------------------------------
def _free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_cluster(
    workdir: Path, out: str, *args: str, env: dict | None = None, timeout: float = 150
) -> tuple[list[int | None], str]:
    """Two MultiWorkerMirroredStrategy workers on 127.0.0.1 (as two machines would run them),
    explaining into `workdir/out`: their exit codes (None: still running at `timeout`, then
    killed) and the tails of their logs."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs, logs = [], [workdir / f"worker-{out}-{index}.log" for index in range(2)]
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                   "TF_CONFIG": tf_config, **(env or {})}  # fmt: skip
        with open(logs[index], "w") as log:  # files, not pipes: a full pipe would stall both
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), "multiworker", str(workdir), out, *args],
                env=environ, stdout=subprocess.DEVNULL, stderr=log,
            ))  # fmt: skip
    deadline, codes = time.monotonic() + timeout, []
    try:
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
    finally:
        for p in procs:
            p.kill()
    return codes, "\n".join(log.read_text()[-2000:] for log in logs)


def test_two_workers_on_loopback_match_one_process_bit_for_bit(gap_model, data, workdir):
    """MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 (as two machines
    would run it): the chief's shards, index and summary equal a one-process run's exactly,
    and each worker's result says complete because the chief's manifest does. Then both
    train a tiny model with train_distributed (Keras 3's fit alone fails there, #20585)."""
    codes, tails = _run_cluster(workdir, "multi", "train")
    assert codes == [0, 0], tails
    infos = [json.loads((workdir / f"result-multi-{i}.json").read_text()) for i in range(2)]
    losses = [info.pop("train_loss") for info in infos]
    for index, info in enumerate(infos):
        assert info == {"task": index, "replicas": 2, "complete": True, "maps": N}
    assert len(losses[0]) == 1 and np.isfinite(losses[0]).all()
    assert losses[0] == losses[1]  # one model, trained in step on both workers

    images, labels = data
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)  # as the workers
    one = explain_dataset(gap_model, ds, "gradcam", out=workdir / "one", batch_size=8,
                          shard_size=10, progress=False)  # fmt: skip
    multi = DatasetExplanation.open(workdir / "multi")
    assert multi.complete and multi.manifest["replicas"] == 2 and len(multi) == len(one) == N
    for k in range(one.maps.shards):
        a, b = one.maps.shard(k), multi.maps.shard(k)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"shard {k} {name}")
    for name in ("index.jsonl", "summary.json", "summary.md"):
        assert (workdir / "one" / name).read_text() == (workdir / "multi" / name).read_text()


def test_train_distributed_says_clearly_when_its_multi_worker_fix_cannot_apply(monkeypatch):
    from keras.src.backend.tensorflow import trainer as tf_trainer

    from xai_keras.scale.training import multi_worker_fit_fixes

    monkeypatch.delattr(tf_trainer, "_collective_all_reduce_multi_worker")
    with pytest.raises(InputError, match=r"MultiWorkerMirroredStrategy .*keras/issues/20585"):
        with multi_worker_fit_fixes():
            pass


def test_cli_names_the_unreadable_file_and_skips_it_with_skip_bad(workdir, tmp_path, capsys):
    from xai_keras.cli import main

    folder = _images_folder(tmp_path / "images", n=3)
    (folder / "1b.png").write_bytes(b"\x89PNG broken")
    argv = ["explain-dataset", str(folder), "--model", str(workdir / "model.keras"), "--quiet"]
    argv += ["--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1b.png" in err and "--skip-bad" in err, err
    with pytest.warns(RuntimeWarning, match="1 unreadable"):
        assert main([*argv, "--skip-bad"]) == 0
    index = (tmp_path / "run" / "index.jsonl").read_text().splitlines()
    assert len(index) == 4 and json.loads(index[-1])["skipped"] is True


def test_a_killed_worker_stops_the_other_clearly_and_a_resume_completes(
    gap_model, data, workdir
):
    """Fault injection: worker 1 of two is killed (os._exit, as by SIGKILL) before its third
    batch. The chief must not hang: it stops within a bounded time with one clear line, keeps
    the shards written so far, and both workers rerun with resume=True give the same folder
    as an uninterrupted one-process run."""
    codes, tails = _run_cluster(
        workdir, "killed", env={"XAI_TEST_DIE_AT_BATCH": "1:3"}, timeout=120
    )
    assert codes[1] == 137 and codes[0] not in (0, None), tails  # None: the chief hung
    last = (workdir / "worker-killed-0.log").read_text().strip().splitlines()[-1]
    assert "WorkerLostError: A worker of the multi-worker cluster stopped" in last
    assert "resume=True" in last, last
    kept = DatasetExplanation.open(workdir / "killed")
    assert not kept.complete and 0 < kept.manifest["images_done"] < N

    codes, tails = _run_cluster(workdir, "killed", "resume")
    assert codes == [0, 0], tails
    resumed = DatasetExplanation.open(workdir / "killed")
    images, labels = data
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)  # as the workers
    one = explain_dataset(gap_model, ds, "gradcam", out=workdir / "one-k", batch_size=8,
                          shard_size=10, progress=False)  # fmt: skip
    assert resumed.complete and len(resumed) == len(one) == N
    for k in range(one.maps.shards):
        a, b = one.maps.shard(k), resumed.maps.shard(k)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"shard {k} {name}")
    assert (workdir / "one-k" / "index.jsonl").read_text() == (
        workdir / "killed" / "index.jsonl"
    ).read_text()
