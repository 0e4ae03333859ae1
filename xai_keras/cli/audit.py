"""`xai-keras audit`: which explanation can I trust for my model? One HTML report."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from xai_keras.cli._common import (
    add_form_flags,
    add_model_flags,
    count,
    load_model,
    method_list,
    metric_list,
    model_form,
    parse_class_names,
    print_result,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="rank the methods on your model and images: one HTML report",
        description="Run every method on your images with the metrics that apply (deletion "
        "and insertion against random maps with a Wilcoxon test, Faithfulness Correlation, "
        "IROF, Region Perturbation, ROAD, the randomisation sanity check, sparseness), rank "
        "them, flag classes whose maps peak at one fixed spot, and write one self-contained "
        "HTML report.",
    )
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument(
        "--data",
        required=True,
        help="a .npz with 'images' (N, H, W, C) as the model takes them and optional "
        "'labels' and 'masks', or a .npy array of images",
    )
    p.add_argument("--out", default="audit.html", help="the report (default audit.html)")
    p.add_argument("--methods", help="comma-separated (default: the audit's set)")
    p.add_argument("--metrics", help="comma-separated opt-in metrics (default: the audit's)")
    p.add_argument("--n", type=count(1), default=64, help="images used (default 64)")
    p.add_argument("--n-sanity", type=count(0), default=4, help="images for the sanity check")
    p.add_argument("--batch-size", type=count(1), default=32)
    p.add_argument("--value-range", metavar="LOW,HIGH", help="the model's input range")
    p.add_argument("--classes", help="class names: JSON list, .json file or text file")
    add_form_flags(p)
    add_model_flags(p)
    p.set_defaults(func=run)


def _read(path: str):
    import numpy as np

    from xai_keras.errors import InputError

    if not Path(path).is_file() or not path.endswith((".npz", ".npy")):
        raise InputError(f"--data must be an existing .npz or .npy file. Received: {path}.")
    try:
        if path.endswith(".npy"):
            return np.load(path)
        with np.load(path) as f:
            if "images" not in f:
                raise InputError(f"{path} has no 'images' array (it has: {', '.join(f.files)}).")
            return tuple(f[k] for k in ("images", "labels", "masks") if k in f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, InputError):
            raise
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"--data {path} cannot be read as a NumPy .npz/.npy file ({reason}); save it with "
            "np.savez(path, images=..., labels=..., masks=...) or np.save(path, images)."
        ) from None


def run(args: argparse.Namespace) -> int:
    from xai_keras.evaluate.audit import AUDIT_METHODS, AUDIT_METRICS, audit
    from xai_keras.explainers.ranges import resolve_value_range

    methods = method_list(args.methods) if args.methods else AUDIT_METHODS
    metrics = AUDIT_METRICS
    if args.metrics:
        metrics = metric_list(args.metrics, needs=("model", "method"))
    data = _read(args.data)
    value_range = resolve_value_range(args.value_range)  # "LOW,HIGH" or a name, as elsewhere
    model = load_model(args.model, args.unsafe)
    result = audit(
        model,
        data,
        args.out,
        methods=methods,
        metrics=metrics,
        n=args.n,
        n_sanity=args.n_sanity,
        class_names=parse_class_names(args.classes),
        batch_size=args.batch_size,
        value_range=value_range,
        **model_form(args),
    )
    print_result(args, f"ranking: {', '.join(result.ranking)}")
    for f in result.flags:
        print_result(args, f"possible shortcut: class {f['class']} peaks at {f['spot']} in "
                     f"{f['share']:.0%} of its images")  # fmt: skip
    print_result(args, f"report: {result.path}")
    return 0
