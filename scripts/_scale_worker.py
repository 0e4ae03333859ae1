"""Subprocess entry point for tests/test_scale.py (not a user tool).

Some checks cannot run in the test process: two logical CPU devices must be configured before
TensorFlow initialises its devices, and a crash test needs a process to kill. The parent
writes `model.keras`, `images.npy` and `labels.npy` into WORKDIR and runs

    python scripts/_scale_worker.py mirrored WORKDIR   # MirroredStrategy on 2 logical CPUs
    python scripts/_scale_worker.py crash WORKDIR N    # SIGKILL while writing shard N
    python scripts/_scale_worker.py multiworker WORKDIR OUT [train] [resume]  # one worker of
        TF_CONFIG's cluster: explain into WORKDIR/OUT (and train_distributed a tiny model with
        "train"; resume an interrupted run with "resume"); XAI_TEST_DIE_AT_BATCH="1:3" kills
        worker 1 before its third batch

Results go to WORKDIR (explain_dataset folders and `result.json`).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


def _two_cpus() -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )


def _inputs(work: Path):
    import keras
    import numpy as np

    model = keras.models.load_model(work / "model.keras")
    return model, np.load(work / "images.npy"), np.load(work / "labels.npy")


def mirrored(work: Path) -> dict:
    """Explain with MirroredStrategy over two logical CPUs; train a tiny model under it."""
    _two_cpus()
    from xai_keras.scale import explain_dataset, train_distributed

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    model, images, labels = _inputs(work)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    runs = {}
    for method, options in (("gradcam", {}), ("occlusion", {"patch": 16, "stride": 16})):
        result = explain_dataset(
            model,
            ds,
            method,
            out=work / f"mirrored-{method}",
            batch_size=8,
            shard_size=16,
            strategy=strategy,
            progress=False,
            summary=False,
            **options,
        )
        runs[method] = len(result)
    trained = train_distributed(_tiny_config(work / "train"), strategy, verbose=0)
    variable = trained.model.weights[0]
    return {
        "replicas": strategy.num_replicas_in_sync,
        "runs": runs,
        "train_loss": trained.history["loss"],
        "variable_type": type(getattr(variable, "value", variable)).__name__,
    }


def crash(work: Path, at: int) -> dict:
    """Run explain_dataset and SIGKILL the process halfway through writing shard `at`."""
    import numpy as np

    from xai_keras.scale import explain_dataset

    real = np.savez_compressed
    calls = {"n": 0}

    def dying(file, **arrays):
        if calls["n"] == at:
            buffer = io.BytesIO()
            real(buffer, **arrays)
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        calls["n"] += 1
        return real(file, **arrays)

    np.savez_compressed = dying
    model, images, labels = _inputs(work)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    explain_dataset(
        model, ds, "gradcam", out=work / "crashed", batch_size=6, shard_size=8, progress=False
    )
    return {"finished": True}  # not reached when the kill works


def multiworker(work: Path, out: str, train: bool = False, resume: bool = False) -> dict:
    """One worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG in the environment):
    explain the images into `out` (only the chief writes) and report what this worker saw."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before anything else runs
    from xai_keras.scale import explain_dataset, train_distributed

    task = json.loads(os.environ["TF_CONFIG"])["task"]
    die_at = os.environ.get("XAI_TEST_DIE_AT_BATCH", "")  # "task:batch": that worker is killed
    if die_at and int(die_at.split(":")[0]) == task["index"]:
        _die_at_batch(int(die_at.split(":")[1]))

    model, images, labels = _inputs(work)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)
    result = explain_dataset(
        model, ds, "gradcam", out=work / out, batch_size=8, shard_size=10, strategy=strategy,
        progress=False, resume=resume,
    )  # fmt: skip
    info = {
        "task": task["index"],
        "replicas": strategy.num_replicas_in_sync,
        "complete": result.complete,
        "maps": len(result),
    }
    if train:
        trained = train_distributed(_tiny_config(work / f"train-{out}"), strategy, verbose=0)
        info["train_loss"] = trained.history["loss"]
    return info


def _die_at_batch(batch: int) -> None:
    """Fault injection: this process ends as if killed (no cleanup, no exception) when it is
    about to explain its `batch`-th batch (counting from 1)."""
    from xai_keras.scale import loop

    explain, seen = loop.BatchExplainer.__call__, [0]

    def dying(self, *args):
        seen[0] += 1
        if seen[0] == batch:
            os._exit(137)
        return explain(self, *args)

    loop.BatchExplainer.__call__ = dying


def _tiny_config(out_dir: Path):
    from xai_keras.config import load_config

    return load_config(
        None,
        [
            "data.n_train=64",
            "data.n_val=16",
            "data.n_test=16",
            "data.image_size=32",
            "model.filters=[4, 8]",
            "training.epochs=1",
            "training.batch_size=16",
            f"out_dir={out_dir}",
        ],
    )


def main(argv: list[str]) -> int:
    mode, work = argv[0], Path(argv[1])
    if mode == "mirrored":
        result, name = mirrored(work), "result.json"
    elif mode == "multiworker":
        result = multiworker(work, argv[2], "train" in argv[3:], "resume" in argv[3:])
        name = f"result-{argv[2]}-{result['task']}.json"
    else:
        result, name = crash(work, int(argv[2])), "result.json"
    (work / name).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
