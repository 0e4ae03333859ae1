"""Benchmark activation maximisation: 16 channels of a mid layer, 256 steps, one batch.

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.bench_maximize            # ~1-2 min on 2 cores
    .venv/bin/python -m scripts.bench_maximize --rounds 1 # quicker
    .venv/bin/python -m scripts.bench_maximize --model logs/shapes/model.keras

What is measured, side by side in interleaved rounds (so load from other processes hits both):

- `maximize(model, "block3_relu1", "0-15", steps=256)` with the default regularisers
  (Fourier image, decorrelated colour, jitter/rotation/scale, blur every 8 steps): the whole
  call, i.e. start images, 16 compiled chunks of 16 steps, and the final scoring;
- the same with plain pixels and no transformations or blur (the bare cost of the ascent);
- 256 plain forward+backward passes of the same 16-image batch through the whole model
  (`tf.function` of a GradientTape over `model(x)`, one call per pass).

The ratio column is median(maximise time / plain time) over the rounds. The issue's target is
a whole 256-step run of 16 units in under a minute on this CPU: the first (cold) call,
tracing included, is reported for that.
"""

from __future__ import annotations

import argparse
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from scripts.common import cpu_snapshot, format_table, measure, others_share, paired_ratio
from xai_keras.config import Config  # noqa: E402
from xai_keras.features import maximize  # noqa: E402
from xai_keras.models import build_cnn  # noqa: E402

LAYER, UNITS = "block3_relu1", "0-15"
BARE = {"param": "pixel", "jitter": 0, "rotate": 0, "scale": 0, "blur_every": 0}


def _model(path: str | None) -> keras.Model:
    if path:
        return keras.models.load_model(path)
    keras.utils.set_random_seed(0)
    return build_cnn(Config().model, (64, 64, 3), 5)


def _plain_passes(model: keras.Model, x: tf.Tensor, steps: int):
    """`steps` compiled forward+backward passes of the whole model on the batch."""

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(model(x, training=False))
        return tape.gradient(y, x)

    def run():
        for _ in range(steps):
            out = grad(x)
        return out

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a saved .keras model (default: untrained shapes CNN)")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after warm-up")
    args = parser.parse_args(argv)

    model = _model(args.model)
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (16, 64, 64, 3)).astype(np.float32))
    steps = args.steps
    print(f"model {model.name}, layer {LAYER}, units {UNITS}, {steps} steps, batch 16, 64x64")

    start = time.perf_counter()
    cold = maximize(model, LAYER, UNITS, steps=steps)
    cold_s = time.perf_counter() - start
    results = {}

    def run(name: str, **options):
        def call():
            results[name] = maximize(model, LAYER, UNITS, steps=steps, **options)
            return results[name].images

        return call

    fns = {
        "plain": _plain_passes(model, x, steps),
        "maximize": run("maximize"),
        "bare": run("bare", **BARE),
    }
    before = cpu_snapshot()
    times = measure(fns, args.rounds, 1, "bench_maximize").wall
    others = others_share(before, cpu_snapshot())

    def row(label: str, name: str, traces: object) -> list:
        wall = float(np.median(times[name]))
        ratio = "1.00x" if name == "plain" else f"{paired_ratio(times[name], times['plain']):.2f}x"
        return [label, f"{wall:.2f}", f"{steps / wall:.1f}", traces, ratio]

    rows = [
        row(f"{steps} plain forward+backward passes", "plain", "-"),
        row("maximize, default regularisers", "maximize", results["maximize"].traces),
        row("maximize, bare pixels (no transforms/blur)", "bare", results["bare"].traces),
        ["maximize, first call (tracing included)", f"{cold_s:.2f}", f"{steps / cold_s:.1f}"]
        + [cold.traces, "-"],
    ]
    headers = ["run", "wall s", "steps/s", "traces", "vs plain"]
    print(format_table(headers, rows))
    if others is not None:
        print(f"other processes used {100 * others:.0f}% of the CPUs during the timed rounds")
    verdict = "PASS" if cold_s < 60 else "FAIL"
    print(f"target: 16 units x {steps} steps in under 60 s (cold call): {cold_s:.1f}s {verdict}")
    return 0 if cold_s < 60 else 1


if __name__ == "__main__":
    sys.exit(main())
