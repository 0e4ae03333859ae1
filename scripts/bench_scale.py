"""Benchmark `xai_keras.scale.explain_dataset`: memory stays flat as the dataset grows.

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.bench_scale                      # 2,000 then 20,000 images
    .venv/bin/python -m scripts.bench_scale --sizes 500 5000     # a quicker look
    .venv/bin/python -m scripts.bench_scale --json bench_scale.json

Each size runs in its own subprocess, so each peak RSS (`resource.getrusage(...).ru_maxrss`
in the child) is that run's own. The child builds the project's default CNN, untrained
(`build_cnn(Config().model, (64, 64, 3), 5)`), and explains a shapes dataset that is generated
on the fly by a `tf.data.Dataset.from_generator` (chunks of `generate_shapes` with a different
seed each), so the dataset itself is never in memory, with Grad-CAM, `batch_size=64`,
`shard_size=1024`, and the summary at the end (which reads every map back).

Printed per size: wall time of the `explain_dataset` call (generation, tracing, explaining,
writing, summary), images/s, the RSS before the call (TensorFlow, the model), the peak RSS
and the growth over the baseline, and the size of the output folder. The last line gives the
ratios 20k / 2k of peak RSS and of throughput; the issue asks that peak RSS at 20k stay within
a small constant of 2k.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 500  # images generated per generator step


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(n: int, out: Path, method: str, batch_size: int, shard_size: int) -> dict:
    """One measured run (in a fresh process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from xai_keras.config import Config
    from xai_keras.data import generate_shapes
    from xai_keras.models import build_cnn
    from xai_keras.scale import explain_dataset

    keras.utils.set_random_seed(0)
    model = build_cnn(Config().model, (64, 64, 3), 5)

    def shapes():
        for i, start in enumerate(range(0, n, CHUNK)):
            sample = generate_shapes(min(CHUNK, n - start), 64, seed=1000 + i)
            yield sample.images, sample.labels

    spec = (tf.TensorSpec((None, 64, 64, 3), tf.float32), tf.TensorSpec((None,), tf.int32))
    ds = tf.data.Dataset.from_generator(shapes, output_signature=spec).unbatch()
    ds = ds.apply(tf.data.experimental.assert_cardinality(n))
    model(np.zeros((1, 64, 64, 3), np.float32))  # build everything the baseline should hold
    baseline = _current_rss_mb()
    start = time.perf_counter()
    result = explain_dataset(
        model,
        ds,
        method,
        out=out,
        batch_size=batch_size,
        shard_size=shard_size,
        progress=False,
    )
    seconds = time.perf_counter() - start
    disk = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    return {
        "images": len(result),
        "seconds": seconds,
        "images_per_s": len(result) / seconds,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _rss_mb(),
        "disk_mb": disk,
        "shards": result.maps.shards,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        row = child(args.child, Path(args.out), args.method, args.batch_size, args.shard_size)
        print("RESULT " + json.dumps(row), flush=True)
        return 0

    rows = []
    for n in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench_scale_{n}_"))
        try:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--out",
                str(work / "run"),
                "--method",
                args.method,
                "--batch-size",
                str(args.batch_size),
                "--shard-size",
                str(args.shard_size),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(proc.stderr[-4000:], file=sys.stderr)
                return 1
            rows.append(json.loads(lines[-1][len("RESULT ") :]))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nexplain_dataset, method={args.method}, batch_size={args.batch_size}, "
        f"shard_size={args.shard_size}, untrained default CNN, 64x64x3 shapes generated on "
        f"the fly; {os.cpu_count()} CPU(s)\n"
    )
    header = (
        f"{'images':>8} {'seconds':>8} {'images/s':>9} {'baseline MiB':>13} "
        f"{'peak RSS MiB':>13} {'growth MiB':>11} {'disk MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['images']:>8} {r['seconds']:>8.1f} {r['images_per_s']:>9.0f} "
            f"{r['baseline_rss_mb']:>13.0f} {r['peak_rss_mb']:>13.0f} "
            f"{r['peak_rss_mb'] - r['baseline_rss_mb']:>11.0f} {r['disk_mb']:>9.1f}"
        )
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(
            f"\n{last['images']} vs {first['images']} images: peak RSS x"
            f"{last['peak_rss_mb'] / first['peak_rss_mb']:.3f} "
            f"({last['peak_rss_mb'] - first['peak_rss_mb']:+.0f} MiB), throughput x"
            f"{last['images_per_s'] / first['images_per_s']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
