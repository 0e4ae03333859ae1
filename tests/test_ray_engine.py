"""`explain_with_ray`: `explain_dataset` with Ray Data workers writes the same folder.

Each run compares the engine's output with `explain_dataset`'s on the same images: maps (max
difference 0 for the deterministic methods used here), records, skipped files and summary.
The failure tests kill a worker mid-run (Ray restarts it and runs its batch again), feed a
corrupt image, and fill the disk while the driver writes a shard.

One local Ray instance (2 CPUs) serves the whole module; every call starts its own two worker
processes (about a minute per call on a busy 2-core machine), so the default tier runs one
call (two workers, one killed) and the slow tier the others. Skipped where Ray Data is not
installed (`pip install -e '.[ray]'`).
"""

from __future__ import annotations

import errno
import io
import json
import os
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("ray.data")
pytestmark = pytest.mark.filterwarnings("ignore:gradcam. .* map.s. are all zero")

import ray  # noqa: E402
from conftest import FAST_OPTIONS  # noqa: E402
from keras import layers as L  # noqa: E402

from xai_keras.config import ModelConfig  # noqa: E402
from xai_keras.errors import InputError  # noqa: E402
from xai_keras.models import build_cnn  # noqa: E402
from xai_keras.scale import (  # noqa: E402
    explain_dataset,
    explain_with_ray,
    ray_engine,
)

ROOT = Path(__file__).resolve().parents[1]
N, SIZE, CLASSES = 24, 32, 4
SETTINGS = {"batch_size": 8, "shard_size": 10, "progress": False}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance for the module (explain_with_ray uses it and leaves it running).
    This test module is pickled by value, so the workers can run the classes defined here."""
    started = not ray.is_initialized()
    if started:
        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})  # fmt: skip
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(1)
    model = build_cnn(ModelConfig(filters=[8, 16], dropout=0.0), (SIZE, SIZE, 3), CLASSES)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (N, SIZE, SIZE, 3)).astype(np.float32), np.arange(N) % CLASSES


def _folder(root: Path, corrupt: str | None = None) -> Path:
    """N PNGs in one sub-folder per class; `corrupt` names a file made unreadable."""
    rng = np.random.default_rng(2)
    for i in range(N):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        cv2.imwrite(str(root / f"c{i % 2}" / f"{i:02d}.png"), pixels)
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG truncated")
    return root


def _same_output(a, b) -> None:
    """Two dataset explanations hold the same maps, records, skipped files and summary."""
    assert len(a) == len(b) and a.complete and b.complete
    assert np.abs(np.asarray(a.maps) - np.asarray(b.maps)).max() == 0
    assert a.index == b.index and a.skipped == b.skipped
    for name in ("index.jsonl", "summary.json"):
        assert (a.out / name).read_text() == (b.out / name).read_text(), name
    assert sorted(p.name for p in a.out.iterdir()) == sorted(p.name for p in b.out.iterdir())


class DyingWorker(ray_engine._Worker):
    """Exits its process (no cleanup, as a killed worker) on the first attempt of the batch
    that starts at item 8; the marker file says it happened."""

    marker: str = ""

    def range(self, first: int, stop: int):
        if first == 8 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().range(first, stop)


def test_two_workers_one_killed_write_what_explain_dataset_writes(
    cluster, model_path, data, tmp_path, monkeypatch
):
    """Two worker processes, one of which dies mid-run: Ray restarts it and runs its batch
    again, and the folder equals explain_dataset's (no image lost, none twice)."""
    marker = tmp_path / "killed"
    monkeypatch.setattr(DyingWorker, "marker", str(marker))
    monkeypatch.setattr(ray_engine, "_Worker", DyingWorker)
    kwargs = dict(SETTINGS, targets="label", metrics=("deletion",), class_names=list("abcd"))
    result = explain_with_ray(model_path, data, "gradcam", out=tmp_path / "ray", workers=2,
                              **kwargs)  # fmt: skip
    assert marker.exists()  # a worker did die
    monkeypatch.undo()
    model = keras.models.load_model(model_path)
    expected = explain_dataset(model, data, "gradcam", out=tmp_path / "one", **kwargs)
    _same_output(expected, result)
    positions = np.concatenate([result.maps.shard(k)["positions"] for k in range(3)])
    assert positions.tolist() == list(range(N))
    assert all("deletion_auc" in r for r in result.index)
    assert result.manifest["engine"]["workers"] == 2 and result.maps.shards == 3


@pytest.mark.slow
def test_a_corrupt_image_is_refused_or_skipped_as_explain_dataset_does(
    cluster, model_path, tmp_path
):
    folder = _folder(tmp_path / "images", corrupt="c1/13.png")
    model = keras.models.load_model(model_path)
    with pytest.raises(InputError) as one:
        explain_dataset(model, folder, "gradcam", out=tmp_path / "one", **SETTINGS)
    with pytest.raises(InputError) as engine:
        explain_with_ray(model_path, folder, "gradcam", out=tmp_path / "ray", **SETTINGS)
    assert str(engine.value) == str(one.value) and "13.png" in str(engine.value)
    assert len(str(engine.value).splitlines()) == 1
    kwargs = dict(SETTINGS, skip_bad=True, overwrite=True)
    with pytest.warns(RuntimeWarning, match="1 unreadable"):
        expected = explain_dataset(model, folder, "gradcam", out=tmp_path / "one", **kwargs)
    with pytest.warns(RuntimeWarning, match="1 unreadable"):
        result = explain_with_ray(model_path, folder, "gradcam", out=tmp_path / "ray", **kwargs)
    _same_output(expected, result)
    assert len(result) == N - 1 and result.skipped[0]["file"].endswith("13.png")


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_resumes(
    cluster, model_path, data, tmp_path, monkeypatch
):
    real, calls = np.savez_compressed, {"n": 0}

    def full_disk(file, **arrays):  # the second shard: half of it reaches the disk
        calls["n"] += 1
        if calls["n"] == 2:
            buffer = io.BytesIO()
            real(buffer, **arrays)
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(file, **arrays)

    monkeypatch.setattr(np, "savez_compressed", full_disk)  # the driver writes every file
    out = tmp_path / "ray"
    with pytest.raises(InputError) as err:
        explain_with_ray(model_path, data, "gradcam", out=out, targets="label", **SETTINGS)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "No space left on device" in message and "1 complete shard(s) with 10 maps" in message
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "shard-00000.jsonl",
        "shard-00000.npz",
    ]  # fmt: skip  (no temporary, no half shard, no lock)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards_done"] == 1 and not manifest["complete"]
    monkeypatch.undo()
    result = explain_with_ray(
        model_path, data, "gradcam", out=out, targets="label", resume=True, **SETTINGS
    )
    expected = explain_dataset(keras.models.load_model(model_path), data, "gradcam",
                               out=tmp_path / "one", targets="label", **SETTINGS)  # fmt: skip
    _same_output(expected, result)


@pytest.mark.slow
def test_an_error_in_a_worker_is_its_one_line(cluster, model_path, data, tmp_path):
    labels = data[1].copy()
    labels[13] = CLASSES  # out of range: found when the worker reads its batch
    with pytest.raises(InputError) as err:
        explain_with_ray(model_path, (data[0], labels), "saliency", out=tmp_path / "ray",
                         targets="label", **SETTINGS)  # fmt: skip
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith("Reading or explaining the dataset failed in items 8..15: ")
    assert "a label is >= the number of classes" in message


def test_refusals_name_what_is_wrong(model_path, data, tmp_path, monkeypatch):
    ds = tf.data.Dataset.from_tensor_slices(data[0])
    with pytest.raises(InputError, match="this `dataset` is a tf.data.Dataset.*explain_dataset"):
        explain_with_ray(model_path, ds, out=tmp_path / "a")
    with pytest.raises(InputError, match="`strategy` is explain_dataset's"):
        explain_with_ray(model_path, data[0], out=tmp_path / "a", strategy=None)
    with pytest.raises(InputError, match="`workers` argument must be a positive int"):
        explain_with_ray(model_path, data[0], out=tmp_path / "a", workers=0)
    with pytest.raises(InputError, match="Model file not found"):
        explain_with_ray(tmp_path / "none.keras", data[0], out=tmp_path / "a")
    with pytest.raises(InputError, match="Unknown metric"):
        explain_with_ray(model_path, data[0], out=tmp_path / "a", metrics=("nope",))
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"needs Ray Data: pip install 'xai-keras\[ray\]'"):
        explain_with_ray(model_path, data[0], out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def _two_heads(path: Path) -> Path:
    """A model with two outputs and a second (held) input."""
    keras.utils.set_random_seed(3)
    image, extra = keras.Input((SIZE, SIZE, 3), name="image"), keras.Input((2,), name="extra")
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="last")(image)
    h = L.Concatenate()([L.GlobalAveragePooling2D()(h), extra])
    out = [L.Dense(CLASSES, activation="softmax", name=f"head{i}")(h) for i in range(2)]
    keras.Model([image, extra], out).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("method", ["occlusion", "rise", "integrated_gradients"])
def test_method_families_give_explain_dataset_maps(cluster, model_path, data, tmp_path, method):
    """A method that loops in Python (occlusion), one that samples masks from a seed (RISE)
    and one with a completeness check (IG): equal maps from the workers too."""
    kwargs = dict(SETTINGS, **FAST_OPTIONS.get(method, {}), summary=False)
    model = keras.models.load_model(model_path)
    expected = explain_dataset(model, data[0], method, out=tmp_path / "one", **kwargs)
    result = explain_with_ray(model_path, data[0], method, out=tmp_path / "ray", **kwargs)
    assert expected.index == result.index
    assert np.abs(np.asarray(expected.maps) - np.asarray(result.maps)).max() == 0


@pytest.mark.slow
def test_a_two_output_model_with_a_held_input(cluster, data, tmp_path):
    path = _two_heads(tmp_path / "two.keras")
    form = dict(SETTINGS, output=1, inputs={"extra": np.array([[0.5, -1.0]], np.float32)})
    expected = explain_dataset(keras.models.load_model(path), data[0], "gradcam",
                               out=tmp_path / "one", **form)  # fmt: skip
    result = explain_with_ray(path, data[0], "gradcam", out=tmp_path / "ray", **form)
    _same_output(expected, result)
