"""`xai-keras analyze`: information about the generative factors, layer by layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from xai_keras.cli._common import add_model_flags, count, load_model, print_result


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="information about generative factors, layer by layer")
    p.add_argument("--model", required=True, help="a saved .keras model trained on shapes")
    p.add_argument("--dataset", default="shapes", help="factor-controlled data (only 'shapes')")
    p.add_argument("--out", default="reports/analysis", help="report, JSON and figures go here")
    p.add_argument(
        "--config", help="the run's config (default: config.yaml beside the model, if any)"
    )
    p.add_argument("--n", type=count(1), default=2000, help="generated images to analyse")
    p.add_argument("--layers", help="comma-separated layers (default: each block and dense)")
    p.add_argument(
        "--cells", type=count(0), default=4, help="also pool units on an NxN grid (0: skip)"
    )
    p.add_argument(
        "--sensitivity",
        type=count(0),
        default=300,
        help="base images for one-factor changes (0: skip)",
    )
    p.add_argument("--logdir", help="also write figures and report to TensorBoard here")
    p.add_argument("--seed", type=count(0), default=1234)
    add_model_flags(p)
    p.set_defaults(func=run)


def _run_config(model_path: str, config: str | None):
    """The run's data settings: `--config`, else the config.yaml `train` wrote beside the model."""
    from xai_keras.config import load_config

    if config is None:
        beside = Path(model_path).resolve().parent / "config.yaml"
        config = str(beside) if beside.is_file() else None
    return load_config(config).data


def run(args: argparse.Namespace) -> int:
    from xai_keras.analysis import analyze
    from xai_keras.errors import InputError

    if args.dataset != "shapes":
        raise InputError(
            f"--dataset {args.dataset!r}: layer analysis needs images whose generative factors "
            "are known; the only such dataset is 'shapes'."
        )
    model = load_model(args.model, args.unsafe)
    report = analyze(
        model,
        args.out,
        n=args.n,
        layers=[x.strip() for x in args.layers.split(",")] if args.layers else None,
        cells=args.cells or None,
        data=_run_config(args.model, args.config),
        sensitivity_samples=args.sensitivity,
        log_dir=args.logdir,
        seed=args.seed,
        progress=not args.quiet,
    )
    for line in report.findings:
        print_result(args, "-", line.replace("**", ""))
    print_result(args, f"analysis took {report.seconds:.1f} s; report: {report.files['markdown']}")
    return 0
