"""Several CAMs in one `explain` call (one shared forward and backward pass) against one call
per method, side by side on the same model and images.

    python scripts/bench_multi_method.py [--repeats 3]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = [
        ("shapes CNN, 64 images 64x64", build_cnn(Config().model, (64, 64, 3), 5), (64, 64, 64)),
        (
            "ResNet50 (weights=None), 8 images 224x224",
            keras.applications.ResNet50(weights=None),
            (8, 224, 224),
        ),
    ]
    print(f"| model | {len(METHODS)} separate calls (s) | one call (s) | separate / one |")
    print("|---|---:|---:|---:|")
    for label, model, (n, h, w) in cases:
        x = rng.uniform(0, 1, (n, h, w, 3)).astype(np.float32)
        separate = lambda m=model, x=x: [explain(m, x, method=k) for k in METHODS]  # noqa: E731
        together = lambda m=model, x=x: explain(m, x, method=METHODS)  # noqa: E731
        separate(), together()  # trace both
        t_sep, t_one = _best(separate, args.repeats), _best(together, args.repeats)
        print(f"| {label} | {t_sep:.2f} | {t_one:.2f} | {t_sep / t_one:.2f}x |")


if __name__ == "__main__":
    main()
