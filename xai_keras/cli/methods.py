"""`xai-keras methods`: list the explanation methods, or one method's options.

The list comes from `xai_keras.catalogue`, which loads no TensorFlow, so it prints in about a
second; `xai-keras methods NAME` loads the registry for the method's options and paper.
"""

from __future__ import annotations

import argparse
import textwrap
from itertools import zip_longest

# The list reads the light catalogue; only `methods NAME` loads the registry (and TensorFlow).
USES_TENSORFLOW = False

# (title, width) of the list's columns; with the gaps between them the table fits 100
# characters, and longer cells wrap inside their column.
COLUMNS = (("family", 12), ("name", 23), ("needs", 10), ("what the map is", 30), ("best for", 20))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "methods",
        help="list the explanation methods (or one method's options)",
        description="List every explanation method: family, name, what it needs (an "
        "intermediate layer, gradients, a baseline image, attention layers), what its map is "
        "and what it is best for. With a NAME: that method's options and paper.",
    )
    p.add_argument("name", nargs="?", help="a method to describe in full (e.g. rise)")
    p.set_defaults(func=run)


def table_lines(rows: list[tuple[str, ...]]) -> list[str]:
    """The rows as a table whose cells wrap inside their columns (`COLUMNS` widths)."""
    lines = [" ".join(f"{title:{width}s}" for title, width in COLUMNS).rstrip()]
    lines.append(" ".join("-" * width for _, width in COLUMNS))
    for row in rows:
        cells = [textwrap.wrap(text, width) or [""] for text, (_, width) in zip(row, COLUMNS)]
        for parts in zip_longest(*cells, fillvalue=""):
            line = " ".join(f"{part:{w}s}" for part, (_, w) in zip(parts, COLUMNS))
            lines.append(line.rstrip())
    return lines


def _describe(name: str, debug: bool) -> None:
    from xai_keras.catalogue import CATALOGUE, canonical_name
    from xai_keras.errors import InputError

    if canonical_name(name) not in CATALOGUE:  # answered before TensorFlow loads
        raise InputError(f"Unknown method {name!r}. Available methods: {', '.join(CATALOGUE)}.")
    if not debug:
        from xai_keras.cli._quiet import import_tensorflow_quietly

        import_tensorflow_quietly()
    from xai_keras.explainers import get_method

    cls = get_method(name)
    info = CATALOGUE[cls.name]
    print(f"{cls.name} ({info.family}): {info.summary}; best for {info.best_for}.")
    print(f"needs: {', '.join(info.needs) or 'nothing'}")
    print(f"options: {', '.join(cls.options()) or 'none'}")
    if cls.reference:
        print(f"paper: {cls.reference}")


def run(args: argparse.Namespace) -> int:
    from xai_keras.catalogue import CATALOGUE

    if args.name:
        _describe(args.name, args.debug)
        return 0
    rows, last = [], None
    for name, info in CATALOGUE.items():
        family = info.family if info.family != last else ""
        if family and last is not None:
            rows.append(("",) * len(COLUMNS))  # a blank line between families
        rows.append((family, name, " ".join(info.needs) or "-", info.summary, info.best_for))
        last = info.family
    print("\n".join(table_lines(rows)))
    print("\n`xai-keras methods NAME` lists a method's options; use it as --method NAME.")
    return 0
