"""`xai-keras sag`: the structured attention graph of one image."""

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
    model_form,
    note_printer,
    number,
    print_result,
    value_range_of,
    write_error,
)
from xai_keras.cli._images import image_files, read_images


def _grid(text: str) -> tuple[int, int]:
    """`--grid 7x7` (or `7` for a square) as (rows, cols), each >= 1."""
    rows, _, cols = text.lower().partition("x")
    try:
        grid = int(rows), int(cols or rows)
    except ValueError:
        grid = (0, 0)
    if min(grid) < 1:
        raise argparse.ArgumentTypeError(f"grid must look like 7x7 (each >= 1), got {text!r}")
    return grid


def _candidates(text: str) -> int | None:
    """`--candidates N` (>= 1) or `all` (None: an exhaustive search)."""
    if text.lower() == "all":
        return None
    try:
        return count(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"candidates must be a number >= 1 or 'all', got {text!r}"
        ) from None


def add_parser(sub) -> None:
    p = sub.add_parser("sag", help="structured attention graph of one image")
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--image", required=True, help="the image file")
    p.add_argument("--out", default="sag.png", help="picture to write (a .json goes beside it)")
    p.add_argument("--target", type=count(0), help="class to explain (default: top class)")
    p.add_argument("--grid", type=_grid, default=(7, 7), help="patch grid, e.g. 7x7")
    p.add_argument("--threshold", type=number(0, 10, low_open=True), default=0.9)
    p.add_argument("--absolute", action="store_true", help="threshold on the probability itself")
    p.add_argument("--beam-width", type=count(1), default=5)
    p.add_argument("--max-roots", type=count(1), default=3)
    p.add_argument(
        "--candidates",
        type=_candidates,
        default=10,
        help="best-ranked patches that extend each beam set (default 10); 'all' searches "
        "every extension (about 4x the masked passes)",
    )
    p.add_argument(
        "--baseline",
        default="auto",
        choices=["auto", "blur", "blur_strong", "mean", "black"],
        help="what hidden patches show (auto: the first of blur, blur_strong, mean, black that "
        "removes the class; black is the minimum of the model's value range)",
    )
    p.add_argument("--classes", help=CLASSES_HELP)
    p.add_argument("--logdir", help="also log the picture to TensorBoard here")
    add_form_flags(p)
    add_model_flags(p, pixels=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xai_keras import sag
    from xai_keras.io import ensure_writable_dir
    from xai_keras.tensorboard import log_sag

    picture, beside = Path(args.out), Path(args.out).with_suffix(".json")
    ensure_writable_dir(picture.parent, "folder of --out")  # before the search, not after
    if args.logdir:
        ensure_writable_dir(args.logdir, "--logdir folder")
    model = load_model(args.model, args.unsafe)
    form = model_form(args)
    class_names = class_names_for(args, model, **form)
    shape = tuple(model.inputs[0].shape[1:])
    value_range = value_range_of(args, model)
    fit = args.fit or "stretch"
    files = image_files([args.image])
    image = read_images(files, shape, value_range, args.size, fit, note_printer(args))[0]
    graph = sag(
        model,
        image,
        target=args.target,
        grid=args.grid,
        threshold=args.threshold,
        relative=not args.absolute,
        beam_width=args.beam_width,
        max_roots=args.max_roots,
        candidates=args.candidates,
        baseline=args.baseline,
        class_names=class_names,
        value_range=value_range,
        **form,
    )
    written: list[Path] = []
    try:
        path = graph.save(picture)
        written.append(path)
        written.append(graph.to_json(beside))
        if args.logdir:
            log_sag(args.logdir, graph)
    except OSError as err:
        raise write_error(err, written, 2, picture.parent) from err
    if graph.message:
        print_result(args, graph.message)
    for root in graph.roots:
        print_result(args, f"root {list(root)}: confidence {graph.confidence(root):.3f}")
    print_result(args, f"{graph.n_forward} masked forward passes; wrote {path} (and .json)")
    return 0
