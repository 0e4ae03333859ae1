"""`xai-keras explain-dataset`: explain a whole image folder or .npy, streamed and resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from xai_keras.cli._common import (
    CLASSES_HELP,
    add_form_flags,
    add_model_flags,
    class_names_for,
    count,
    load_model,
    metric_list,
    model_form,
    print_result,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "explain-dataset", help="explain a whole image folder or .npy, streamed and resumable"
    )
    p.add_argument("data", help="an image folder (sub-folders = classes) or a .npy array")
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--out", required=True, help="folder for shards, index and summary")
    p.add_argument(
        "--method", help="any method but sag; default: gradcam (chefer for a vision transformer)"
    )
    p.add_argument("--targets", help="'label' (folder classes) or a class index; default: top")
    p.add_argument("--layer", help="layer for CAM methods (default: last spatial layer)")
    p.add_argument("--batch-size", type=count(1), default=64, help="global batch")
    p.add_argument("--shard-size", type=count(1), default=1024, help="maps per shard file")
    p.add_argument("--resume", action="store_true", help="skip the shards already written")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run in --out (only files with the names a run writes)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable image files (listed in index.jsonl and the summary); "
        "default: stop, naming the file",
    )
    p.add_argument(
        "--metrics",
        help="comma-separated per-image metrics of the metric registry that need only the "
        "model, e.g. deletion,insertion (slow); an unknown name lists them",
    )
    p.add_argument("--classes", help=CLASSES_HELP)
    p.add_argument("--logdir", help="also write the summary to TensorBoard here")
    p.add_argument(
        "--mirrored", action="store_true", help="tf.distribute.MirroredStrategy over local GPUs"
    )
    add_form_flags(p)
    add_model_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from xai_keras.errors import InputError
    from xai_keras.scale import explain_dataset

    # Before the model loads: a misspelt metric is one line listing the registry's choices.
    metrics = metric_list(args.metrics, needs=("model",), per_image=True) if args.metrics else ()
    model = load_model(args.model, args.unsafe)
    data: object = args.data
    if args.data.endswith(".npy"):
        if not Path(args.data).is_file():
            raise InputError(f"Images file not found: {args.data}. Pass a folder or a .npy file.")
        try:
            data = np.load(args.data, mmap_mode="r")  # no pickles: allow_pickle stays False
        except (ValueError, OSError, EOFError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"Cannot read {args.data} as a .npy array of images ({reason}). Save a numeric "
                "(N, H, W, C) array with numpy.save, or pass an image folder."
            ) from None
        if data.dtype == object or not np.issubdtype(data.dtype, np.number):
            raise InputError(
                f"{args.data} holds a {data.dtype} array; explain-dataset needs a numeric "
                "(N, H, W, C) array of images (numpy.save(path, images.astype('float32')))."
            )
    strategy = None
    if args.mirrored:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    targets = args.targets
    if targets not in (None, "label"):
        try:
            targets = int(targets)
        except ValueError:
            raise InputError(
                f"--targets must be 'label' or a class index, got {targets!r}."
            ) from None
    result = explain_dataset(
        model,
        data,
        args.method,
        out=args.out,
        targets=targets,
        layer=args.layer,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        strategy=strategy,
        resume=args.resume,
        overwrite=args.overwrite,
        skip_bad=args.skip_bad,
        metrics=metrics,
        class_names=class_names_for(args, model, **model_form(args)),
        **model_form(args),
        log_dir=args.logdir,
        progress=not args.quiet,
    )
    summary = result.summary()
    flagged = ", ".join(map(str, summary.get("flagged_classes", []))) or "none"
    print_result(
        args, f"{len(result)} maps in {args.out}; summary: {Path(args.out) / 'summary.md'}"
    )
    print_result(args, f"classes whose maps peak at the border (possible shortcut): {flagged}")
    return 0
