"""Do many `explain` calls on one model and input shape retrace or grow memory?

    python -m scripts.check_memory [--calls 1000] [--n 8] [--methods gradcam,saliency,...]
        [--json PATH]

A training loop, a callback or a server calls `explain` on the same model and image shape
over and over; each call must reuse the kernels compiled on the first one (kept on the model)
and free what it allocated. For each method family (Grad-CAM, saliency, Integrated Gradients,
Score-CAM by default) this calls `explain` `--calls` times on the same `--n` images and prints
the process RSS after call 1 (tracing and caches done), at a few checkpoints and after the last
call, plus the number of traces of all compiled kernels of the model's runners after call 1 and
after the last call.

Exit status 1 when a method traced again after call 1 or its RSS grew by more than
`--tolerance` MiB from call 1 to the last call; 0 otherwise.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Small options keep 1,000 calls of the slow families within a few minutes on 2 CPU cores.
_OPTIONS = {"integrated_gradients": {"steps": 8}, "scorecam": {"max_channels": 8}}


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def traces(model) -> tuple[int, int]:
    """(total traces of every compiled kernel of the model's runners, number of runners)."""
    from xai_keras.explainers.graph import model_store

    runners = model_store(model).get("runners", {})
    total = 0
    for runner in runners.values():
        fns = [runner.forward_fn, runner.layer_grads_fn, runner.input_grads_fn]
        fns += list(runner._kernels.values())
        total += sum(fn.experimental_get_tracing_count() for fn in fns)
    return total, len(runners)


def checkpoints(calls: int) -> list[int]:
    """Calls after which the RSS is printed: 1, 10, 100, a quarter, a half, the last."""
    return sorted({c for c in (1, 10, 100, calls // 4, calls // 2, calls) if 1 <= c <= calls})


def run_method(model, images, method: str, calls: int, options: dict) -> dict:
    """Call explain `calls` times; RSS (MiB) per checkpoint, traces, ms per call."""
    from xai_keras import explain

    marks, rss = set(checkpoints(calls)), {}
    start = time.perf_counter()
    for i in range(1, calls + 1):
        exp = explain(model, images, method=method, batch_size=len(images), **options)
        del exp
        if i == 1:
            first_traces = traces(model)
            start = time.perf_counter()  # time the warm calls only
        if i in marks:
            gc.collect()
            rss[i] = rss_mb()
    ms = 1000 * (time.perf_counter() - start) / max(1, calls - 1)
    return {"rss": rss, "traces": (first_traces, traces(model)), "ms": ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="explain calls per method")
    parser.add_argument("--n", type=int, default=8, help="images per call")
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument(
        "--methods", default="gradcam,saliency,integrated_gradients,scorecam", help="comma list"
    )
    parser.add_argument(
        "--tolerance", type=float, default=32.0, help="allowed RSS growth per method, MiB"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.calls < 2 or args.n < 1:
        parser.error("--calls must be >= 2 and --n >= 1")

    start_rss = rss_mb()
    from xai_keras.config import ModelConfig
    from xai_keras.models import build_cnn

    model = build_cnn(ModelConfig(), (args.size, args.size, 3), 5)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.n, args.size, args.size, 3)).astype(np.float32)
    print(
        f"{args.calls} explain calls per method, {args.n} images of {args.size}x{args.size}x3 "
        f"each, default CNN ({model.count_params():,} parameters); RSS at start "
        f"{start_rss:.0f} MiB, after building the model {rss_mb():.0f} MiB",
        flush=True,
    )
    marks = checkpoints(args.calls)
    half = args.calls // 2
    header = ["method", "ms/call", *[f"RSS@{c}" for c in marks]]
    header += ["growth 1→N", f"growth {half}→N", "traces@1", "traces@N"]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1), flush=True)
    failed, rows = [], []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        options = _OPTIONS.get(method, {})
        r = run_method(model, images, method, args.calls, options)
        growth = r["rss"][args.calls] - r["rss"][1]
        (t1, runners1), (tn, runners_n) = r["traces"]
        ok = tn == t1 and runners_n == runners1 and growth <= args.tolerance
        if not ok:
            failed.append(method)
        label = method + "".join(f" {k}={v}" for k, v in options.items())
        cells = [label, f"{r['ms']:.1f}", *[f"{r['rss'][c]:.0f}" for c in marks]]
        steady = r["rss"][args.calls] - r["rss"][half]  # after warm-up: a leak shows here
        cells += [f"{growth:+.1f}", f"{steady:+.1f}", str(t1), str(tn) + ("" if ok else " FAIL")]
        print("| " + " | ".join(cells) + " |", flush=True)
        rows.append(
            {
                "method": label,
                "ms_per_call": r["ms"],
                "rss_mb": r["rss"],
                "growth_mb": growth,
                "steady_growth_mb": steady,
                "traces": [t1, tn],
                "ok": ok,
            }
        )
    print(
        f"RSS at the end {rss_mb():.0f} MiB. RSS@k: MiB after call k; traces: traces of all "
        "compiled kernels of the model's runners (cumulative over the methods run so far)."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"calls": args.calls, "n": args.n, "size": args.size, "rows": rows}, f)
    if failed:
        print(
            f"FAIL: {', '.join(failed)} retraced after call 1 or grew by more than "
            f"{args.tolerance:.0f} MiB",
            file=sys.stderr,
        )
        return 1
    print(f"OK: no retrace after call 1 and RSS growth within {args.tolerance:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
