"""How many traces, and how much time, do batches of every size from 1 to 9 cost?

    python -m scripts.bench_batch_sizes [--sizes 9] [--batch-size 8]
        [--methods gradcam,saliency,integrated_gradients] [--model cnn|mobilenetv2]
        [--json PATH]

A server or a notebook explains whatever number of images comes: each new batch size used to
be a new shape for every compiled kernel, so a new trace. The session now pads each batch up to
one of a few bucket sizes (powers of two up to `batch_size`, and `batch_size`), so the traces
are bounded by the buckets. For each method, on a fresh model (same seed), this explains
`images[:n]` for n = 1..`--sizes` twice in a row and prints:

- traces: the total over every compiled kernel of the model's runners, and the most any one
  kernel took;
- first pass: seconds for the n = 1..`--sizes` calls that trace (what a new process pays);
- second pass: seconds for the same calls again (no tracing: what the padding rows cost).

Timings are wall clock on a shared machine: compare rows of one run, not runs of different
days.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scripts.common import format_table, log  # noqa: E402

_OPTIONS = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 4}}


def build_model(kind: str):
    """A seeded model: the project's CNN (64x64) or an untrained MobileNetV2 (96x96)."""
    import keras

    from xai_keras.config import ModelConfig
    from xai_keras.models import build_cnn

    keras.utils.set_random_seed(0)
    if kind == "mobilenetv2":
        return keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    return build_cnn(ModelConfig(filters=[16, 32, 64]), (64, 64, 3), 10)


def kernel_traces(model) -> dict[str, int]:
    """Traces of each compiled kernel of the model's runners, by runner and kernel name."""
    from xai_keras.explainers.graph import model_store

    counts = {}
    for key, runner in model_store(model).get("runners", {}).items():
        for name, fn in runner._kernels.items():
            counts[f"{key[:2]}/{name}"] = fn.experimental_get_tracing_count()
    return counts


def run_method(kind: str, method: str, sizes: int, batch_size: int) -> dict:
    """Explain images[:n] for n = 1..sizes, twice; traces and seconds of each pass."""
    import numpy as np

    from xai_keras import explain

    model = build_model(kind)
    shape = tuple(model.inputs[0].shape[1:])
    images = np.random.default_rng(0).uniform(0, 1, (sizes, *shape)).astype(np.float32)
    options = _OPTIONS.get(method, {})
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        for n in range(1, sizes + 1):
            explain(model, images[:n], method=method, batch_size=batch_size, **options)
        seconds.append(time.perf_counter() - start)
    counts = kernel_traces(model)
    return {
        "method": method,
        "traces": sum(counts.values()),
        "max_per_kernel": max(counts.values()),
        "kernels": counts,
        "first_pass_s": seconds[0],
        "second_pass_s": seconds[1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, default=9, help="explain 1..SIZES images")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", default="gradcam,saliency,integrated_gradients")
    parser.add_argument("--model", choices=("cnn", "mobilenetv2"), default="cnn")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    rows = []
    for method in args.methods.split(","):
        log(f"{method} ...")
        rows.append(run_method(args.model, method, args.sizes, args.batch_size))
    print(
        f"explain(model, images[:n], method, batch_size={args.batch_size}) for n = "
        f"1..{args.sizes}, model {args.model}"
    )
    print(
        format_table(
            ["method", "traces", "most per kernel", "first pass s", "second pass s"],
            [
                [
                    r["method"],
                    r["traces"],
                    r["max_per_kernel"],
                    f"{r['first_pass_s']:.2f}",
                    f"{r['second_pass_s']:.2f}",
                ]
                for r in rows
            ],
        )  # fmt: skip
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
