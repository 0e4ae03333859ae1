"""`xai-keras explain`: explain image files with one or more methods."""

from __future__ import annotations

import argparse
from pathlib import Path

from xai_keras.cli._common import (
    APPLICATIONS,
    CLASSES_HELP,
    add_form_flags,
    add_model_flags,
    class_names_for,
    count,
    load_application,
    load_model,
    mark_random_weights,
    method_list,
    model_form,
    note_printer,
    print_result,
    value_range_of,
    write_error,
)
from xai_keras.cli._images import image_files, output_stems, read_images


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="explain images with one or more methods")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument(
        "--model", required=True, help=f"a saved .keras model, or one of {', '.join(APPLICATIONS)}"
    )
    p.add_argument(
        "--weights",
        help="for a keras.applications name: a local weights file, 'imagenet' (downloads; "
        "online only) or 'none'; default: random weights (pictures are marked so)",
    )
    p.add_argument(
        "--method",
        help="method(s), comma-separated, or 'all'; default: gradcam (chefer for a vision "
        "transformer)",
    )
    p.add_argument("--layer", help="layer for CAM methods (default: last spatial layer)")
    p.add_argument("--target", type=count(0), help="class to explain (default: top class)")
    add_form_flags(p)
    p.add_argument("--classes", help=CLASSES_HELP)
    p.add_argument("--out", default="explanations", help="output directory for PNGs")
    p.add_argument("--batch-size", type=count(1), default=32)
    add_model_flags(p, pixels=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from xai_keras import explain
    from xai_keras.explainers import contact_sheet
    from xai_keras.explainers.ranges import resolve_value_range
    from xai_keras.io import ensure_writable_dir, save_figure

    application = args.model.lower() in APPLICATIONS
    random_weights = application and args.weights in (None, "none", "None")
    if application:  # these take 0-255 pixels and preprocess them
        model, preprocess = load_application(args.model, args.weights)
        value_range = resolve_value_range("pixels")
    else:
        model, preprocess = load_model(args.model, args.unsafe), None
        value_range = value_range_of(args, model)
    # ImageNet models are evaluated on centre crops; a model trained on a folder saw its images
    # stretched (keras.utils.image_dataset_from_directory's default).
    fit = args.fit or ("crop" if application else "stretch")
    mark = mark_random_weights if random_weights else (lambda fig: fig)
    out = ensure_writable_dir(args.out)
    form = model_form(args)
    class_names = class_names_for(args, model, **form)
    files = image_files(args.images)
    shape = tuple(model.inputs[0].shape[1:])
    images = read_images(files, shape, value_range, args.size, fit, note_printer(args))
    if preprocess is not None:
        images = preprocess(images)
    stems = output_stems(files)
    explanations = explain(  # gradient CAMs of one layer share one pass
        model,
        images,
        method=method_list(args.method, model, args.layer),
        layer=args.layer,
        targets=args.target,
        batch_size=args.batch_size,
        class_names=class_names,
        value_range=None if preprocess is not None else value_range,
        **form,
    )
    sheet = len(explanations) > 1 or len(files) > 1
    total = len(files) * len(explanations) + sheet
    written: list[Path] = []
    try:
        for exp in tqdm(explanations, desc="writing", disable=args.quiet):
            for i, stem in enumerate(stems):
                written.append(save_figure(mark(exp[i].plot()), out / f"{stem}_{exp.method}.png"))
        if sheet:
            sheet_fig = mark(contact_sheet(explanations))
            written.append(save_figure(sheet_fig, out / "contact_sheet.png"))
    except OSError as err:
        raise write_error(err, written, total, out) from err
    for i, f in enumerate(files):
        print_result(args, f"{f}: {explanations[0].label(i)}")
    if sheet:
        print_result(args, f"contact sheet: {written[-1]}")
    print_result(args, f"wrote {len(files) * len(explanations)} PNGs to {out}")
    return 0
