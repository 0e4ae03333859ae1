"""Throughput of RISE, LIME and KernelSHAP's masked passes against plain inference.

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.bench_perturbation                 # project CNN, 64x64
    .venv/bin/python -m scripts.bench_perturbation --model mobilenetv2 --size 96 --quick
    .venv/bin/python -m scripts.bench_perturbation --help

Target (issue 20): the masked passes run at >= 0.9x plain-inference throughput. Each
method's full user-facing call `explain(model, image, method, batch_size=B, <K samples>)` on
one image scores K masked images (RISE: `masks=K`; LIME and KernelSHAP: `samples=K`,
superpixels by SLIC, ridge / constrained least squares included), so its throughput is
K / time. The reference is a plain compiled forward pass `tf.function(model(x))` over K images
in batches of B (the size of the masked chunks), and, for information, the runner's own
compiled forward pass. Ratios, not seconds: per round, reference time / method time; the
median over interleaved rounds is reported, of wall time (the target) and of this process's
CPU time (steadier on a shared machine: it counts the work, not the waiting). Nothing is
written; `--json` saves the figures. `--jit` adds a row for the plain forward pass compiled by
XLA (`jit_compile=True`), to see where XLA pays on this machine.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from scripts.common import cpu_snapshot, format_table, measure, median, others_share, paired_ratio
from xai_keras import explain  # noqa: E402
from xai_keras.config import ModelConfig  # noqa: E402
from xai_keras.explainers.base import runner_for  # noqa: E402
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
    parser.add_argument("--jit", action="store_true", help="add an XLA plain-forward row")
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
    names = ["runner", *METHODS]
    if args.jit:
        xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
        fns["xla"] = lambda: [xla(x) for x in batches][-1]
        names.insert(1, "xla")
    for name, option in METHODS.items():
        fns[name] = lambda n=name, o=option: explain(model, image, n, batch_size=b, **{o: k}).raw
    start = cpu_snapshot()
    timings = measure(fns, args.repeats, args.warmup)
    times, cpu = timings.wall, timings.cpu
    others = others_share(start, cpu_snapshot())

    rows, figures = [], {}
    for name in names:
        ratio = paired_ratio(times["plain"], times[name])
        cpu_ratio = paired_ratio(cpu["plain"], cpu[name])
        figures[name] = {
            "ratio_to_plain": ratio,
            "cpu_ratio_to_plain": cpu_ratio,
            "images_per_s": k / median(times[name]),
        }
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        verdict = verdict if name in METHODS else ""
        rate = f"{k / median(times[name]):.0f}"
        rows.append([name, rate, f"{ratio:.2f}x", f"{cpu_ratio:.2f}x", verdict])
    rate = f"{k / median(times['plain']):.0f}"
    rows.insert(0, ["plain tf.function(model)", rate, "1.00x", "1.00x", ""])
    figures["plain"] = {"images_per_s": k / median(times["plain"])}
    print(
        f"model {args.model} {args.size}x{args.size}, K={k} masked images per call, chunks "
        f"of B={b}, {args.repeats} rounds; other processes used "
        f"{'?' if others is None else f'{100 * others:.0f}%'} of the CPUs"
    )
    headers = ["call", "images/s", "vs plain (wall)", "vs plain (CPU time)", f">= {TARGET}x"]
    print(format_table(headers, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "figures": figures, "others_cpu": others}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
