"""Benchmark LRP and DeepLIFT against one gradient pass (saliency) on a real architecture.

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.bench_relevance                   # ResNet50, 224, batch 4
    .venv/bin/python -m scripts.bench_relevance --model mobilenetv2 --batch 8

Target (issue 20): LRP costs at most 2x one gradient pass. Every call is the full user-facing
`explain(model, x, method=..., batch_size=B)` on the same batch, timed side by side in
interleaved rounds after warm-up (see `bench_explain.measure`); the ratio is the median of the
per-round ratios to `saliency`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from scripts.common import format_table, measure, median, paired_ratio
from xai_keras import explain  # noqa: E402

CALLS = {
    "saliency": {"method": "saliency"},
    "lrp (composite)": {"method": "lrp"},
    "lrp rule=0": {"method": "lrp", "rule": "0"},
    "lrp rule=epsilon": {"method": "lrp", "rule": "epsilon"},
    "lrp rule=zplus": {"method": "lrp", "rule": "zplus"},
    "deeplift": {"method": "deeplift"},
}
MODELS = {
    "resnet50": keras.applications.ResNet50,
    "mobilenetv2": keras.applications.MobileNetV2,
    "vgg16": keras.applications.VGG16,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    model = MODELS[args.model](weights=None, input_shape=(args.size, args.size, 3))
    x = np.random.default_rng(0).uniform(0, 1, (args.batch, args.size, args.size, 3))
    x = x.astype(np.float32)
    fns = {
        name: (lambda kw=kw: explain(model, x, batch_size=args.batch, **kw).maps)
        for name, kw in CALLS.items()
    }
    times = measure(fns, args.repeats, args.warmup, args.model).wall
    rows = [
        (name, f"{1000 * median(t) / args.batch:.0f}", f"{paired_ratio(t, times['saliency']):.2f}x")
        for name, t in times.items()
    ]
    print(f"{args.model} weights=None, {args.size}x{args.size}, batch {args.batch}, CPU")
    print(format_table(["call", "ms / image", "vs saliency"], rows))
    ratio = paired_ratio(times["lrp (composite)"], times["saliency"])
    print(f"target LRP (composite) <= 2x saliency: {ratio:.2f}x {'PASS' if ratio <= 2 else 'FAIL'}")
    if args.json:
        figures = {
            name: {
                "ms_per_image": 1000 * median(t) / args.batch,
                "vs_saliency": paired_ratio(t, times["saliency"]),
            }
            for name, t in times.items()
        }
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "figures": figures}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
