"""MkDocs hooks (`hooks:` in mkdocs.yml): pages generated from the repository at build time.

- `cli.md`: the command-line reference, read from the argparse parsers themselves
  (`xai_keras.cli.build_parser`; no TensorFlow is imported), so it cannot drift from `--help`.
- `api/<module>.md`: one reference page per public module, listing the names of its
  `__all__` (read with `ast`, without importing the module) for mkdocstrings to render from the
  docstrings; a name re-exported by several modules is documented once, where it is listed
  first.
- `notebooks/`: the walkthroughs, rendered unexecuted by mkdocs-jupyter (they run in
  `tests/test_notebooks.py`), with their README as the section's first page.
- `changelog.md`: `CHANGELOG.md` as it is.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]


def _read_example_sections_as_examples() -> None:
    """Our docstrings follow Keras' `Example:` (STYLE.md); griffe's Google parser knows only
    `Examples:` as doctest code and renders `Example:` as Markdown prose, where `x[0]["a"]`
    reads as a reference link. Map the singular to the same section kind."""
    try:
        from griffe import DocstringSectionKind
        from griffe._internal.docstrings import google
    except ImportError:  # another griffe layout: the prose rendering is only less pretty
        return
    google._section_kind.setdefault("example", DocstringSectionKind.examples)


_read_example_sections_as_examples()

# Public modules, in the order of the API reference. A name in several `__all__` lists is
# rendered on the first page that lists it and linked from the others.
API_MODULES = {
    "xai_keras.explainers.sag": "structured attention graphs: `sag`, `SAG`",
    "xai_keras.explainers": "`explain`, `Session`, `Explanation`, the method registry",
    "xai_keras.catalogue": "what each method needs and is best for (`xai-keras methods`)",
    "xai_keras.evaluate": "metrics, `evaluate_model`, the metric registry",
    "xai_keras.scale": "`explain_dataset`, shards, several machines",
    "xai_keras.tensorboard": "TensorBoard logging and `ExplainCallback`",
    "xai_keras.visualize": "colour maps, overlays, grids",
    "xai_keras.analysis": "information about generative factors in each layer",
    "xai_keras.features": "what units learn",
    "xai_keras.data": "built-in datasets",
    "xai_keras.config": "the training config",
    "xai_keras.training": "training",
    "xai_keras.report": "the accuracy report",
    "xai_keras.checks": "validation helpers",
    "xai_keras.errors": "error classes",
    "xai_keras.io": "atomic file writing",
    "xai_keras.cli": "the command line's Python entry points",
}


def module_file(module: str) -> Path:
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def public_names(module: str) -> list[str]:
    """The module's `__all__`, read without importing it."""
    tree = ast.parse(module_file(module).read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(getattr(t, "id", None) == "__all__" for t in targets):
            return [n for n in ast.literal_eval(node.value) if not n.startswith("__")]
    raise ValueError(f"{module} has no __all__")


def _shadowed(module: str, name: str) -> bool:
    """A function named like its own submodule (`evaluate.road.road`): griffe resolves
    `module.name` to the submodule, so the function is rendered from there."""
    path = ROOT / Path(*module.split(".")) / f"{name}.py"
    return path.is_file()


def anchors() -> dict[str, tuple[str, str]]:
    """`{public name: (page module, anchor)}`: where each name of every `__all__` is rendered
    (the first module in `API_MODULES` that lists it)."""
    found = {}
    for module in API_MODULES:
        for name in public_names(module):
            if name not in found:
                path = f"{module}.{name}.{name}" if _shadowed(module, name) else f"{module}.{name}"
                found[name] = (module, path)
    return found


def api_pages() -> dict[str, str]:
    """`{path: markdown}` for the API reference: an index and one page per module."""
    pages, where = {}, anchors()
    top = public_names("xai_keras")

    def link(name: str) -> str:
        page, anchor = where[name]
        return f"[`{name}`]({page}.md#{anchor})"

    for module, about in API_MODULES.items():
        names = public_names(module)
        own = [n for n in names if where[n][0] == module]
        lines = [f"# `{module}`", "", about[0].upper() + about[1:] + ".", ""]
        others = [n for n in names if n not in own]
        if others:
            links = ", ".join(link(n) for n in others)
            lines += [f"Also here: {links} (documented where first listed).", ""]
        plain = [n for n in own if not _shadowed(module, n)]
        lines += [f"::: {module}", "    options:", "      members:"]
        lines += [f"        - {n}" for n in plain] + [""]
        for n in own:
            if _shadowed(module, n):
                lines += [f"::: {module}.{n}.{n}", "    options:", "      show_root_heading: true"]
                lines += ["      show_root_full_path: false", ""]
        pages[f"api/{module}.md"] = "\n".join(lines)
    rows = [f"| {link(n)} | `{where[n][0]}` |" for n in top]
    index = [
        "# API reference",
        "",
        "Generated from the docstrings (mkdocstrings) of every name in each public module's",
        "`__all__`. The names importable straight from `xai_keras`:",
        "",
        "| name | documented in |",
        "|---|---|",
        *rows,
        "",
        "The modules:",
        "",
        *[f"- [`{m}`]({m}.md): {about}" for m, about in API_MODULES.items()],
        "",
    ]
    pages["api/index.md"] = "\n".join(index)
    return pages


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    return ", ".join(f"`{s}`" for s in action.option_strings)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def cli_page() -> str:
    """The command-line reference from the parsers: usage and a table of options per command."""
    from xai_keras.cli import build_parser  # installed (editable) with the package

    parser = build_parser()
    parser.prog = "xai-keras"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = [
        "# Command line",
        "",
        "Generated from the argparse parsers at build time (`scripts/docs_hooks.py`), so it",
        "says what `xai-keras COMMAND --help` says. One entry point, `--help` on every command,",
        "`--quiet` to silence progress bars; exit code 0 on success, 2 on bad input (one clear",
        "line; `--debug` shows the traceback), 1 otherwise. `xai-keras --version` prints the",
        "version.",
        "",
        "| command | does |",
        "|---|---|",
    ]
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name in sub.choices:
        lines.append(f"| [`{name}`](#{name}) | {_escape(helps.get(name) or '')} |")
    for name, command in sub.choices.items():
        command.prog = f"xai-keras {name}"
        usage = command.format_usage().removeprefix("usage: ").strip()
        lines += ["", f"## {name}", "", _escape(command.description or helps.get(name) or "")]
        lines += ["", "```text", usage, "```", "", "| argument | default | help |", "|---|---|---|"]
        for action in command._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            default = action.default
            shown = "" if default in (None, False, argparse.SUPPRESS) else f"`{default}`"
            help_text = (action.help or "") % {"default": default, "prog": command.prog}
            lines.append(f"| {_escape(_flags(action))} | {_escape(shown)} | {_escape(help_text)} |")
    return "\n".join(lines) + "\n"


@event_priority(100)  # before mkdocs-jupyter, so it sees the notebooks added here
def on_files(files: Files, config) -> Files:
    generated = {"cli.md": cli_page(), **api_pages()}
    generated["changelog.md"] = (ROOT / "CHANGELOG.md").read_text()
    for path, text in generated.items():
        files.append(File.generated(config, path, content=text))
    # The notebooks and their README (the section's index page) are read where they are.
    for notebook in ["README.md", *sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))]:
        files.append(
            File(
                f"notebooks/{notebook}",
                src_dir=str(ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files
