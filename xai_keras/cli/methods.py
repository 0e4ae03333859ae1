"""`xai-keras methods`: list the explanation methods and their options."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("methods", help="list the explanation methods and their options")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xai_keras.explainers import METHODS

    for name, cls in METHODS.items():
        options = ", ".join(cls.options()) or "-"
        print(f"{name:22s} {cls.family:13s} options: {options:32s} {cls.reference}")
    return 0
