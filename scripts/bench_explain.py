"""Benchmark xai_keras' explanation methods against a plain compiled forward pass.

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.bench_explain                  # full run, ~3-5 min on 2 cores
    .venv/bin/python -m scripts.bench_explain --quick          # fewer rounds, smaller runs
    .venv/bin/python -m scripts.bench_explain --json bench.json
    .venv/bin/python -m scripts.bench_explain --help           # models, sizes, repeats

Targets (from the issue), measured side by side in one run and reported as ratios:

1. Grad-CAM on ResNet50 (`weights=None`, 224x224, batch 16, CPU): the full user-facing call
   `explain(model, x, method="gradcam", batch_size=16)` costs at most 1.3x a plain compiled
   forward pass `tf.function(lambda x: model(x, training=False))` of the same batch.
2. The same call is at least 3x faster than tf-keras-vis' `Gradcam` (`ReplaceToLinear` model
   modifier, `CategoricalScore`, `penultimate_layer="conv5_block3_out"`); the tf-keras-vis
   object is built once, outside the timing, so its model clone is not counted.
3. Score-CAM's masked forward passes run at >= 0.8x the plain forward throughput: the full
   `explain(..., method="scorecam", max_channels=K)` call on N images does K*N masked passes,
   so its throughput is K*N / time (the one gradient pass it also makes is counted against
   it), compared with that of plain forward passes over as many images in batches of
   B = `batch_size` images, the size of its masked chunks. By default ResNet50 with
   `max_channels=64` and N=2 (scoring all 2048 channels would take minutes per image on 2
   cores). The same kernel with one `ScoreCam` instance reused is shown for reference.

For information (no target), the Grad-CAM table also times xplique's `GradCAM` (built once, its
model's softmax made linear around each call, as xplique's documentation asks), and `--jit`
adds an XLA row, `tf.function(model(x), jit_compile=True)`, to the tables that time a plain
forward pass, and passes `jit_compile=True` to `explain()` once the engine accepts it.

A third table lists every registered method (`xai_keras.methods()`) on a smaller model (the
project's CNN by default): ms per image of the full `explain()` call and its ratio to one plain
forward pass of the same batch.

How it measures: every function is called `--warmup` times first (the first call traces and
compiles), then all functions of a table are timed in interleaved rounds (A, B, C, A, B, C, ...,
the starting function rotating each round) so that machine noise hits them alike. Times are the
median of `--repeats` rounds; ratios are the median of the per-round ratios (both calls of a
round saw the same load). Each timed call pulls its result back to numpy. The share of the CPUs
that other processes used during each table is printed, as shared machines make timings noisy.

The exit code is 0 whether the targets pass or not (a PASS/FAIL line is printed for each);
`--strict` makes a failed target exit with 1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import xai_keras
from scripts.common import (
    cpu_snapshot,
    format_table,
    log,
    measure,
    median,
    others_share,
    paired_ratio,
    spread,
    verdict,
)
from xai_keras import explain
from xai_keras.config import ModelConfig
from xai_keras.errors import XaiKerasError
from xai_keras.explainers import get_method
from xai_keras.explainers.session import Session
from xai_keras.models import build_cnn

GRADCAM_MAX_VS_FORWARD = 1.3
GRADCAM_MIN_SPEEDUP_VS_TKV = 3.0
SCORECAM_MIN_THROUGHPUT = 0.8
RESNET_LAYER = "conv5_block3_out"
# --light-methods: the sampling methods with few samples, so the all-methods table is quick
LIGHT_OPTIONS = {
    "scorecam": {"max_channels": 16},
    "smoothgrad": {"samples": 4},
    "integrated_gradients": {"steps": 8},
    "occlusion": {"patch": 16, "stride": 16},
    "rise": {"masks": 64},
    "lime": {"samples": 64},
    "kernelshap": {"samples": 64},
}
BUSY_MACHINE = 0.1  # share of the CPUs used by other processes above which a note is printed

PLAIN = "forward: tf.function(model(x))"
RUNNER = "forward: runner.forward_fn"
GRADCAM = "xai_keras explain(gradcam)"
TKV = "tf-keras-vis Gradcam"
XPLIQUE = "xplique GradCAM"
XLA = "forward: tf.function(jit_compile=True)"
SCORECAM = "xai_keras explain(scorecam)"
REUSED = "ScoreCam.attribute, one instance reused"


# -- models and inputs -------------------------------------------------------------------------
def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.uniform(0.0, 1.0, (n, size, size, 3)).astype(np.float32)


def _small_model(kind: str, size: int) -> keras.Model:
    if kind == "cnn":
        return build_cnn(ModelConfig(), (size, size, 3), 5)
    return keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3))


def _plain_forward(model: keras.Model, jit: bool = False) -> Callable[[tf.Tensor], tf.Tensor]:
    """The reference: one compiled forward pass (`jit`: compiled by XLA)."""
    return tf.function(lambda x: model(x, training=False), jit_compile=jit or None)


def jit_options(jit: bool) -> dict[str, Any]:
    """`{"jit_compile": True}` when `jit` is asked for and `explain()` accepts it, else {}."""
    if jit and "jit_compile" in inspect.signature(explain).parameters:
        return {"jit_compile": True}
    if jit:
        log("  explain() has no jit_compile option yet: its rows run without XLA.")
    return {}


def _top_classes(forward: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> np.ndarray:
    return np.argmax(forward(x).numpy(), axis=-1).astype(np.int32)


# -- 1. Grad-CAM on ResNet50 vs forward vs tf-keras-vis ----------------------------------------
def _tkv_gradcam(model: keras.Model, x: np.ndarray, targets: np.ndarray) -> Callable | None:
    """tf-keras-vis' Grad-CAM as its README shows it, or None when it is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from tf_keras_vis.gradcam import Gradcam
            from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
            from tf_keras_vis.utils.scores import CategoricalScore
    except ImportError as err:
        log(f"  tf-keras-vis is not importable ({err}); its comparison is skipped.")
        return None
    gradcam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
    score = CategoricalScore(targets.tolist())
    return lambda: gradcam(score, x, penultimate_layer=RESNET_LAYER)


def _xplique_gradcam(
    model: keras.Model, x: np.ndarray, targets: np.ndarray, batch: int
) -> Callable | None:
    """xplique's Grad-CAM at the same layer, or None when it is not installed. Its model's
    final softmax is made linear around each call, as xplique's documentation asks."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from xplique.attributions import GradCAM
    except ImportError as err:
        log(f"  xplique is not importable ({err}); its comparison is skipped.")
        return None
    explainer = GradCAM(model, conv_layer=RESNET_LAYER, batch_size=batch)
    head, one_hot = model.layers[-1], np.eye(int(model.output.shape[-1]), dtype=np.float32)
    one_hot = one_hot[targets]

    def call() -> Any:
        saved, head.activation = head.activation, keras.activations.linear
        try:
            return explainer.explain(x, one_hot)
        finally:
            head.activation = saved

    return call


def bench_gradcam(args: argparse.Namespace, rng: np.random.Generator) -> dict:
    log(f"ResNet50 Grad-CAM: batch {args.batch}, {args.size}x{args.size}")
    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    x_np = _images(rng, args.batch, args.size)
    x = tf.constant(x_np)
    plain = _plain_forward(model)
    targets = _top_classes(plain, x)
    method = get_method("gradcam").create(model, RESNET_LAYER)
    runner, t = method.runner, tf.constant(targets)
    jit = jit_options(args.jit)

    def kernel() -> tf.Tensor:
        a, g, _, tt = runner.layer_grads_fn(x, t)
        return method.combine(a, g, tt)

    fns: dict[str, Callable[[], Any]] = {
        PLAIN: lambda: plain(x),
        RUNNER: lambda: runner.forward_fn(x),
        GRADCAM: lambda: explain(
            model,
            x_np,
            method="gradcam",
            targets=targets,
            layer=RESNET_LAYER,
            batch_size=args.batch,
            **jit,
        ),
        "xai_keras kernel: layer_grads_fn + combine": kernel,
    }
    if args.jit:
        xla = _plain_forward(model, jit=True)
        fns[XLA] = lambda: xla(x)
    if not args.skip_tkv:
        tkv = _tkv_gradcam(model, x_np, targets)
        if tkv is not None:
            fns[TKV] = tkv
    if not args.skip_xplique:
        xplique = _xplique_gradcam(model, x_np, targets, args.batch)
        if xplique is not None:
            fns[XPLIQUE] = xplique
    times = measure(fns, args.repeats, args.warmup, "gradcam").wall
    medians = {name: median(s) for name, s in times.items()}
    ratios = {name: paired_ratio(s, times[PLAIN]) for name, s in times.items()}
    rows = [
        [
            name,
            f"{1e3 * m:.1f}",
            f"{1e3 * m / args.batch:.2f}",
            f"{ratios[name]:.2f}x",
            spread(times[name]),
        ]
        for name, m in medians.items()
    ]
    ratio = ratios[GRADCAM]
    speedup = paired_ratio(times[TKV], times[GRADCAM]) if TKV in times else None
    vs_xplique = paired_ratio(times[XPLIQUE], times[GRADCAM]) if XPLIQUE in times else None
    table = format_table(["function", "median ms", "ms/image", "x plain fwd", "min/max"], rows)
    return {
        "model": "ResNet50",
        "batch": args.batch,
        "size": args.size,
        "layer": RESNET_LAYER,
        "seconds": times,
        "median_s": medians,
        "ratio_vs_forward": ratios,
        "explain_vs_forward": ratio,
        "speedup_vs_tkv": speedup,
        "speedup_vs_xplique": vs_xplique,
        "xla_vs_forward": ratios.get(XLA),
        "table": table,
        "checks": {
            "gradcam_vs_forward": ratio <= GRADCAM_MAX_VS_FORWARD,
            "gradcam_vs_tkv": None if speedup is None else speedup >= GRADCAM_MIN_SPEEDUP_VS_TKV,
        },
    }


# -- 2. Score-CAM throughput of the masked passes ----------------------------------------------
def bench_scorecam(args: argparse.Namespace, rng: np.random.Generator) -> dict:
    if args.scorecam_model == "resnet50":
        model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
        size, layer, name = args.size, RESNET_LAYER, "ResNet50"
    else:
        model = _small_model(args.small_model, args.small_size)
        size, layer, name = args.small_size, None, args.small_model
    n, batch = args.scorecam_images, args.batch
    session = Session(model, batch_size=batch)
    method = get_method("scorecam").create(session, layer, max_channels=args.max_channels or None)
    channels = int(method.layer.output.shape[-1])
    masked = n * min(channels, args.max_channels or channels)
    # The reference runs about as many images as Score-CAM masks, in batches of the same size,
    # so both calls of a round last about as long and see the same machine load.
    batches = -(-masked // batch)
    log(f"Score-CAM on {name}: {masked} masked passes; reference: {batches} batches of {batch}")
    x_np = _images(rng, n, size)
    x_fwd = tf.constant(_images(rng, batch, size))
    plain = _plain_forward(model)
    t = tf.constant(_top_classes(plain, tf.constant(x_np)))
    options = {"max_channels": args.max_channels or None, **jit_options(args.jit)}

    def forward_batches() -> np.ndarray:
        for _ in range(batches):
            out = plain(x_fwd).numpy()
        return out

    fns: dict[str, Callable[[], Any]] = {
        PLAIN: forward_batches,
        SCORECAM: lambda: explain(
            model, x_np, method="scorecam", layer=layer, batch_size=batch, **options
        ),
        REUSED: lambda: method.attribute(tf.constant(x_np), t).raw,
    }
    times = measure(fns, args.repeats, args.warmup, "scorecam").wall
    medians = {key: median(s) for key, s in times.items()}
    images = {PLAIN: batches * batch, SCORECAM: masked, REUSED: masked}
    # (images / t) / (forward images / t_forward), paired per round like every other ratio
    throughput = {
        key: images[key] / images[PLAIN] / paired_ratio(times[key], times[PLAIN]) for key in fns
    }
    rows = [
        [
            key,
            images[key],
            f"{1e3 * medians[key]:.1f}",
            f"{images[key] / medians[key]:.1f}",
            f"{throughput[key]:.2f}x",
            spread(times[key]),
        ]
        for key in fns
    ]
    headers = ["function", "images", "median ms", "images/s", "x plain fwd", "min/max"]
    return {
        "model": name,
        "size": size,
        "layer": method.layer_path,
        "images": n,
        "channels": channels,
        "max_channels": args.max_channels,
        "masked_passes": masked,
        "chunk": batch,
        "forward_batches": batches,
        "seconds": times,
        "median_s": medians,
        "throughput_vs_forward": throughput,
        "table": format_table(headers, rows),
        "checks": {"scorecam_throughput": throughput[SCORECAM] >= SCORECAM_MIN_THROUGHPUT},
    }


# -- 3. every registered method on a small model ----------------------------------------------
def bench_methods(args: argparse.Namespace, rng: np.random.Generator) -> dict:
    size, batch = args.small_size, args.small_batch
    model = _small_model(args.small_model, size)
    log(f"All methods on {args.small_model} ({size}x{size}), batch {batch}")
    x_np = _images(rng, batch, size)
    x = tf.constant(x_np)
    plain = _plain_forward(model)
    runner = get_method("saliency").create(model).runner
    per_method = {"scorecam": {"max_channels": args.small_max_channels}}
    if args.light_methods:
        per_method.update(LIGHT_OPTIONS)
    jit = jit_options(args.jit)
    fns: dict[str, Callable[[], Any]] = {
        PLAIN: lambda: plain(x),
        RUNNER: lambda: runner.forward_fn(x),
    }
    if args.jit:
        xla = _plain_forward(model, jit=True)
        fns[XLA] = lambda: xla(x)
    errors: dict[str, str] = {}
    for name in xai_keras.methods():
        options = per_method.get(name, {})

        def call(name: str = name, options: dict = options) -> Any:
            return explain(model, x_np, method=name, batch_size=batch, **options, **jit)

        try:  # a method that cannot explain this model is listed with its error
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                call()
        except XaiKerasError as err:  # e.g. CAM on a head without global pooling + dense
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        fns[name] = call
    times = measure(fns, args.repeats, args.warmup, "methods").wall
    medians = {key: median(s) for key, s in times.items()}
    ratios = {key: paired_ratio(s, times[PLAIN]) for key, s in times.items()}
    rows = []
    for key in [PLAIN, RUNNER, *([XLA] if args.jit else []), *xai_keras.methods()]:
        if key in errors:
            rows.append([key, "-", "-", "-", "-", errors[key][:60]])
            continue
        family = get_method(key).family if key in xai_keras.METHODS else "-"
        m = medians[key]
        options = ", ".join(f"{k}={v}" for k, v in per_method.get(key, {}).items())
        rows.append(
            [
                key,
                family,
                f"{1e3 * m / batch:.2f}",
                f"{ratios[key]:.1f}x",
                spread(times[key]),
                options,
            ]
        )
    headers = ["method", "family", "ms/image", "x plain fwd", "min/max", "options"]
    return {
        "model": args.small_model,
        "size": size,
        "batch": batch,
        "seconds": times,
        "median_s": medians,
        "ratio_vs_forward": ratios,
        "errors": errors,
        "options": per_method,
        "table": format_table(headers, rows),
    }


# -- command line ------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark xai_keras explanations against a plain compiled forward pass "
        "and tf-keras-vis (see the module docstring for the targets).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer rounds (3, 1 warm-up), 1 Score-CAM image, 32 channels",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per function")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--batch", type=int, default=16, help="ResNet50 batch (and chunk) size")
    parser.add_argument("--size", type=int, default=224, help="ResNet50 input side")
    parser.add_argument("--skip-tkv", action="store_true", help="skip tf-keras-vis")
    parser.add_argument("--skip-xplique", action="store_true", help="skip xplique")
    parser.add_argument(
        "--jit",
        action="store_true",
        help="add an XLA forward row (jit_compile=True); pass jit_compile=True to explain() "
        "once it accepts it",
    )
    parser.add_argument(
        "--scorecam-model",
        choices=["resnet50", "small"],
        default="resnet50",
        help="model of the Score-CAM throughput test",
    )
    parser.add_argument(
        "--scorecam-images", type=int, default=2, help="images explained in the Score-CAM test"
    )
    parser.add_argument(
        "--max-channels",
        type=int,
        default=64,
        help="Score-CAM max_channels in its throughput test (0: all)",
    )
    parser.add_argument(
        "--small-model",
        choices=["cnn", "mobilenetv2"],
        default="cnn",
        help="model of the all-methods table",
    )
    parser.add_argument(
        "--small-size",
        type=int,
        default=None,
        help="input side of the small model (None: 64 for cnn, 96 for mobilenetv2)",
    )
    parser.add_argument(
        "--small-batch", type=int, default=16, help="batch of the all-methods table"
    )
    parser.add_argument(
        "--small-max-channels",
        type=int,
        default=None,
        help="Score-CAM max_channels in the all-methods table (None: all for cnn, 64 for "
        "mobilenetv2's 1280; 0: all)",
    )
    parser.add_argument(
        "--light-methods",
        action="store_true",
        help="few samples for the sampling methods of the all-methods table (shown in its "
        "options column)",
    )
    parser.add_argument(
        "--sections",
        default="gradcam,scorecam,methods",
        help="comma-separated subset of gradcam, scorecam, methods",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--strict", action="store_true", help="exit with 1 if a target fails")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = min(args.repeats, 3), 1
        args.scorecam_images, args.max_channels = 1, min(args.max_channels or 32, 32)
    cnn = args.small_model == "cnn"
    if args.small_size is None:
        args.small_size = 64 if cnn else 96
    if args.small_max_channels is None and not cnn:
        args.small_max_channels = 64
    args.max_channels = args.max_channels or None
    args.small_max_channels = args.small_max_channels or None
    for flag in ("repeats", "warmup", "batch", "size", "scorecam_images", "small_batch"):
        least = 0 if flag == "warmup" else 1
        if getattr(args, flag) < least:
            parser.error(f"--{flag.replace('_', '-')} must be >= {least}")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - {"gradcam", "scorecam", "methods"}
    if unknown:
        parser.error(f"unknown --sections {sorted(unknown)}")
    return args


def _environment() -> dict:
    try:
        tkv = version("tf-keras-vis")
    except PackageNotFoundError:
        tkv = None
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_keras_vis": tkv,
        "xai_keras": xai_keras.__version__,
        "cpus": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "machine": platform.machine(),
    }


def _load_note(result: dict) -> str:
    share = result.get("other_processes_cpu_share")
    if share is None:
        return ""
    note = f"other processes used {100 * share:.0f}% of the CPUs meanwhile"
    if share > BUSY_MACHINE:
        note += " (busy machine: ratios are paired per round, but rerun on an idle one to confirm)"
    return note


def report(results: dict, args: argparse.Namespace) -> list[tuple[str, bool | None]]:
    """Print the tables; return the (target line, passed) checks."""
    env = results["environment"]
    print(
        f"xai_keras {env['xai_keras']} | TF {env['tensorflow']} | Keras {env['keras']} | "
        f"tf-keras-vis {env['tf_keras_vis']} | {env['cpus']} CPUs, {env['gpus']} GPUs\n"
        f"times: median of {args.repeats} interleaved rounds after {args.warmup} warm-up "
        "call(s); ratios: median of the per-round ratios"
    )
    checks: list[tuple[str, bool | None]] = []
    if "gradcam" in results:
        r = results["gradcam"]
        print(
            f"\n[1] Grad-CAM, ResNet50 (weights=None), batch {r['batch']}, "
            f"{r['size']}x{r['size']}, layer {r['layer']}; {_load_note(r)}"
        )
        print(r["table"])
        if r.get("speedup_vs_xplique") is not None:
            vs_xplique = r["speedup_vs_xplique"]
            print(f"xplique GradCAM / Grad-CAM explain() = {vs_xplique:.2f}x (no target)")
        speedup = r["speedup_vs_tkv"]
        shown = "n/a (tf-keras-vis skipped)" if speedup is None else f"{speedup:.2f}x"
        checks += [
            (
                f"Grad-CAM explain() / plain forward = {r['explain_vs_forward']:.2f}x "
                f"(target <= {GRADCAM_MAX_VS_FORWARD}x)",
                r["checks"]["gradcam_vs_forward"],
            ),
            (
                f"tf-keras-vis Gradcam / Grad-CAM explain() = {shown} "
                f"(target >= {GRADCAM_MIN_SPEEDUP_VS_TKV}x)",
                r["checks"]["gradcam_vs_tkv"],
            ),
        ]
    if "scorecam" in results:
        r = results["scorecam"]
        print(
            f"\n[2] Score-CAM masked-pass throughput, {r['model']} {r['size']}x{r['size']}, "
            f"layer {r['layer']}: {r['images']} image(s) x {r['masked_passes'] // r['images']}"
            f" of {r['channels']} channels (max_channels={r['max_channels']}) = "
            f"{r['masked_passes']} masked passes in chunks of {r['chunk']}; plain forward: "
            f"{r['forward_batches']} batches of {r['chunk']}; {_load_note(r)}"
        )
        print(r["table"])
        ratio = r["throughput_vs_forward"][SCORECAM]
        checks.append(
            (
                f"Score-CAM explain() masked throughput / plain forward = {ratio:.2f}x "
                f"(target >= {SCORECAM_MIN_THROUGHPUT}x)",
                r["checks"]["scorecam_throughput"],
            )
        )
    if "methods" in results:
        r = results["methods"]
        print(
            f"\n[3] Every registered method: explain() on {r['model']} {r['size']}x{r['size']}, "
            f"batch {r['batch']}, ratio to one plain forward pass of the same batch; "
            f"{_load_note(r)}"
        )
        print(r["table"])
    print()
    for text, ok in checks:
        print(f"{verdict(ok)}  {text}")
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    results: dict[str, Any] = {"environment": _environment(), "arguments": vars(args)}
    sections = {"gradcam": bench_gradcam, "scorecam": bench_scorecam, "methods": bench_methods}
    for section in args.sections:
        before = cpu_snapshot()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-zero maps of random nets
            results[section] = sections[section](args, rng)
        results[section]["other_processes_cpu_share"] = others_share(before, cpu_snapshot())
    results["total_seconds"] = time.perf_counter() - started

    checks = report(results, args)
    print(f"\ntotal {results['total_seconds']:.0f}s")
    results["checks"] = [{"target": text, "result": verdict(ok)} for text, ok in checks]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
        print(f"wrote {args.json}")
    failed = any(ok is False for _, ok in checks)
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
