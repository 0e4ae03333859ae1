"""`xai-keras`: train, explain, analyse and look at the results from the shell.

One module per command (`xai_keras/cli/<command>.py`), each with `add_parser(sub)`, which
declares its flags, and `run(args)`, its handler. `COMMANDS` lists them in `--help` order; a new
command is a new module and one more name here. Nothing here imports TensorFlow: a handler
imports what it needs, so `xai-keras --help` is quick.

Errors from bad input are printed as one line (exit code 2) unless `--debug` is given, which
also shows TensorFlow's start-up log lines (hidden by default).
Exit codes: 0 success, 1 unexpected failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence

from xai_keras import __version__

# Re-exported: helpers that callers and tests import from `xai_keras.cli`.
from xai_keras.cli._common import (  # noqa: F401
    APPLICATIONS,
    Parser,
    join_negative_ranges,
    load_application,
    load_model,
    method_list,
    parse_class_names,
    value_range_of,
)
from xai_keras.cli._images import image_files, output_stems, read_images  # noqa: F401

__all__ = ["COMMANDS", "build_parser", "main", "load_model", "load_application"]

# Command modules under xai_keras.cli, in the order `--help` lists them. The command's name is
# the module's with "_" as "-".
COMMANDS = (
    "train",
    "explain",
    "sag",
    "benchmark",
    "audit",
    "explain_dataset",
    "analyze",
    "visualize",
    "tensorboard",
    "methods",
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="xai-keras", description="Train and explain Keras image classifiers.")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks and TensorFlow's log lines",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"xai_keras.cli.{name}").add_parser(sub)
    # `--debug` is accepted after the subcommand too; SUPPRESS keeps a value given before it.
    for command in sub.choices.values():
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks and TensorFlow's log lines",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = join_negative_ranges(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    module = sys.modules[args.func.__module__]
    from xai_keras.cli._preflight import check_args, name_flags
    from xai_keras.errors import XaiKerasError

    command = parser._subparsers._group_actions[0].choices[args.command]
    try:  # before TensorFlow loads: a mistyped path or class list is answered at once
        check_args(args.command, args)
    except XaiKerasError as err:
        if args.debug:
            raise
        print(f"xai-keras {args.command}: error: {err}", file=sys.stderr)
        return 2
    if getattr(module, "USES_TENSORFLOW", True):
        if args.debug:
            with contextlib.suppress(ImportError):  # the command that needs it says so
                import tensorflow  # noqa: F401  (with its log lines)
        else:
            from xai_keras.cli._quiet import import_tensorflow_quietly

            import_tensorflow_quietly()
    try:
        return args.func(args)
    except XaiKerasError as err:
        if args.debug:
            raise
        print(f"xai-keras {args.command}: error: {name_flags(str(err), command)}", file=sys.stderr)
        return 2
