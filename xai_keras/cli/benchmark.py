"""`xai-keras benchmark`: faithfulness, localisation, sanity, shortcut and cost of the methods."""

from __future__ import annotations

import argparse
from pathlib import Path

from xai_keras.cli._common import count, method_list, print_result


def add_parser(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="faithfulness, localisation, sanity, shortcut, cost",
        description="Train (or load cached) models per dataset, explain test images with every "
        "method and score the maps. --quick trains two small shapes models and scores 32 "
        "images with cheap settings for every sampling method; the full run takes far longer "
        "(about an hour, estimated). Models are cached in --cache, so a second run skips the "
        "training.",
    )
    p.add_argument(
        "--datasets",
        help="comma-separated: shapes (adds shapes_shortcut), digits, lfw_faces "
        "(default: all three; shapes with --quick)",
    )
    p.add_argument("--methods", default="all", help="comma-separated methods, or 'all'")
    p.add_argument(
        "--n", type=count(1), help="test images per dataset (default 200; 32 with --quick)"
    )
    p.add_argument("--out", default="reports/bench", help="where results and figures go")
    p.add_argument("--cache", default="logs/bench_models", help="trained models are kept here")
    p.add_argument(
        "--quick",
        action="store_true",
        help="shapes only, small models, 32 images, cheaper settings for every sampling "
        "method, ROAD at 3 percentiles, sanity maps at the first and last layer only (6.7 "
        "CPU-minutes; 12.8 minutes on 2 cores shared with other work, load 5-25)",
    )
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--sag", type=count(0), help="images per dataset for SAG (0 to skip)")
    p.add_argument("--no-sanity", action="store_true", help="skip the randomisation checks")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xai_keras.errors import InputError
    from xai_keras.evaluate.benchmark import run_benchmark
    from xai_keras.io import ensure_writable_dir

    names = None if args.methods == "all" else method_list(args.methods)
    from xai_keras.evaluate.benchmark import QUICK_DATASETS

    given = args.datasets or (",".join(QUICK_DATASETS) if args.quick else "shapes,digits,lfw_faces")
    datasets = [d.strip() for d in given.split(",") if d.strip()]
    n = args.n if args.n is not None else (32 if args.quick else 200)
    ensure_writable_dir(args.out, "--out folder")  # before training and explaining, not after
    ensure_writable_dir(args.cache, "--cache folder")
    try:
        results = run_benchmark(
            datasets,
            names,
            n=n,
            out=args.out,
            quick=args.quick,
            seed=args.seed,
            cache=args.cache,
            n_sanity=0 if args.no_sanity else (2 if args.quick else 8),
            n_sag=args.sag if args.sag is not None else (1 if args.quick else 4),
        )
    except OSError as err:
        failed = f" {err.filename}" if err.filename else ""
        raise InputError(
            f"Writing{failed} failed ({err.strerror or err}); what was written is in {args.out} "
            f"and {args.cache}, the rest was not. Free some space, then run again."
        ) from err
    out = Path(args.out)
    print_result(args, (out / "results.md").read_text())
    print_result(args, f"results: {out / 'results.json'}, {out / 'results.md'}; figures in {out}")
    return 0 if results["datasets"] else 1
