"""`xai-keras train`: train the CNN from a config, report, explain a few test images."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from xai_keras.cli._common import LOCALHOST_URL, count, method_list, print_result


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train the CNN from a config, report, explain samples")
    p.add_argument(
        "--config",
        help="a YAML/JSON config file, or a built-in config's name: shapes (the default run), "
        "shapes_shortcut (a planted marker); default: shapes' settings, out_dir logs/run",
    )
    p.add_argument("--out", help="output directory (model, report, TensorBoard logs)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.epochs=3 (repeatable)",
    )
    p.add_argument("--epochs", type=count(1), help="shortcut for --set training.epochs=N")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--explain",
        type=count(0),
        default=6,
        metavar="N",
        help="explain N test images with every method afterwards (0: skip)",
    )
    p.add_argument("--methods", help="comma-separated methods for --explain (default: all)")
    p.add_argument("--tensorboard", action="store_true", help="launch TensorBoard at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xai_keras.config import load_config

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"out_dir={args.out}")
    if args.epochs is not None:
        overrides.append(f"training.epochs={args.epochs}")
    config = load_config(args.config, overrides)

    from xai_keras.training import tensorboard_command, train

    # Live progress bars on a terminal; one line per epoch in logs and CI.
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    result = train(config, resume=args.resume, verbose=verbose)
    print_result(args, f"\ntest accuracy: {result.report['accuracy']:.4f}")
    sheet = None
    if args.explain > 0 and result.splits.test_arrays is not None:
        sheet = _explain_samples(result, args.explain, args.methods)
    print_result(args, "\nOutputs:")
    print_result(args, f"  model        {result.model_path}")
    print_result(args, f"  report       {result.out_dir / 'report.md'}  (and report.json)")
    if sheet is not None:
        print_result(args, f"  explanations {sheet}")
    print_result(args, f"  TensorBoard  {result.log_dir}")
    print_result(
        args, f"\nOpen TensorBoard:\n  {tensorboard_command(result.log_dir)}\n  {LOCALHOST_URL}"
    )
    if args.tensorboard:
        from xai_keras.cli.tensorboard import launch

        return launch(result.log_dir, quiet_logs=not args.debug)
    return 0


def _explain_samples(result, count: int, method_names: str | None) -> Path:
    """Explain a few test images with every method: a contact sheet PNG + TensorBoard."""
    from tqdm import tqdm

    from xai_keras import explain, methods
    from xai_keras.explainers import contact_sheet
    from xai_keras.io import save_figure
    from xai_keras.tensorboard import log_explanations

    images = result.splits.test_arrays.images[:count]
    names = method_list(method_names) if method_names else methods(model=result.model)
    with warnings.catch_warnings(record=True) as caught:
        # "xgradcam equals gradcam at layer ...": by construction on a GAP head (README);
        # said once below rather than as one warning, with source lines, per method.
        warnings.filterwarnings("always", message=r".* equals gradcam")
        explanations = [
            explain(result.model, images, method=name, class_names=result.splits.class_names)
            for name in tqdm(names, desc="explaining", unit="method", leave=False)
        ]
    same = [str(w.message).split(" equals gradcam")[0] for w in caught]
    for w in caught:
        if " equals gradcam" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    same = [name for name in same if name in names]
    if same:
        print(
            f"note: {', '.join(same)} coincide with gradcam (or with gradcam without negative "
            "weights) at the last conv layer of a GAP head, by construction (README: 'Where a "
            "layer feeds global average pooling').",
            file=sys.stderr,
        )
    labels = result.splits.test_arrays.labels[:count]
    sheet = contact_sheet(explanations, labels=labels)
    path = save_figure(sheet, result.out_dir / "explanations.png")
    log_explanations(result.log_dir / "explain", explanations)
    return path
