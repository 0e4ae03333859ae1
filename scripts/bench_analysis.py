"""What layer analysis costs: 5 layers x N shapes images x every factor, side by side with a
plain forward pass over the same images.

    python -m scripts.bench_analysis [--model runs/shapes/model.keras] [--n 2000]

Without --model an untrained default CNN is used (the cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from xai_keras.analysis import analyze_layers, collect_activations, shapes_factors  # noqa: E402
from xai_keras.analysis.gcmi import unit_information  # noqa: E402
from xai_keras.config import Config  # noqa: E402
from xai_keras.data import generate_shapes  # noqa: E402
from xai_keras.models import build_cnn  # noqa: E402


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved .keras shapes model")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    model = (
        keras.models.load_model(args.model, compile=False)
        if args.model
        else build_cnn(Config().model, (64, 64, 3), 5)
    )
    sample = generate_shapes(args.n, 64, seed=0)
    factors = shapes_factors(sample)
    model.predict(sample.images[:64], verbose=0)  # warm up
    forward, _ = _timed(lambda: model.predict(sample.images, batch_size=128, verbose=0))
    rows = [("plain forward pass (model.predict)", forward, "")]
    for grid in (1, 4):
        t_act, (acts, _) = _timed(
            lambda g=grid: collect_activations(model, sample.images, grid=g, progress=False)
        )
        units = sum(a.shape[1] for a in acts.values())
        t_mi, _ = _timed(
            lambda a=acts: [
                unit_information(u, f.values, f.discrete) for u in a.values() for f in factors
            ]
        )
        t_all, _ = _timed(
            lambda a=acts, g=grid: analyze_layers(
                model, sample.images, factors, grid=g, progress=False, activations=a
            )
        )
        label = "per channel" if grid == 1 else f"{grid}x{grid} cells per channel"
        rows.append((f"activations, {label} ({len(acts)} layers, {units} units)", t_act, ""))
        rows.append((f"unit MI only, {label} ({units} units x {len(factors)} factors)", t_mi, ""))
        rows.append((f"full analysis, {label} (unit MI, read-out, invariance)", t_all + t_act, ""))
    print(f"\n{args.n} images, {len(factors)} factors\n")
    print(f"| {'step':70s} | seconds | x forward |")
    print(f"|{'-' * 72}|--------:|----------:|")
    for name, seconds, _ in rows:
        print(f"| {name:70s} | {seconds:7.2f} | {seconds / forward:9.1f} |")
    print(f"\n(numpy {np.__version__}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
