"""`xai-keras visualize`: what units respond to: maximisation, maps, filters."""

from __future__ import annotations

import argparse

from xai_keras.cli._common import (
    add_model_flags,
    count,
    load_model,
    note_printer,
    print_result,
    value_range_of,
)
from xai_keras.cli._images import image_files, read_images


def add_parser(sub) -> None:
    p = sub.add_parser("visualize", help="what units respond to: maximisation, maps, filters")
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--layer", required=True, help="layer name or nested path (or 'logits')")
    p.add_argument("--units", default="0-7", help="units/channels, e.g. 0-15, 0,3,7 or all")
    p.add_argument("--out", default="viz", help="output directory for the PNGs")
    p.add_argument("--steps", type=count(1), default=256, help="gradient-ascent steps")
    p.add_argument("--k", type=count(1), default=9, help="top-activating examples per unit")
    p.add_argument("--images", nargs="+", help="image files/folders for top examples and maps")
    p.add_argument(
        "--dataset",
        choices=["shapes", "none"],
        default="none",
        help="generate shapes images for top examples (when no --images)",
    )
    p.add_argument(
        "--n", type=count(1), default=1000, help="images generated with --dataset shapes"
    )
    p.add_argument("--logdir", help="also log the pictures to TensorBoard here")
    p.add_argument("--seed", type=count(0), default=0)
    add_model_flags(p, pixels=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import tensorflow as tf

    from xai_keras.features import visualize_units

    model = load_model(args.model, args.unsafe)
    shape = tuple(model.inputs[0].shape[1:])
    images = None
    if args.images:
        images = read_images(
            image_files(args.images),
            shape,
            value_range_of(args, model),
            args.size,
            args.fit or "stretch",
            note_printer(args),
        )
    elif args.dataset == "shapes":
        from xai_keras.data import generate_shapes

        images = generate_shapes(args.n, shape[0], seed=args.seed, channels=shape[-1]).images
    dataset = None
    if images is not None:
        dataset = tf.data.Dataset.from_tensor_slices(np.asarray(images, np.float32)).batch(64)
    written = visualize_units(
        model,
        args.layer,
        args.units,
        args.out,
        steps=args.steps,
        dataset=dataset,
        k=args.k,
        log_dir=args.logdir,
        progress=not args.quiet,
        seed=args.seed,
    )
    for name, path in written.items():
        print_result(args, f"{name}: {path}")
    return 0
