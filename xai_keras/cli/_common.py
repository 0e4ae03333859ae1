"""Helpers shared by the commands: model loading, class names, common flags."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOCALHOST_URL = "http://localhost:6006/"

CLASSES_HELP = (
    "class names, overriding the class_names.json `train` writes beside the model: inline "
    'JSON such as \'["cat", "dog"]\', a .json file (a list, or a dict keyed "0"..), or '
    "a text file with one name per line"
)


def print_result(args: argparse.Namespace, *parts: object) -> None:
    if not getattr(args, "quiet", False):
        print(*parts, flush=True)


def method_list(text: str | None, model: Any = None, layer: Any = None) -> list[str]:
    """`--method a,b` as registry names; "all": every method (that can explain `model`); none
    given: the model's default method."""
    from xai_keras import methods
    from xai_keras.explainers import default_method, get_method

    if text is None:
        return [default_method(model, layer).name]
    names = (
        methods(model=model) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    )
    return [get_method(n).name for n in names]


def metric_list(text: str, *, needs: Sequence[str], per_image: bool | None = None) -> list[str]:
    """`--metrics a,b`: names from the metric registry a command can compute (those needing no
    more than `needs`), in the given order; an unknown name is one error listing the choices."""
    from xai_keras.errors import InputError
    from xai_keras.evaluate import metrics

    choices = metrics(needs=needs, per_image=per_image)
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise InputError(
            f"--metrics {text}: unknown here: {', '.join(unknown)}. Choose from: "
            f"{', '.join(choices)}."
        )
    return names


# What `explain`, `sag` and `features` read with OpenCV: the suffixes tf.data folders decode
def note_printer(args: argparse.Namespace):
    """A callable printing one "note: ..." line to stderr, or None with --quiet."""
    import sys

    if getattr(args, "quiet", False):
        return None
    return lambda text: print(f"note: {text}", file=sys.stderr, flush=True)


def value_range_of(args: argparse.Namespace, model=None):
    """The model's input range from --value-range, --preprocess or --unit/--no-unit; None
    for a model that preprocesses pixels itself (a KerasHub task's attached preprocessor:
    images are read as 0-255 pixels and the session reads the range from its converter)."""
    from xai_keras.explainers.ranges import resolve_value_range

    given = args.value_range or args.preprocess
    if given is None and getattr(model, "preprocessor", None) is not None:
        return None
    return resolve_value_range(given or ("unit" if args.unit else "pixels"))


_CLASSES_FIX = (
    'pass inline JSON such as \'["cat", "dog"]\', a .json file with a list or a dict '
    '{"0": "cat", "1": "dog"}, or a text file with one name per line'
)


def parse_class_names(value: str | None) -> list[str] | None:
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


def _class_count(model, output=None, head=None) -> int | None:
    """The model's number of classes, where known before any work (graph models)."""
    from xai_keras.explainers.base import runner_for
    from xai_keras.explainers.heads import resolve_head

    spec, _ = resolve_head(model, output, head)
    return runner_for(model, None, head=spec).num_scores


def _check_class_count(names: list[str] | None, model, output=None, head=None) -> None:
    """Refuse `--classes` with a name count other than the model's number of classes
    (known before any work for graph models; subclassed ones are checked by `explain`)."""
    from xai_keras.errors import InputError

    if names is None:
        return
    count = _class_count(model, output, head)
    if count is not None and count != len(names):
        raise InputError(
            f"--classes gives {len(names)} names but model {model.name!r} has {count} classes; "
            f"give one name per class, in class-index order."
        )


def _saved_class_names(model_path: str | None) -> tuple[list[str], Path] | None:
    """The class names `train` wrote beside the model (class_names.json), or beside the run
    folder of a checkpoint (checkpoints/best.keras); None when there is none."""
    from xai_keras.training_files import CLASS_NAMES_FILE

    if model_path is None or not Path(model_path).is_file():  # e.g. a keras.applications name
        return None
    folder = Path(model_path).resolve().parent
    for where in (folder, folder.parent if folder.name == "checkpoints" else None):
        path = where / CLASS_NAMES_FILE if where is not None else None
        if path is None or not path.is_file():
            continue
        try:
            names = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return names, path
        return None
    return None


def class_names_for(args: argparse.Namespace, model, output=None, head=None) -> list[str] | None:
    """Class names to show: `--classes`, else the class_names.json `train` wrote beside the
    model (ignored, with a note, when its count is not the model's); None: class indices."""
    import sys

    names = parse_class_names(getattr(args, "classes", None))
    if names is not None:
        _check_class_count(names, model, output, head)
        return names
    saved = _saved_class_names(getattr(args, "model", None))
    if saved is None:
        return None
    names, path = saved
    count = _class_count(model, output, head)
    if count is not None and count != len(names):
        print(
            f"note: {path} has {len(names)} names but the model has {count} classes; "
            "showing class indices (pass --classes to name them).",
            file=sys.stderr,
        )
        return None
    return names


def load_model(path: str, unsafe: bool = False):
    """Load a `.keras` model with Keras' safe mode on unless `unsafe` (the user trusts it)."""
    from xai_keras.models import load_model_file

    return load_model_file(path, unsafe)


# name -> (keras.applications constructor, module with preprocess_input)
APPLICATIONS = {
    "resnet50": ("ResNet50", "resnet50"),
    "vgg16": ("VGG16", "vgg16"),
    "mobilenetv2": ("MobileNetV2", "mobilenet_v2"),
    "efficientnetb0": ("EfficientNetB0", "efficientnet"),
    "densenet121": ("DenseNet121", "densenet"),
}


def load_application(name: str, weights: str | None):
    """A `keras.applications` model by name, and its `preprocess_input` for 0-255 images.

    `weights` is a local weights file, "imagenet" (downloaded by Keras, online only), "none"
    (random weights, on purpose) or None (random weights, which a one-line notice on stderr
    says: the maps then show nothing learnt). Callers mark pictures of a random model
    (`mark_random_weights`).
    """
    import sys

    import keras

    from xai_keras.errors import InputError

    constructor, module = APPLICATIONS[name.lower()]
    random = weights is None or weights.lower() == "none"
    local = not random and weights.lower() != "imagenet"
    if local and not Path(weights).is_file():
        raise InputError(
            f"Weights file not found: {weights}. Pass a local .h5/.weights.h5 file, "
            "'imagenet' (downloads) or 'none' (random weights)."
        )
    build = getattr(keras.applications, constructor)
    if random or local:
        model = build(weights=None)
    else:
        try:
            model = build(weights="imagenet")
        except Exception as err:  # Keras' get_file raises a bare Exception when offline
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "fetch failure" not in text and not isinstance(err, OSError):
                raise
            raise InputError(
                f"Downloading the ImageNet weights of {name} failed ({text[:160]}); offline, "
                f"copy the file from ~/.keras/models/ of a machine where `keras.applications."
                f"{constructor}(weights='imagenet')` ran, and pass --weights that/file.h5."
            ) from None
    if local:
        model.load_weights(weights)
    elif weights is None:  # a notice on one line, not a Python warning with a source line
        print(
            f"xai-keras: note: {name}: no --weights given, so the model has random weights and "
            "its explanations show nothing learnt (the pictures say so). Pass --weights "
            "imagenet (online) or a local weights file; --weights none to mean random weights.",
            file=sys.stderr,
        )
    return model, getattr(keras.applications, module).preprocess_input


def mark_random_weights(fig):
    """Write "random weights" across a picture of a model with random weights, so a convincing
    heatmap of an untrained model is not taken for a finding. Returns `fig`."""
    fig.text(
        0.5,
        0.5,
        "RANDOM WEIGHTS - nothing learnt",
        ha="center",
        va="center",
        rotation=20,
        fontsize=max(14, 2.6 * fig.get_figwidth()),
        fontweight="bold",
        color="red",
        alpha=0.55,
    )
    return fig


def write_error(err: OSError, written: Sequence[Path], total: int, out: Path):
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


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit code 2), like the errors
    the commands raise, instead of the usage text and then the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def count(low: int = 1, high: int | None = None):
    """An argparse `type`: an int in [low, high], refused while parsing (before TensorFlow
    loads) otherwise, e.g. `--batch-size 0`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected an int {bounds}, got {text!r}")
        return value

    parse.__name__ = "int"
    return parse


def number(low: float, high: float, low_open: bool = False):
    """An argparse `type`: a finite float in [low, high] ((low, high] with `low_open`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (value > low if low_open else value >= low) or not value <= high:
            bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"expected a number in {bounds}, got {text!r}")
        return value

    parse.__name__ = "float"
    return parse


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


def add_form_flags(p: argparse.ArgumentParser) -> None:
    """What is explained, for the commands that explain: which output and how it is read."""
    p.add_argument("--output", help="output to explain (name or index) of a multi-output model")
    p.add_argument(
        "--head",
        choices=("softmax", "sigmoid", "linear"),
        help="how the output is read (default: from its final activation); a single sigmoid "
        "unit gives classes 0 (negative logit) and 1",
    )


def model_form(args: argparse.Namespace) -> dict:
    """`output=` and `head=` for the API from `--output` (a name or an index) and `--head`."""
    output = args.output
    return {"output": int(output) if output and output.isdigit() else output, "head": args.head}


def add_model_flags(p: argparse.ArgumentParser, pixels: bool = False) -> None:
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
            "--fit",
            choices=["stretch", "crop", "pad"],
            help="how an image whose aspect ratio is not the model's input's is fitted to it: "
            "stretch (default for a saved model: keras.utils.image_dataset_from_directory, and "
            "so `train` on a folder, feeds images that way), crop (centre crop; default for a "
            "keras.applications name, as ImageNet models are evaluated) or pad (black borders)",
        )
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="load models that contain code (disables Keras safe_mode)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")


def join_negative_ranges(argv: list[str]) -> list[str]:
    """`--value-range -1,1` as `--value-range=-1,1`: argparse reads "-1,1" as a flag."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--value-range" and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"--value-range={arg}"
        else:
            out.append(arg)
    return out
