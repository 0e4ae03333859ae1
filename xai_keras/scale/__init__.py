"""Explain whole datasets: streaming, distributed, constant memory, resumable.

`explain_dataset(model, dataset, method, out=...)` runs any registered map method over a
`tf.data.Dataset`, an array or an image folder and writes the maps shard by shard:

    >>> from xai_keras.scale import explain_dataset
    >>> result = explain_dataset(model, test_ds, "gradcam", out="runs/gradcam-test")
    >>> result.maps[123]            # (H, W) float32, read from its shard only
    >>> result.index[123]           # class, score, label, peak, border/corner mass, ...
    >>> result.summary()["flagged_classes"]

The output folder (written atomically, file by file):

    manifest.json          settings (method, layer, options, targets, shard size, model
                           fingerprint, dataset size) and how many shards are complete
    shard-00000.npz        maps (float16, see `store`), targets, scores, labels, positions
    shard-00000.jsonl      one record per image of the shard
    index.jsonl            every record in dataset order (rebuilt from the shards at the end)
    summary.md/.json       per-class border-peak shares, worst-explained images
    mean_maps.png          per-class mean maps; worst_maps.png: the worst-explained maps

Memory: one shard of maps (`shard_size` images) plus a batch is held at a time.

Resuming: `explain_dataset(..., resume=True)` after a crash skips the complete shards (the
manifest is written after each shard; half-written files are temporaries, removed on the next
start) and refuses to continue with different settings. The dataset must yield the same
images in the same order each time (no reshuffling each iteration).

Safety of `out`: a run writes `manifest.json` before anything else, so a folder without one
was not written by `explain_dataset`: if it holds visible files it is refused (nothing is
deleted or overwritten) unless `overwrite=True`, which then replaces only files named as a
run names its outputs. One run at a time: `out/.explain_dataset.lock` (created exclusively,
holding pid and host) makes a second run on the same folder stop with one line; a lock left by
a killed process on this host is taken over. A failed write (full disk, read-only folder)
stops with one line saying which shards are kept; `resume=True` continues after the fix.

Unreadable images in a folder: by default the run stops at the first one, naming the file
(before its shard is written). `skip_bad=True` (`--skip-bad`) skips them instead and lists them
(file and reason) in the manifest, at the end of `index.jsonl`, in `result.skipped` and in the
summary.

Distribution: pass any `tf.distribute.Strategy`. Each global batch (padded at the end of the
data, padded rows dropped) is split across the replicas by
`strategy.experimental_distribute_dataset`, explained under `strategy.run`, and put back in
dataset order by the position that travels with every image:

    >>> strategy = tf.distribute.MirroredStrategy()            # all GPUs of this machine
    >>> explain_dataset(model, ds, "gradcam", out="runs/x", strategy=strategy, batch_size=256)

Several machines (MultiWorkerMirroredStrategy; tested with two worker processes on
127.0.0.1, whose maps, index and summary equal one process's bit for bit): start the same
script on every machine with its own `TF_CONFIG`, create the strategy before anything else
touches TensorFlow, and give every worker the same `out` on a shared file system. Only the
chief (or worker 0) writes files; every worker must see the same dataset (it is sharded by
data, i.e. by position, so each worker computes its part of every global batch). All workers
start from the shard the chief resumes from, and each worker's result is read from the chief's
manifest after the chief has written it, so it says complete exactly when the chief's does:

    # machine 0                                         # machine 1: same, with "index": 1
    export TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                       "task": {"type": "worker", "index": 0}}'
    python -c "
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    from xai_keras.scale import explain_dataset
    model = keras.models.load_model('model.keras')
    explain_dataset(model, '/shared/images', 'gradcam', out='/shared/runs/gradcam',
                    strategy=strategy, batch_size=256, resume=True)
    "

A Ray cluster: `explain_with_ray("model.keras", "/shared/images", "gradcam", out=...,
workers=8)` runs the same plan and writes the same folder, with Ray Data actors that each load
the model once explaining whole batches (`xai_keras.scale.ray_engine`; `pip install
'xai-keras[ray]'`; see docs/engine.md).

Training on several devices: `train_distributed(config, strategy)` runs the normal
`xai_keras.training.train` with the model built and fitted under `strategy.scope()`. Under
MultiWorkerMirroredStrategy, Keras 3's own `fit` fails (keras-team/keras#20585, open);
`train_distributed` patches the two failing steps of Keras's TensorFlow trainer while it runs
(see `xai_keras.scale.training`), and raises one clear error if a Keras version lacks them.
"""

from xai_keras.scale.ray_engine import explain_with_ray
from xai_keras.scale.run import explain_dataset, model_fingerprint
from xai_keras.scale.store import DatasetExplanation, ShardedMaps
from xai_keras.scale.summary import summarize
from xai_keras.scale.training import train_distributed

__all__ = [
    "DatasetExplanation",
    "ShardedMaps",
    "explain_dataset",
    "explain_with_ray",
    "model_fingerprint",
    "summarize",
    "train_distributed",
]
