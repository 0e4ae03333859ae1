"""The pieces of `explain_dataset`, each on its own (no model, no dataset run)."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.scale.loop import ShardBuffer, ZeroMaps
from xai_keras.scale.manifest import (
    OutLock,
    guarded_write,
    new_manifest,
    open_out,
    settings_diff,
)
from xai_keras.scale.store import read_manifest, write_manifest
from xai_keras.scale.workers import Progress, Workers


def _rows(positions):
    positions = np.asarray(positions, np.int64)
    return {"positions": positions, "maps": positions[:, None] * 1.0}, [
        {"position": int(p)} for p in positions
    ]


# -- loop: the shard buffer and the zero-map record -----------------------------------------
def test_shard_buffer_emits_contiguous_shards_in_position_order():
    buffer = ShardBuffer(shard_size=4, next_position=8)
    buffer.add(*_rows([10, 8, 12]))  # replicas interleave
    assert buffer.take() is None  # 3 rows of 4
    buffer.add(*_rows([9, 13]))
    assert buffer.take() is None  # 5 rows, but 11 is missing
    buffer.add(*_rows([11]))
    arrays, records = buffer.take()
    assert arrays["positions"].tolist() == [8, 9, 10, 11]
    assert arrays["maps"][:, 0].tolist() == [8, 9, 10, 11]  # rows move with their position
    assert [r["position"] for r in records] == [8, 9, 10, 11]
    assert len(buffer) == 2 and buffer.next == 12


def test_shard_buffer_waits_for_a_missing_position_and_refuses_it_at_the_end():
    buffer = ShardBuffer(shard_size=3, next_position=0)
    buffer.add(*_rows([0, 2, 3]))
    assert buffer.take() is None  # position 1 not here yet
    buffer.add(*_rows([1]))
    arrays, records = buffer.take()
    assert arrays["positions"].tolist() == [0, 1, 2]
    assert [r["position"] for r in records] == [0, 1, 2]
    assert len(buffer) == 1 and buffer.next == 3
    buffer.add(*_rows([5]))
    with pytest.raises(RuntimeError, match="lost images: positions 3"):
        buffer.take(final=True)


def test_shard_buffer_final_take_returns_the_rest():
    buffer = ShardBuffer(shard_size=10, next_position=0)
    assert buffer.take(final=True) is None
    buffer.add(*_rows([1, 0]))
    arrays, _ = buffer.take(final=True)
    assert arrays["positions"].tolist() == [0, 1] and len(buffer) == 0


def test_zero_maps_counts_all_and_keeps_the_first_positions():
    zeros = ZeroMaps(keep=3)
    zeros.add([4, 7])
    zeros.add([])
    zeros.add([9, 11, 12])
    assert zeros.count == 5 and zeros.positions == [4, 7, 9]


# -- manifest: the out folder, its lock and writes ------------------------------------------
def test_settings_diff_names_each_change_and_ignores_an_unknown_size():
    old = {"method": "gradcam", "dataset_size": 10, "shard_size": 8}
    assert settings_diff(old, {**old, "dataset_size": None}) == []
    diff = settings_diff(old, {**old, "method": "saliency"})
    assert diff == ["method: the run in progress has 'gradcam', this call 'saliency'"]


def test_open_out_new_foreign_resume_and_overwrite(tmp_path):
    settings = {"method": "gradcam", "shard_size": 4}
    assert open_out(tmp_path, settings, resume=False, overwrite=False) is None  # empty
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not empty \(notes.txt\)"):
        open_out(tmp_path, settings, resume=False, overwrite=False)
    (tmp_path / "index.jsonl").write_text("")
    assert open_out(tmp_path, settings, resume=False, overwrite=True) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # only ours went
    write_manifest(tmp_path, new_manifest(settings))
    with pytest.raises(InputError, match="already holds an incomplete explain_dataset run"):
        open_out(tmp_path, settings, resume=False, overwrite=False)
    with pytest.raises(InputError, match="different settings .*shard_size"):
        open_out(tmp_path, {**settings, "shard_size": 8}, resume=True, overwrite=False)
    assert open_out(tmp_path, settings, resume=True, overwrite=False)["shards_done"] == 0
    assert open_out(tmp_path, settings, resume=False, overwrite=True) is None
    assert read_manifest(tmp_path) is None


def test_new_manifest_counts_images_of_full_shards():
    m = new_manifest({"a": 1}, shards=3, shard_size=8, files=26)
    assert (m["shards_done"], m["images_done"], m["files_done"], m["complete"]) == (3, 24, 26, 0)
    assert "files_done" not in new_manifest({"a": 1})


def test_guarded_write_says_what_is_kept(tmp_path):
    manifest = {"shards_done": 2, "images_done": 16}

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InputError, match=r"shard 2 .*No space left.*2 complete shard\(s\) with 16"):
        guarded_write(tmp_path, manifest, full, "shard 2")
    manifest = {"shards_done": 0, "images_done": 0}
    with pytest.raises(InputError, match="no maps were written"):
        guarded_write(tmp_path, manifest, full, "manifest.json")


def test_out_lock_is_exclusive_and_released(tmp_path):
    with OutLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] > 0
        with pytest.raises(InputError, match="Another explain_dataset run"):
            OutLock(tmp_path).acquire()
    assert not lock.path.exists()


# -- workers: one process is its own writer -------------------------------------------------
def test_one_process_writes_and_its_progress_is_its_own():
    workers = Workers(tf.distribute.get_strategy())
    assert workers.writer and not workers.multi
    assert workers.chief_step(lambda: 42, "refused") == 42
    with pytest.raises(ValueError, match="boom"):
        workers.chief_step(lambda: (_ for _ in ()).throw(ValueError("boom")), "refused")
    manifest = {"shards_done": 2, "complete": True, "images_done": 20}
    assert workers.start(Progress.of(manifest)) == Progress(2, True, 20)
    assert Progress.of(None) == Progress(0, False, 0)


# -- plan: the checked call -----------------------------------------------------------------
def _plan(model, data, **changes):
    from xai_keras.explainers.session import Session
    from xai_keras.scale.plan import make_plan

    args = dict(layer=None, options={}, targets=None, batch_size=5, shard_size=4, strategy=None,
                resume=False, overwrite=False, skip_bad=False, metrics=(), border=0.2,
                class_names=None)  # fmt: skip
    return make_plan(Session.of(model), data, "gradcam", **{**args, **changes})


def test_plan_holds_the_settings_a_resumed_run_must_share(gap_model):
    images = np.zeros((7, 32, 32, 3), np.float32)
    plan = _plan(gap_model, images, metrics=["deletion", "deletion"], targets=np.int64(2))
    assert plan.global_batch == 5 and plan.num_classes == 4 and plan.shard_size == 4
    s = plan.settings
    assert (s["method"], s["targets"], s["metrics"], s["dataset_size"]) == (
        "gradcam", 2, ["deletion"], 7
    )
    assert s["image_shape"] == [32, 32, 3] and len(s["model"]) == 16


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"targets": 9}, r"\[0, 3\]"),
        ({"metrics": ["nope"]}, "Unknown metric"),
        ({"resume": True, "overwrite": True}, "not both"),
        ({"skip_bad": 1}, "skip_bad"),
        ({"border": 0.7}, "border"),
        ({"strategy": "gpu"}, "strategy"),
        ({"skip_bad": True}, "image folder"),
        ({"targets": "label"}, "needs labels"),
    ],
)
def test_plan_refuses_bad_calls(gap_model, changes, match):
    with pytest.raises(InputError, match=match):
        _plan(gap_model, np.zeros((3, 32, 32, 3), np.float32), **changes)
