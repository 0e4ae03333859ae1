"""Throughput of RISE, LIME and KernelSHAP's masked passes against plain inference.

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python scripts/bench_perturbation.py                 # project CNN, 64x64
    .venv/bin/python scripts/bench_perturbation.py --model mobilenetv2 --size 96 --quick
    .venv/bin/python scripts/bench_perturbation.py --help

Target (issue 20): the masked passes run at >= 0.9x plain-inference throughput. Each
method's full user-facing call `explain(model, image, method, batch_size=B, <K samples>)` on
one image scores K masked images (RISE: `masks=K`; LIME and KernelSHAP: `samples=K`,
superpixels by SLIC, ridge / constrained least squares included), so its throughput is
K / time. The reference is a plain compiled forward pass `tf.function(model(x))` over K images
in batches of B (the size of the masked chunks), and, for information, the runner's own
compiled forward pass. Ratios, not seconds: per round, reference time / method time; the
median over interleaved rounds is reported (see scripts/bench_explain.py for how rounds are
timed). Nothing is written; `--json` saves the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, __file__.rsplit("/", 1)[0])  # the other scripts, when run from elsewhere

from bench_explain import (  # noqa: E402
    _cpu_snapshot,
    _median,
    _others_share,
    _ratio,
    format_table,
    measure,
)

from xai_keras import explain  # noqa: E402
from xai_keras.config import ModelConfig  # noqa: E402
from xai_keras.explain.base import runner_for  # noqa: E402
from xai_keras.models import build_cnn  # noqa: E402

TARGET = 0.9
METHODS = {"rise": "masks", "lime": "samples", "kernelshap": "samples"}


def _model(kind: str, size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    if kind == "cnn":
        return build_cnn(ModelConfig(), (size, size, 3), 5)
    return keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("cnn", "mobilenetv2"), default="cnn")
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--samples", type=int, default=1024, help="K masked images per call")
    parser.add_argument("--batch-size", type=int, default=64, help="B, the masked chunk size")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 1 warm-up, K=512")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.samples = 3, 1, 512

    model = _model(args.model, args.size)
    image = np.random.default_rng(0).uniform(0, 1, (1, args.size, args.size, 3)).astype("f4")
    k, b = args.samples, args.batch_size
    batches = [tf.constant(np.repeat(image, b, axis=0))] * max(1, k // b)
    plain = tf.function(lambda x: model(x, training=False))
    runner = runner_for(model)

    fns = {
        "plain": lambda: [plain(x) for x in batches][-1],
        "runner": lambda: [runner.forward_fn(x) for x in batches][-1],
    }
    for name, option in METHODS.items():
        fns[name] = lambda n=name, o=option: explain(model, image, n, batch_size=b, **{o: k}).raw
    start = _cpu_snapshot()
    times = measure(fns, args.repeats, args.warmup, "perturbation")
    others = _others_share(start, _cpu_snapshot())

    rows, figures = [], {}
    for name in ("runner", *METHODS):
        ratio = _ratio(times["plain"], times[name])
        figures[name] = {"ratio_to_plain": ratio, "median_s": _median(times[name])}
        verdict = "" if name == "runner" else ("PASS" if ratio >= TARGET else "FAIL")
        rows.append([name, f"{k / _median(times[name]):.0f}", f"{ratio:.2f}x", verdict])
    rows.insert(0, ["plain tf.function(model)", f"{k / _median(times['plain']):.0f}", "1.00x", ""])
    print(
        f"model {args.model} {args.size}x{args.size}, K={k} masked images per call, chunks "
        f"of B={b}, {args.repeats} rounds; other processes used "
        f"{'?' if others is None else f'{100 * others:.0f}%'} of the CPUs"
    )
    print(format_table(["call", "images/s", "throughput vs plain", f">= {TARGET}x"], rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "figures": figures, "others_cpu": others}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
