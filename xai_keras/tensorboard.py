"""Explanations as TensorBoard image and text summaries, grouped by method."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from xai_keras.explain.explanation import Explanation
from xai_keras.explain.sag import SAG

__all__ = ["log_explanations", "log_figure", "log_sag"]


def log_explanations(
    log_dir: str | os.PathLike, explanations: Sequence[Explanation], step: int = 0
) -> None:
    """Log each explanation's overlays as `explain/<method>` images plus a text summary.

    The text summary `explain/<method>/info` lists, per image, the class, score, method and layer.
    """
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for exp in explanations:
            tag = f"explain/{exp.method}"
            tf.summary.image(tag, exp.overlay(), step=step, max_outputs=len(exp))
            rows = [
                f"| {i} | {exp.label(i)} | {exp.method} | {exp.layer or '-'} |"
                for i in range(len(exp))
            ]
            table = "| image | class (score) | method | layer |\n|---|---|---|---|\n"
            tf.summary.text(f"{tag}/info", table + "\n".join(rows), step=step)
    writer.close()


def log_figure(log_dir: str | os.PathLike, tag: str, png: bytes, step: int = 0) -> None:
    """Log a rendered PNG (e.g. `xai_keras.io.figure_to_png(fig)`) as one image summary."""
    image = tf.image.decode_png(png, channels=3)[None]
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.image(tag, np.asarray(image), step=step)
    writer.close()


def log_sag(log_dir: str | os.PathLike, graph: SAG, step: int = 0, tag: str = "sag") -> None:
    """Log a SAG's picture as `<tag>/graph` and its roots and confidences as `<tag>/info`."""
    from xai_keras.io import figure_to_png

    log_figure(log_dir, f"{tag}/graph", figure_to_png(graph.plot()), step)
    name = graph.class_name or f"class {graph.target}"
    lines = [
        f"class **{name}**, probability {graph.probability:.3f}, grid {graph.grid}, "
        f"{graph.n_forward} masked forward passes",
        "",
        "| root | confidence |",
        "|---|---|",
    ]
    lines += [f"| {list(r)} | {graph.confidence(r):.3f} |" for r in graph.roots]
    if graph.message:
        lines.append(f"\n{graph.message}")
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.text(f"{tag}/info", "\n".join(lines), step=step)
    writer.close()
