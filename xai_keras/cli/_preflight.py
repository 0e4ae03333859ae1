"""Checks of the command line's paths and names that need no TensorFlow, run before it loads,
so a typo is answered in well under two seconds; and the library's Python argument names in
error messages rewritten to the flags the user typed."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from xai_keras.cli._common import APPLICATIONS, parse_class_names
from xai_keras.errors import InputError

__all__ = ["check_args", "check_paths", "name_flags"]

# Python argument names the library uses where the command's flag is named otherwise.
_ALIASES = {"targets": "target", "method_names": "methods", "image": "image", "images": "images"}


def check_args(command: str, args: argparse.Namespace) -> None:
    """What can be checked before TensorFlow loads: the paths, and `--classes` (JSON or a
    file of names). Numbers are checked by their argparse types while parsing."""
    check_paths(command, args)
    parse_class_names(getattr(args, "classes", None))


def check_paths(command: str, args: argparse.Namespace) -> None:
    """Refuse a missing model, weights file or image path, naming the flag and what it takes."""
    model = getattr(args, "model", None)
    if isinstance(model, str) and not Path(model).is_file():
        accepts_names = command == "explain"
        if accepts_names and model.lower() in APPLICATIONS:
            weights = getattr(args, "weights", None)
            if weights and weights.lower() not in ("imagenet", "none") and not Path(
                weights
            ).is_file():
                raise InputError(
                    f"Weights file not found: {weights} (--weights). Pass a local .h5 file, "
                    "'imagenet' (downloads) or 'none' (random weights)."
                )
        else:
            names = ", ".join(APPLICATIONS)
            also = f", or one of the keras.applications names: {names}" if accepts_names else ""
            raise InputError(
                f"Model file not found: {model} (--model). Pass a saved .keras model{also}."
            )
    paths = []
    if command == "explain":
        paths = [("image", p) for p in args.images]
    elif command == "sag":
        paths = [("--image", args.image)]
    elif command == "explain-dataset":
        paths = [("data", args.data)]
    elif command == "audit":
        paths = [("--data", args.data)]
    elif command == "visualize" and args.images:
        paths = [("--images", p) for p in args.images]
    for flag, path in paths:
        if not Path(path).exists():
            raise InputError(f"Not found: {path} ({flag}). Pass an existing file or folder.")


def name_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """`message` with the library's argument names (`batch_size`, `targets`) written as the
    command's flags (`--batch-size`, `--target`), where the command has such a flag."""
    flags = {}
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if long:
            flags[action.dest] = long[0]
    for python, dest in _ALIASES.items():
        if dest in flags:
            flags.setdefault(python, flags[dest])

    def flag(match: re.Match) -> str:
        name = match.group(1)
        return f"`{flags[name]}`" if name in flags else match.group(0)

    message = re.sub(r"`([a-z_]+)`", flag, message)
    return re.sub(
        r"Received: ([a-z_]+)=",
        lambda m: f"Received: {flags[m.group(1)]} " if m.group(1) in flags else m.group(0),
        message,
    )
