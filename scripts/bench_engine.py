"""Benchmark `explain_with_ray` (Ray Data, 2 worker processes) against `explain_dataset`.

Run (from the repository root; needs `pip install -e '.[ray]'`):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.bench_engine                    # 1,000 and 2,000 images
    .venv/bin/python -m scripts.bench_engine --sizes 200 400    # a quicker look
    .venv/bin/python -m scripts.bench_engine --json bench_engine.json

Data: a folder of PNGs written from the project's shapes data (`xai_keras.data
.generate_shapes`, 64x64 RGB, one sub-folder per class), so both engines read the same files
and neither holds the dataset in memory. Model: the project's default CNN, untrained but
seeded (`build_cnn(Config().model, (64, 64, 3), 5)`, as `bench_scale`), saved as `.keras`.
Method Grad-CAM, `batch_size=64`, `shard_size=250`, summary on.

Every run is its own process, alternating the two engines per size. A sampler thread adds up
the resident memory of the run's process and all its descendants (Ray's daemons and workers
for the engine) every 0.2 s; "peak MiB" is the largest sum. For the engine, the local Ray
instance is started before the timed call (its start is reported apart: a production cluster
is already up) and the call's own seconds include starting the two workers, loading the
model there and tracing. "steady img/s" counts the images committed between the first and the
last shard (`on_shard`), i.e. without start-up.

Targets (issue 28): throughput of the engine >= 0.8x explain_dataset's; the engine's peak
memory at 2,000 images within 10% of 1,000; max map difference 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from scripts.common import ROOT, format_table, log, verdict

SIZE, CLASSES = 64, 5


def _tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


class _PeakSampler(threading.Thread):
    """The largest total RSS of this process and its descendants, sampled every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _tree_rss_mb(os.getpid()))
            self.stop.wait(0.2)


def prepare(work: Path, n: int) -> tuple[Path, Path]:
    """The model file and a folder of `n` shapes PNGs (in `work`)."""
    import cv2
    import keras

    from xai_keras.config import Config
    from xai_keras.data import generate_shapes
    from xai_keras.models import build_cnn

    model_path = work / "model.keras"
    if not model_path.exists():
        keras.utils.set_random_seed(0)
        build_cnn(Config().model, (SIZE, SIZE, 3), CLASSES).save(model_path)
    folder = work / f"images-{n}"
    if not folder.exists():
        sample = generate_shapes(n, SIZE, seed=7)
        for i, (image, label) in enumerate(zip(sample.images, sample.labels)):
            sub = folder / f"class{int(label)}"
            sub.mkdir(parents=True, exist_ok=True)
            pixels = (image * 255).round().astype("uint8")[..., ::-1]  # cv2 writes BGR
            cv2.imwrite(str(sub / f"{i:05d}.png"), pixels)
    return model_path, folder


def child(engine: str, model_path: Path, folder: Path, out: Path, workers: int) -> dict:
    """One measured run (in a fresh process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sampler = _PeakSampler()
    sampler.start()
    shards: list[tuple[float, int]] = []

    def on_shard(k: int, done: int) -> None:
        shards.append((time.perf_counter(), done))

    settings = dict(batch_size=64, shard_size=250, progress=False, on_shard=on_shard)
    cluster_s = 0.0
    if engine == "ray":
        import ray

        from xai_keras.scale import explain_with_ray

        start = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
        cluster_s = time.perf_counter() - start
        start = time.perf_counter()
        result = explain_with_ray(model_path, folder, "gradcam", out=out, workers=workers,
                                  **settings)  # fmt: skip
    else:
        from xai_keras.models import load_model_file
        from xai_keras.scale import explain_dataset

        start = time.perf_counter()
        model = load_model_file(model_path)  # the engine's seconds include loading it too
        result = explain_dataset(model, folder, "gradcam", out=out, **settings)
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    if engine == "ray":
        ray.shutdown()
    (t0, n0), (t1, n1) = shards[0], shards[-1]
    return {
        "engine": engine,
        "images": len(result),
        "seconds": seconds,
        "cluster_start_s": cluster_s,
        "images_per_s": len(result) / seconds,
        "steady_images_per_s": (n1 - n0) / (t1 - t0) if t1 > t0 else None,
        "peak_tree_mb": sampler.peak,
        "load_average": os.getloadavg()[0],  # other processes' demand on the machine
    }


def _run_child(engine: str, model_path: Path, folder: Path, out: Path, workers: int) -> dict:
    cmd = [sys.executable, "-m", "scripts.bench_engine", "--child", engine, "--model",
           str(model_path), "--folder", str(folder), "--out", str(out), "--workers",
           str(workers)]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{engine} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _max_difference(a: Path, b: Path) -> float:
    import numpy as np

    from xai_keras.scale import DatasetExplanation

    x, y = DatasetExplanation(a), DatasetExplanation(b)
    assert x.index == y.index, "the records differ"
    worst = 0.0
    for (_, ma), (_, mb) in zip(x.maps.iter_shards(), y.maps.iter_shards()):
        worst = max(worst, float(np.abs(ma - mb).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 2000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", choices=["ray", "dataset"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        row = child(args.child, Path(args.model), Path(args.folder), Path(args.out), args.workers)
        print("RESULT " + json.dumps(row), flush=True)
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    rows, difference = [], None
    try:
        for n in args.sizes:
            model_path, folder = prepare(work, n)
            for engine in ("dataset", "ray"):
                log(f"{engine}: {n} images ...")
                rows.append(_run_child(engine, model_path, folder, work / f"{engine}-{n}",
                                       args.workers))  # fmt: skip
        big = max(args.sizes)
        difference = _max_difference(work / f"dataset-{big}", work / f"ray-{big}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(_report(rows, args.sizes, args.workers, difference))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, "max_difference": difference}))
    return 0


def _report(rows: list[dict], sizes: list[int], workers: int, difference: float) -> str:
    table = format_table(
        ["engine", "images", "seconds", "img/s", "steady img/s", "Ray start s", "peak MiB",
         "load avg"],
        [[r["engine"], r["images"], f"{r['seconds']:.1f}", f"{r['images_per_s']:.1f}",
          f"{r['steady_images_per_s']:.1f}" if r["steady_images_per_s"] else "-",
          f"{r['cluster_start_s']:.1f}" if r["engine"] == "ray" else "-",
          f"{r['peak_tree_mb']:.0f}", f"{r['load_average']:.1f}"] for r in rows],
    )  # fmt: skip
    by = {(r["engine"], r["images"]): r for r in rows}
    small, big = sorted(sizes)
    ray, one = by[("ray", big)], by[("dataset", big)]
    ratio = ray["images_per_s"] / one["images_per_s"]
    steady = (ray["steady_images_per_s"] or 0) / (one["steady_images_per_s"] or 1)
    memory = ray["peak_tree_mb"] / by[("ray", small)]["peak_tree_mb"]
    lines = [
        f"\nexplain_with_ray ({workers} workers) vs explain_dataset (1 process), gradcam, "
        f"folder of {SIZE}x{SIZE} shapes PNGs; {os.cpu_count()} CPU(s)\n",
        table,
        "",
        f"throughput ratio at {big} (call seconds, Ray already started): {ratio:.2f}x "
        f"{verdict(ratio >= 0.8)} (target >= 0.8x); steady state: {steady:.2f}x",
        f"engine peak memory {big} vs {small} images: x{memory:.3f} "
        f"{verdict(abs(memory - 1) <= 0.10)} (target within 10%)",
        f"max map difference at {big}: {difference:g} {verdict(difference == 0)} (target 0)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
