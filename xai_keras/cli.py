"""`xai-keras`: train, explain, analyse and look at the results from the shell.

Errors from bad input are printed as one line (exit code 2) unless `--debug` is given.
Exit codes: 0 success, 1 unexpected failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

_LOCALHOST_URL = "http://localhost:6006/"


def _print(args: argparse.Namespace, *parts: object) -> None:
    if not getattr(args, "quiet", False):
        print(*parts, flush=True)


# -- train --------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
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
    _print(args, f"\ntest accuracy: {result.report['accuracy']:.4f}")
    sheet = None
    if args.explain > 0 and result.splits.test_arrays is not None:
        sheet = _explain_samples(result, args.explain, args.methods)
    _print(args, "\nOutputs:")
    _print(args, f"  model        {result.model_path}")
    _print(args, f"  report       {result.out_dir / 'report.md'}  (and report.json)")
    if sheet is not None:
        _print(args, f"  explanations {sheet}")
    _print(args, f"  TensorBoard  {result.log_dir}")
    _print(
        args, f"\nOpen TensorBoard:\n  {tensorboard_command(result.log_dir)}\n  {_LOCALHOST_URL}"
    )
    if args.tensorboard:
        return _launch_tensorboard(result.log_dir)
    return 0


def _explain_samples(result, count: int, method_names: str | None) -> Path:
    """Explain a few test images with every method: a contact sheet PNG + TensorBoard."""
    from tqdm import tqdm

    from xai_keras import explain, methods
    from xai_keras.explain import contact_sheet
    from xai_keras.io import save_figure
    from xai_keras.tensorboard import log_explanations

    images = result.splits.test_arrays.images[:count]
    names = _method_list(method_names) if method_names else methods()
    explanations = [
        explain(result.model, images, method=name, class_names=result.splits.class_names)
        for name in tqdm(names, desc="explaining", unit="method", leave=False)
    ]
    path = save_figure(contact_sheet(explanations), result.out_dir / "explanations.png")
    log_explanations(result.log_dir / "explain", explanations)
    return path


# -- explain -------------------------------------------------------------------------------------
def _method_list(text: str) -> list[str]:
    from xai_keras import methods
    from xai_keras.explain import get_method

    names = methods() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    return [get_method(n).name for n in names]


# What `explain`, `sag` and `features` read with OpenCV: the suffixes tf.data folders decode
# (`IMAGE_SUFFIXES`), plus WebP and TIFF, which only OpenCV reads.
_OPENCV_ONLY = (".webp", ".tif", ".tiff")


def _image_files(paths: Sequence[str]) -> list[Path]:
    """Image files named directly, or found anywhere under the given folders.

    Hidden files and folders under a given folder are skipped: macOS `._name.png` resource
    forks and `.ipynb_checkpoints` copies are not images of the set.
    """
    from xai_keras.data.folder import IMAGE_SUFFIXES
    from xai_keras.errors import InputError

    suffixes = (*IMAGE_SUFFIXES, *_OPENCV_ONLY)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(
                f
                for f in p.rglob("*")
                if f.suffix.lower() in suffixes
                and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"Image path not found: {p}.")
    if not files:
        raise InputError(f"No images ({'/'.join(suffixes)}) found in: {', '.join(paths)}.")
    return files


def _output_stems(files: list[Path]) -> list[str]:
    """A distinct name per image for its output PNGs: the file stem, or, where stems repeat
    (a/1.png and b/1.png in nested folders), the path below the common folder joined by '_'."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    root = Path(os.path.commonpath([f.resolve().parent for f in files]))
    names = ["_".join(f.resolve().relative_to(root).with_suffix("").parts) for f in files]
    if len(set(names)) < len(names):  # a/1.png next to a/1.jpg
        names = [f"{n}_{f.suffix.lstrip('.').lower()}" for n, f in zip(names, files)]
    return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _to_bgra(img):
    """Any decoded image (gray, BGR or BGRA; 8 or 16 bit) as 8-bit BGRA, opaque without alpha."""
    import cv2
    import numpy as np

    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2BGRA) if img.shape[2] == 3 else img


def _check_complete(f: Path) -> None:
    """Refuse a truncated or corrupt JPEG, which OpenCV decodes with its missing part grey
    (printing only "Premature end of JPEG file"); PIL's decoder raises instead."""
    from PIL import Image

    from xai_keras.errors import InputError

    with open(f, "rb") as fh:
        if fh.read(3) != b"\xff\xd8\xff":  # only JPEGs: OpenCV refuses other broken files
            return
    try:
        with Image.open(f) as img:
            img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(
            f"Image {f} is truncated or corrupt ({err}); re-save it or leave it out."
        ) from None


def _image_size(shape: tuple, size: tuple[int, int] | None) -> tuple[int | None, int | None]:
    """(H, W) the images are resized to: the model's, or `--size` where the model accepts any
    size; None for a side the image keeps."""
    from xai_keras.errors import InputError

    h, w = shape[0], shape[1]
    if size is None:
        return h, w
    if (h is not None and h != size[0]) or (w is not None and w != size[1]):
        raise InputError(
            f"--size {size[0]},{size[1]} does not match the model's input size {h}x{w}; "
            "drop --size (images are resized to the model's size)."
        )
    return size


def _value_range(args: argparse.Namespace):
    """The model's input range from --value-range, --preprocess or --unit/--no-unit."""
    from xai_keras.explain.ranges import resolve_value_range

    given = args.value_range or args.preprocess
    return resolve_value_range(given or ("unit" if args.unit else "pixels"))


def _read_images(files: list[Path], shape: tuple, value_range, size=None):
    """Image files as the model takes them: pixels mapped through the model's value range."""
    import cv2
    import numpy as np

    from xai_keras.errors import InputError

    c = shape[-1]
    h, w = _image_size(shape, size)
    if c not in (1, 3, 4):
        raise InputError(
            f"The model takes {c}-channel images; image files can be read for models with 1 "
            "(grayscale), 3 (RGB) or 4 (RGBA) channels. Pass the images as an array instead."
        )
    flag = {1: cv2.IMREAD_GRAYSCALE, 3: cv2.IMREAD_COLOR, 4: cv2.IMREAD_UNCHANGED}[c]
    images = []
    for f in files:
        _check_complete(f)
        img = cv2.imread(str(f), flag)
        if img is None:
            raise InputError(f"Cannot read image {f} (not an image, or an unsupported format).")
        img = _to_bgra(img) if c == 4 else img
        target = (w or img.shape[1], h or img.shape[0])  # a side the model leaves free: kept
        if (img.shape[1], img.shape[0]) != target:
            img = cv2.resize(img, target, interpolation=cv2.INTER_AREA)
        if c == 1:
            img = img[..., None]
        else:  # BGR(A) -> RGB(A)
            img = img[..., ::-1] if c == 3 else img[..., [2, 1, 0, 3]]
        images.append(value_range.from_pixels(img))
    sizes = {im.shape[:2] for im in images}
    if len(sizes) > 1:
        listed = ", ".join(f"{f} {im.shape[0]}x{im.shape[1]}" for f, im in zip(files, images))
        raise InputError(
            f"The model accepts any image size, but the images differ ({listed[:200]}); pass "
            "--size H,W to resize them all, e.g. --size 224,224."
        )
    return np.stack(images)


_CLASSES_FIX = (
    'pass inline JSON such as \'["cat", "dog"]\', a .json file with a list or a dict '
    '{"0": "cat", "1": "dog"}, or a text file with one name per line'
)


def _class_names(value: str | None) -> list[str] | None:
    """`--classes`: inline JSON (a list, or a dict keyed "0".."n-1"), a .json file holding
    one, or a text file with one name per line."""
    from xai_keras.errors import InputError

    if value is None:
        return None
    inline = value.strip().startswith(("[", "{"))
    if inline:
        text, what = value, "--classes"
    else:
        path = Path(value)
        if not path.is_file():
            raise InputError(f"--classes {value}: no such file; {_CLASSES_FIX}.")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(
                f"--classes {value}: cannot read it ({err}); {_CLASSES_FIX}."
            ) from None
        what = f"--classes {value}"
    if inline or value.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{what}: invalid JSON ({err}); {_CLASSES_FIX}.") from None
        if isinstance(data, dict):
            keys = [str(i) for i in range(len(data))]
            if sorted(data, key=str) != sorted(keys):
                raise InputError(
                    f'{what}: a dict must have the keys "0".."{len(data) - 1}" (one per '
                    f"class index); it has {', '.join(map(repr, list(data)[:8]))}."
                )
            data = [data[k] for k in keys]
        if not isinstance(data, list) or not all(isinstance(n, (str, int)) for n in data):
            raise InputError(f"{what}: expected a list of names; {_CLASSES_FIX}.")
        names = [str(n) for n in data]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"{what}: no class names in it; {_CLASSES_FIX}.")
    return names


def _check_class_count(names: list[str] | None, model, output=None, head=None) -> None:
    """Refuse `--classes` with a name count other than the model's number of classes
    (known before any work for graph models; subclassed ones are checked by `explain`)."""
    from xai_keras.errors import InputError
    from xai_keras.explain.base import runner_for
    from xai_keras.explain.heads import resolve_head

    if names is None:
        return
    spec, _ = resolve_head(model, output, head)
    count = runner_for(model, None, head=spec).num_scores
    if count is not None and count != len(names):
        raise InputError(
            f"--classes gives {len(names)} names but model {model.name!r} has {count} classes; "
            f"give one name per class, in class-index order."
        )


def load_model(path: str, unsafe: bool = False):
    """Load a `.keras` model with Keras' safe mode on unless `unsafe` (the user trusts it)."""
    import keras

    from xai_keras.errors import InputError

    if not Path(path).is_file():
        raise InputError(f"Model file not found: {path}. Pass a saved .keras model.")
    fix = "pass a model saved with model.save('name.keras')"
    if path.lower().endswith(".keras") and not zipfile.is_zipfile(path):
        kind = "it is empty" if Path(path).stat().st_size == 0 else "it is not a zip archive"
        raise InputError(f"{path} is not a readable Keras model file ({kind}); {fix}.")
    try:
        return keras.models.load_model(path, safe_mode=not unsafe, compile=False)
    except ValueError as err:
        if "safe_mode" in str(err) or "lambda" in str(err).lower():
            raise InputError(
                f"{path} contains code (e.g. a Lambda layer) that safe mode refuses to run. "
                "If you trust the file, pass --unsafe."
            ) from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path} is not a readable Keras model file ({reason}); {fix}.") from err
    except (OSError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
        raise InputError(f"{path} is not a readable Keras model file ({reason}); {fix}.") from err


# name -> (keras.applications constructor, module with preprocess_input)
_APPLICATIONS = {
    "resnet50": ("ResNet50", "resnet50"),
    "vgg16": ("VGG16", "vgg16"),
    "mobilenetv2": ("MobileNetV2", "mobilenet_v2"),
    "efficientnetb0": ("EfficientNetB0", "efficientnet"),
    "densenet121": ("DenseNet121", "densenet"),
}


def load_application(name: str, weights: str | None):
    """A `keras.applications` model by name, and its `preprocess_input` for 0-255 images.

    `weights` is a local weights file, "imagenet" (downloaded by Keras, online only) or None
    (random weights: the maps then show nothing learnt, which a warning says).
    """
    import warnings

    import keras

    from xai_keras.errors import InputError

    constructor, module = _APPLICATIONS[name.lower()]
    local = weights not in (None, "imagenet")
    if local and not Path(weights).is_file():
        raise InputError(f"Weights file not found: {weights}. Pass a local .h5/.weights.h5 file.")
    model = getattr(keras.applications, constructor)(weights=None if local else weights)
    if local:
        model.load_weights(weights)
    elif weights is None:
        warnings.warn(
            f"{name}: no --weights given, so the model has random weights and its explanations "
            "show nothing learnt. Pass --weights imagenet (online) or a local weights file.",
            UserWarning,
            stacklevel=2,
        )
    return model, getattr(keras.applications, module).preprocess_input


def _cmd_explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from xai_keras import explain
    from xai_keras.explain import contact_sheet
    from xai_keras.explain.ranges import resolve_value_range
    from xai_keras.io import ensure_writable_dir, save_figure

    if args.model.lower() in _APPLICATIONS:  # these take 0-255 pixels and preprocess them
        model, preprocess = load_application(args.model, args.weights)
        value_range = resolve_value_range("pixels")
    else:
        model, preprocess = load_model(args.model, args.unsafe), None
        value_range = _value_range(args)
    out = ensure_writable_dir(args.out)
    output = int(args.output) if args.output and args.output.isdigit() else args.output
    class_names = _class_names(args.classes)
    _check_class_count(class_names, model, output, args.head)
    files = _image_files(args.images)
    images = _read_images(files, tuple(model.inputs[0].shape[1:]), value_range, args.size)
    if preprocess is not None:
        images = preprocess(images)
    stems = _output_stems(files)
    explanations = explain(  # gradient CAMs of one layer share one pass
        model,
        images,
        method=_method_list(args.method),
        layer=args.layer,
        targets=args.target,
        batch_size=args.batch_size,
        class_names=class_names,
        output=output,
        head=args.head,
        value_range=None if preprocess is not None else value_range,
    )
    sheet = len(explanations) > 1 or len(files) > 1
    total = len(files) * len(explanations) + sheet
    written: list[Path] = []
    try:
        for exp in tqdm(explanations, desc="writing", disable=args.quiet):
            for i, stem in enumerate(stems):
                written.append(save_figure(exp[i].plot(), out / f"{stem}_{exp.method}.png"))
        if sheet:
            written.append(save_figure(contact_sheet(explanations), out / "contact_sheet.png"))
    except OSError as err:
        raise _write_error(err, written, total, out) from err
    for i, f in enumerate(files):
        _print(args, f"{f}: {explanations[0].label(i)}")
    if sheet:
        _print(args, f"contact sheet: {written[-1]}")
    _print(args, f"wrote {len(files) * len(explanations)} PNGs to {out}")
    return 0


def _write_error(err: OSError, written: Sequence[Path], total: int, out: Path):
    """One line for a failed write (a full disk, a folder made read-only): what was written
    and what was not."""
    from xai_keras.errors import InputError

    failed = f" {err.filename}" if err.filename else ""
    done = f"{len(written)} of {total} files were written to {out}"
    if written:
        done += f" (the last: {Path(written[-1]).name})"
    return InputError(
        f"Writing{failed} failed ({err.strerror or err}); {done}, the other {total - len(written)} "
        "were not. Free some space or pass another --out, then run again."
    )


# -- sag ---------------------------------------------------------------------------------------
def _grid(text: str) -> tuple[int, int]:
    rows, _, cols = text.lower().partition("x")
    try:
        return int(rows), int(cols or rows)
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 7x7, got {text!r}") from None


def _cmd_sag(args: argparse.Namespace) -> int:
    from xai_keras import sag
    from xai_keras.io import ensure_writable_dir
    from xai_keras.tensorboard import log_sag

    picture, beside = Path(args.out), Path(args.out).with_suffix(".json")
    ensure_writable_dir(picture.parent, "folder of --out")  # before the search, not after
    if args.logdir:
        ensure_writable_dir(args.logdir, "--logdir folder")
    model = load_model(args.model, args.unsafe)
    class_names = _class_names(args.classes)
    _check_class_count(class_names, model)
    shape = tuple(model.inputs[0].shape[1:])
    value_range = _value_range(args)
    image = _read_images(_image_files([args.image]), shape, value_range, args.size)[0]
    graph = sag(
        model,
        image,
        target=args.target,
        grid=args.grid,
        threshold=args.threshold,
        relative=not args.absolute,
        beam_width=args.beam_width,
        max_roots=args.max_roots,
        baseline=args.baseline,
        class_names=class_names,
        value_range=value_range,
    )
    written: list[Path] = []
    try:
        path = graph.save(picture)
        written.append(path)
        written.append(graph.to_json(beside))
        if args.logdir:
            log_sag(args.logdir, graph)
    except OSError as err:
        raise _write_error(err, written, 2, picture.parent) from err
    if graph.message:
        _print(args, graph.message)
    for root in graph.roots:
        _print(args, f"root {list(root)}: confidence {graph.confidence(root):.3f}")
    _print(args, f"{graph.n_forward} masked forward passes; wrote {path} (and .json)")
    return 0


# -- benchmark ---------------------------------------------------------------------------------
def _cmd_benchmark(args: argparse.Namespace) -> int:
    from xai_keras.errors import InputError
    from xai_keras.evaluate.benchmark import run_benchmark
    from xai_keras.io import ensure_writable_dir

    names = None if args.methods == "all" else _method_list(args.methods)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    n = args.n if args.n is not None else (48 if args.quick else 200)
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
            n_sanity=0 if args.no_sanity else (4 if args.quick else 8),
            n_sag=args.sag if args.sag is not None else (2 if args.quick else 4),
        )
    except OSError as err:
        failed = f" {err.filename}" if err.filename else ""
        raise InputError(
            f"Writing{failed} failed ({err.strerror or err}); what was written is in {args.out} "
            f"and {args.cache}, the rest was not. Free some space, then run again."
        ) from err
    out = Path(args.out)
    _print(args, (out / "results.md").read_text())
    _print(args, f"results: {out / 'results.json'}, {out / 'results.md'}; figures in {out}")
    return 0 if results["datasets"] else 1


# -- explain-dataset ------------------------------------------------------------------------------
def _cmd_explain_dataset(args: argparse.Namespace) -> int:
    import numpy as np

    from xai_keras.errors import InputError
    from xai_keras.scale import explain_dataset

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
        metrics=[m.strip() for m in args.metrics.split(",")] if args.metrics else (),
        class_names=_class_names(args.classes),
        log_dir=args.logdir,
        progress=not args.quiet,
    )
    summary = result.summary()
    flagged = ", ".join(map(str, summary.get("flagged_classes", []))) or "none"
    _print(args, f"{len(result)} maps in {args.out}; summary: {Path(args.out) / 'summary.md'}")
    _print(args, f"classes whose maps peak at the border (possible shortcut): {flagged}")
    return 0


# -- analyze -------------------------------------------------------------------------------------
def _run_config(model_path: str, config: str | None):
    """The run's data settings: `--config`, else the config.yaml `train` wrote beside the model."""
    from xai_keras.config import load_config

    if config is None:
        beside = Path(model_path).resolve().parent / "config.yaml"
        config = str(beside) if beside.is_file() else None
    return load_config(config).data


def _cmd_analyze(args: argparse.Namespace) -> int:
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
        _print(args, "-", line.replace("**", ""))
    _print(args, f"analysis took {report.seconds:.1f} s; report: {report.files['markdown']}")
    return 0


# -- visualize -----------------------------------------------------------------------------------
def _cmd_visualize(args: argparse.Namespace) -> int:
    import numpy as np
    import tensorflow as tf

    from xai_keras.features import visualize_units

    model = load_model(args.model, args.unsafe)
    shape = tuple(model.inputs[0].shape[1:])
    images = None
    if args.images:
        images = _read_images(_image_files(args.images), shape, _value_range(args), args.size)
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
        _print(args, f"{name}: {path}")
    return 0


# -- tensorboard ---------------------------------------------------------------------------------
def _launch_tensorboard(log_dir: str | os.PathLike, port: int = 6006) -> int:
    """Run TensorBoard on localhost only, until interrupted."""
    print(f"TensorBoard on http://localhost:{port}/ (Ctrl-C to stop)", flush=True)
    cmd = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(log_dir),
        "--host",
        "localhost",
        "--port",
        str(port),
    ]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def _cmd_tensorboard(args: argparse.Namespace) -> int:
    return _launch_tensorboard(args.logdir, args.port)


def _cmd_methods(args: argparse.Namespace) -> int:
    from xai_keras.explain import METHODS

    for name, cls in METHODS.items():
        options = ", ".join(cls.options()) or "-"
        print(f"{name:22s} {cls.family:13s} options: {options:32s} {cls.reference}")
    return 0


# -- parser --------------------------------------------------------------------------------------
def _size(text: str) -> tuple[int, int]:
    """`--size H,W` (or one number for a square)."""
    parts = text.replace("x", ",").split(",")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must look like 224,224 (H,W), got {text!r}")
    return h, w


def _add_model_flags(p: argparse.ArgumentParser, pixels: bool = False) -> None:
    """The flags of every command that loads a user's model (and, with `pixels`, reads images)."""
    if pixels:
        p.add_argument(
            "--size",
            type=_size,
            metavar="H,W",
            help="resize images to H,W for a model that accepts any size (default: the "
            "model's size, else each image's own)",
        )
        p.add_argument(
            "--unit",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="scale image pixels to [0, 1] (default; --no-unit keeps 0-255)",
        )
        p.add_argument(
            "--value-range",
            metavar="LOW,HIGH",
            help="the model's input range, e.g. -1,1: pixel 0 becomes LOW and 255 HIGH "
            "(overrides --unit); 'black' baselines use LOW",
        )
        p.add_argument(
            "--preprocess",
            choices=["tf", "torch", "caffe"],
            help="the model takes keras.applications-style preprocessed images: tf ([-1, 1]), "
            "torch (ImageNet mean/std) or caffe (BGR, mean-centred)",
        )
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="load models that contain code (disables Keras safe_mode)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xai-keras", description="Train and explain Keras image classifiers."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train the CNN from a config, report, explain samples")
    p.add_argument("--config", help="YAML/JSON config (default: built-in shapes config)")
    p.add_argument("--out", help="output directory (model, report, TensorBoard logs)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.epochs=3 (repeatable)",
    )
    p.add_argument("--epochs", type=int, help="shortcut for --set training.epochs=N")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--explain",
        type=int,
        default=6,
        metavar="N",
        help="explain N test images with every method afterwards (0: skip)",
    )
    p.add_argument("--methods", help="comma-separated methods for --explain (default: all)")
    p.add_argument("--tensorboard", action="store_true", help="launch TensorBoard at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("explain", help="explain images with one or more methods")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument(
        "--model", required=True, help=f"a saved .keras model, or one of {', '.join(_APPLICATIONS)}"
    )
    p.add_argument(
        "--weights",
        help="for a keras.applications name: a local weights file, or "
        "'imagenet' (downloads; online only); default: random weights",
    )
    p.add_argument("--method", default="gradcam", help="method(s), comma-separated, or 'all'")
    p.add_argument("--layer", help="layer for CAM methods (default: last spatial layer)")
    p.add_argument("--target", type=int, help="class to explain (default: top class)")
    p.add_argument("--output", help="output to explain (name or index) of a multi-output model")
    p.add_argument(
        "--head",
        choices=("softmax", "sigmoid", "linear"),
        help="how the output is read (default: from its final activation); a single sigmoid "
        "unit gives classes 0 (negative logit) and 1",
    )
    p.add_argument("--classes", help="class names: a JSON list/dict or a text file, one per line")
    p.add_argument("--out", default="explanations", help="output directory for PNGs")
    p.add_argument("--batch-size", type=int, default=32)
    _add_model_flags(p, pixels=True)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("sag", help="structured attention graph of one image")
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--image", required=True, help="the image file")
    p.add_argument("--out", default="sag.png", help="picture to write (a .json goes beside it)")
    p.add_argument("--target", type=int, help="class to explain (default: top class)")
    p.add_argument("--grid", type=_grid, default=(7, 7), help="patch grid, e.g. 7x7")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--absolute", action="store_true", help="threshold on the probability itself")
    p.add_argument("--beam-width", type=int, default=5)
    p.add_argument("--max-roots", type=int, default=3)
    p.add_argument(
        "--baseline",
        default="auto",
        choices=["auto", "blur", "blur_strong", "mean", "black"],
        help="what hidden patches show (auto: the first of blur, blur_strong, mean, black that "
        "removes the class; black is the minimum of the model's value range)",
    )
    p.add_argument("--classes", help="class names: a JSON list/dict or a text file")
    p.add_argument("--logdir", help="also log the picture to TensorBoard here")
    _add_model_flags(p, pixels=True)
    p.set_defaults(func=_cmd_sag)

    p = sub.add_parser("benchmark", help="faithfulness, localisation, sanity, shortcut, cost")
    p.add_argument(
        "--datasets",
        default="shapes,digits,lfw_faces",
        help="comma-separated: shapes (adds shapes_shortcut), digits, lfw_faces",
    )
    p.add_argument("--methods", default="all", help="comma-separated methods, or 'all'")
    p.add_argument("--n", type=int, help="test images per dataset (default 200; 48 with --quick)")
    p.add_argument("--out", default="reports/bench", help="where results and figures go")
    p.add_argument("--cache", default="logs/bench_models", help="trained models are kept here")
    p.add_argument("--quick", action="store_true", help="small models and samples (< 5 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sag", type=int, help="images per dataset for SAG (0 to skip)")
    p.add_argument("--no-sanity", action="store_true", help="skip the randomisation checks")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser(
        "explain-dataset", help="explain a whole image folder or .npy, streamed and resumable"
    )
    p.add_argument("data", help="an image folder (sub-folders = classes) or a .npy array")
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--out", required=True, help="folder for shards, index and summary")
    p.add_argument("--method", default="gradcam", help="any method but sag")
    p.add_argument("--targets", help="'label' (folder classes) or a class index; default: top")
    p.add_argument("--layer", help="layer for CAM methods (default: last spatial layer)")
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    p.add_argument("--shard-size", type=int, default=1024, help="maps per shard file")
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
    p.add_argument("--metrics", help="per-image metrics, e.g. deletion,insertion (slow)")
    p.add_argument("--classes", help="class names: a JSON list/dict or a text file")
    p.add_argument("--logdir", help="also write the summary to TensorBoard here")
    p.add_argument(
        "--mirrored", action="store_true", help="tf.distribute.MirroredStrategy over local GPUs"
    )
    _add_model_flags(p)
    p.set_defaults(func=_cmd_explain_dataset)

    p = sub.add_parser("analyze", help="information about generative factors, layer by layer")
    p.add_argument("--model", required=True, help="a saved .keras model trained on shapes")
    p.add_argument("--dataset", default="shapes", help="factor-controlled data (only 'shapes')")
    p.add_argument("--out", default="reports/analysis", help="report, JSON and figures go here")
    p.add_argument(
        "--config", help="the run's config (default: config.yaml beside the model, if any)"
    )
    p.add_argument("--n", type=int, default=2000, help="generated images to analyse")
    p.add_argument("--layers", help="comma-separated layers (default: each block and dense)")
    p.add_argument("--cells", type=int, default=4, help="also pool units on an NxN grid (0: skip)")
    p.add_argument(
        "--sensitivity", type=int, default=300, help="base images for one-factor changes (0: skip)"
    )
    p.add_argument("--logdir", help="also write figures and report to TensorBoard here")
    p.add_argument("--seed", type=int, default=1234)
    _add_model_flags(p)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("visualize", help="what units respond to: maximisation, maps, filters")
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--layer", required=True, help="layer name or nested path (or 'logits')")
    p.add_argument("--units", default="0-7", help="units/channels, e.g. 0-15, 0,3,7 or all")
    p.add_argument("--out", default="viz", help="output directory for the PNGs")
    p.add_argument("--steps", type=int, default=256, help="gradient-ascent steps")
    p.add_argument("--k", type=int, default=9, help="top-activating examples per unit")
    p.add_argument("--images", nargs="+", help="image files/folders for top examples and maps")
    p.add_argument(
        "--dataset",
        choices=["shapes", "none"],
        default="none",
        help="generate shapes images for top examples (when no --images)",
    )
    p.add_argument("--n", type=int, default=1000, help="images generated with --dataset shapes")
    p.add_argument("--logdir", help="also log the pictures to TensorBoard here")
    p.add_argument("--seed", type=int, default=0)
    _add_model_flags(p, pixels=True)
    p.set_defaults(func=_cmd_visualize)

    p = sub.add_parser("tensorboard", help="start TensorBoard on localhost")
    p.add_argument("--logdir", default="logs")
    p.add_argument("--port", type=int, default=6006)
    p.set_defaults(func=_cmd_tensorboard)

    p = sub.add_parser("methods", help="list the explanation methods and their options")
    p.set_defaults(func=_cmd_methods)
    # `--debug` is accepted after the subcommand too; SUPPRESS keeps a value given before it.
    for command in sub.choices.values():
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks on errors",
        )
    return parser


def _join_negative_ranges(argv: list[str]) -> list[str]:
    """`--value-range -1,1` as `--value-range=-1,1`: argparse reads "-1,1" as a flag."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--value-range" and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"--value-range={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = _join_negative_ranges(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    from xai_keras.errors import XaiKerasError

    try:
        return args.func(args)
    except XaiKerasError as err:
        if args.debug:
            raise
        print(f"xai-keras {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
