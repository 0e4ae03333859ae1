"""Several CAMs in one `explain` call (one shared forward and backward pass) against one call
per method, side by side on the same model and images.

    python -m scripts.bench_multi_method [--repeats 3] [--models cnn] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from xai_keras import explain  # noqa: E402
from xai_keras.config import Config  # noqa: E402
from xai_keras.models import build_cnn  # noqa: E402

METHODS = ["gradcam", "gradcam++", "layercam", "xgradcam"]


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _cases(args: argparse.Namespace) -> list:
    """(label, model, (images, height, width)) of each model asked for."""
    cases = []
    if "cnn" in args.models:
        model = build_cnn(Config().model, (64, 64, 3), 5)
        cases.append(("shapes CNN, 64 images 64x64", model, (64, 64, 64)))
    if "resnet50" in args.models:
        n, size = args.resnet_images, args.resnet_size
        model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
        cases.append((f"ResNet50 (weights=None), {n} images {size}x{size}", model, (n, size, size)))
    return cases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="cnn,resnet50", help="comma list: cnn, resnet50")
    parser.add_argument("--resnet-size", type=int, default=224, help="ResNet50 input side")
    parser.add_argument("--resnet-images", type=int, default=8, help="ResNet50 images per call")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    print(f"| model | {len(METHODS)} separate calls (s) | one call (s) | separate / one |")
    print("|---|---:|---:|---:|")
    for label, model, (n, h, w) in _cases(args):
        x = rng.uniform(0, 1, (n, h, w, 3)).astype(np.float32)
        separate = lambda m=model, x=x: [explain(m, x, method=k) for k in METHODS]  # noqa: E731
        together = lambda m=model, x=x: explain(m, x, method=METHODS)  # noqa: E731
        separate(), together()  # trace both
        t_sep, t_one = _best(separate, args.repeats), _best(together, args.repeats)
        print(f"| {label} | {t_sep:.2f} | {t_one:.2f} | {t_sep / t_one:.2f}x |", flush=True)
        rows.append({"model": label, "separate_s": t_sep, "one_call_s": t_one})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"methods": METHODS, "repeats": args.repeats, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
