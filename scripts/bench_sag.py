"""Benchmark structured attention graphs: masked-image throughput and the cost of a whole SAG.

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python scripts/bench_sag.py            # ~5-8 min on 2 cores (ResNet50 SAG dominates)
    .venv/bin/python scripts/bench_sag.py --quick    # the project CNN only
    .venv/bin/python scripts/bench_sag.py --help

Targets (from the issue), measured side by side in one run:

1. Masked images per second >= 0.8x the plain-inference throughput of the same model at the
   same batch size: `PatchScorer.probabilities` on new patch sets (the masks are built and
   the images blended inside the same compiled function) against
   `tf.function(lambda x: model(x, training=False))` on ready-made images.
2. A whole SAG with the default settings (7x7 grid, beam width 5, threshold 0.9 relative,
   blurred baseline) on a 224x224 ResNet50 costs a bounded number of masked forward passes:
   the count and the seconds per image are reported (the bound is max_size x beam_width x
   patches for the search, plus minimisation and the graph).

`--jit` adds an XLA column: the same plain inference compiled with `jit_compile=True`, and its
throughput against the plain one. `--json PATH` saves both tables.

The reference implementation scores one masked image per forward pass (its published example
took ~400 s per 224x224 image with VGG19).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_explain import _ratio, format_table, measure  # noqa: E402

from xai_keras.config import ModelConfig  # noqa: E402
from xai_keras.explain.sag import PatchScorer, sag  # noqa: E402
from xai_keras.models import build_cnn  # noqa: E402


def _models(
    quick: bool, cnn_batch: int = 64, resnet_batch: int = 16
) -> list[tuple[str, keras.Model, int, int]]:
    keras.utils.set_random_seed(0)
    found = [("xai_cnn 64x64", build_cnn(ModelConfig(), (64, 64, 3), 5), 64, cnn_batch)]
    if not quick:
        resnet = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
        found.append(("ResNet50 224x224", resnet, 224, resnet_batch))
    return found


def throughput(name, model, size, batch, repeats, rng, jit=False) -> list:
    """Masked images/s of the SAG scorer vs plain compiled inference, same batch size; with
    `jit`, also the plain inference compiled by XLA."""
    image = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
    plain = tf.function(lambda x: model(x, training=False))
    x = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32))
    scorer = PatchScorer(model, image, 0, (7, 7), "blur", batch)
    # Distinct random patch sets, drawn up front so the timed calls only score them.
    masks = rng.uniform(size=((repeats + 2) * batch, 49)) < 0.3
    pool = list(dict.fromkeys(tuple(int(v) for v in np.flatnonzero(m)) for m in masks))
    chunks = iter(pool[i : i + batch] for i in range(0, len(pool) - batch + 1, batch))

    def fresh_sets():
        """`batch` patch sets never scored before, so each call really runs the model."""
        return scorer.probabilities(next(chunks))

    fns = {"plain": lambda: plain(x), "sag": fresh_sets}
    if jit:
        xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
        fns["xla"] = lambda: xla(x)
    times = measure(fns, repeats, 1, name)
    ratio = 1 / _ratio(times["sag"], times["plain"])
    plain_ips = batch / np.median(times["plain"])
    sag_ips = batch / np.median(times["sag"])
    row = [
        name,
        batch,
        f"{plain_ips:.1f}",
        f"{sag_ips:.1f}",
        f"{ratio:.2f}x",
        "PASS" if ratio >= 0.8 else "FAIL",
    ]
    if jit:
        xla_ips = batch / np.median(times["xla"])
        row += [f"{xla_ips:.1f}", f"{1 / _ratio(times['xla'], times['plain']):.2f}x"]
    return row


def whole_sag(name, model, size, batch, images, rng, label, **options) -> list:
    """Forward passes and seconds for a full SAG, per image."""
    counts, seconds, roots = [], [], []
    for _ in range(images):
        image = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # empty graphs are expected here
            g = sag(model, image, batch_size=batch, **options)
        seconds.append(time.perf_counter() - start)
        counts.append(g.n_forward)
        roots.append(len(g.roots))
    return [
        name,
        label,
        images,
        f"{np.mean(counts):.0f}",
        f"{max(counts)}",
        f"{np.mean(seconds):.1f}",
        f"{np.mean(roots):.1f}",
    ]


# The settings of each whole-SAG row. With random weights a blurred image keeps most of the
# confidence, so "black" shows a real search; an unreachable threshold shows the worst case.
_SETTINGS = {
    "default (blur)": {},
    "black baseline": {"baseline": "black"},
    "worst case": {"threshold": 0.9999, "relative": False, "baseline": "black"},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the project CNN only")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement")
    parser.add_argument("--images", type=int, default=2, help="images per whole-SAG measurement")
    parser.add_argument("--cnn-batch", type=int, default=64, help="batch of the project CNN")
    parser.add_argument("--resnet-batch", type=int, default=16, help="batch of ResNet50")
    parser.add_argument(
        "--settings",
        default=",".join(_SETTINGS),
        help=f"comma list of the whole-SAG rows: {', '.join(_SETTINGS)}",
    )
    parser.add_argument("--jit", action="store_true", help="add an XLA plain-inference column")
    parser.add_argument("--json", metavar="PATH", help="also write both tables as JSON")
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if set(settings) - set(_SETTINGS):
        parser.error(f"unknown --settings {sorted(set(settings) - set(_SETTINGS))}")
    rng = np.random.default_rng(0)
    models = _models(args.quick, args.cnn_batch, args.resnet_batch)
    rows = [throughput(n, m, s, b, args.repeats, rng, args.jit) for n, m, s, b in models]
    print("\nMasked-image throughput (images/s, median of interleaved rounds)")
    headers = ["model", "batch", "plain", "SAG masked", "ratio", ">= 0.8x"]
    headers += ["XLA plain", "XLA / plain"] if args.jit else []
    print(format_table(headers, rows), flush=True)
    results = {"throughput": [dict(zip(headers, row)) for row in rows]}
    rows = [
        whole_sag(n, m, s, b, args.images, rng, label, **_SETTINGS[label])
        for n, m, s, b in models
        for label in settings
    ]
    print("\nWhole SAG (7x7 grid, beam width 5, threshold 0.9 relative unless stated)")
    print(f"search bound: max_size x beam_width x patches = 15 x 5 x 49 = {15 * 5 * 49}")
    headers = ["model", "settings", "images", "forward passes", "max", "s / image", "roots"]
    print(format_table(headers, rows))
    results["whole_sag"] = [dict(zip(headers, row)) for row in rows]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
