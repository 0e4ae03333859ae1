"""What is explained: which output of the model, read how, and which input takes the images.

A `Head` is resolved once per `explain` call from its keyword arguments (`output`, `head`,
`score`, `inputs`, `reshape`) and keys the compiled runner, so each combination is traced once.
Every model form then looks the same to the methods: a score matrix (N, classes) whose columns
are what `targets` index.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from xai_keras.errors import InputError

__all__ = ["HEAD_KINDS", "Head", "check_scores_shape", "resolve_head", "token_grid"]

HEAD_KINDS = ("auto", "softmax", "sigmoid", "linear")


@dataclass(frozen=True)
class Head:
    """Which output is explained and how its values become scores.

    Attributes:
        output: index of the model output (in `model.outputs` order).
        kind: "softmax" (competing classes: logits explained, softmax probabilities),
            "sigmoid" (independent labels: logits explained, sigmoid probabilities; a single
            unit becomes two classes, 0 = the negative logit, 1 = the logit), "linear"
            (values explained as they are, e.g. regression), or "auto": read from the model's
            final activation (a single linear unit counts as "linear").
        image_input: index of the input that takes the images; the others are held fixed.
        score: `score(outputs) -> (N,)`, explained instead of a class (targets must be 0).
        reshape: `(N, T, C) -> (N, h, w, C)` for token layers that are not a square grid.
    """

    output: int = 0
    kind: str = "auto"
    image_input: int = 0
    score: Callable | None = None
    reshape: Callable | None = None


def token_grid(tokens: int) -> tuple[int, int] | None:
    """`(side, skip)` when `tokens` is a square grid (skip 0) or a class token followed by one
    (skip 1); None otherwise."""
    for skip in (0, 1):
        side = math.isqrt(max(tokens - skip, 0))
        if side > 1 and side * side == tokens - skip:
            return side, skip
    return None


def _names(tensors: list, struct: Any) -> list[str]:
    """Names by which a user may pick each of `tensors`: dict keys where the model was built
    with a dict, else the producing layer's name."""
    if isinstance(struct, dict):
        return list(keras.tree.flatten({k: k for k in struct}))
    return [t._keras_history[0].name for t in tensors]


def _index(choice: int | str | None, names: list[str], what: str, model: keras.Model) -> int:
    listed = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    if choice is None:
        return 0
    if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
        if 0 <= choice < len(names):
            return int(choice)
        raise InputError(f"`{what}`={choice} is out of range for model {model.name!r}: {listed}.")
    if isinstance(choice, str) and choice in names:
        return names.index(choice)
    raise InputError(f"No {what} {choice!r} in model {model.name!r}. Its {what}s are {listed}.")


def _held_rows(value: Any, spec: Any, name: str) -> np.ndarray:
    """One held input as rows (1 or N, *shape) of the input's dtype."""
    want = tuple(spec.shape[1:])
    arr = np.asarray(value, dtype=spec.dtype)
    if arr.ndim == len(want):
        arr = arr[None]
    ok = arr.ndim == len(want) + 1 and all(w is None or w == g for w, g in zip(want, arr.shape[1:]))
    if not ok:
        raise InputError(
            f"Input {name!r} must be one row of shape {want} or one row per image "
            f"(N, *{want}). Received shape {arr.shape}."
        )
    return arr


def check_scores_shape(shape: Any, output: int | str, model_name: str) -> None:
    """Refuse an output with spatial dimensions (e.g. a segmentation map (N, H, W, K)): read
    as class scores it would be flattened into H * W * K "classes". At most one non-batch
    dimension may differ from 1, so (N, K), (N, 1, 1, K) and (N, K, 1) are fine."""
    dims = tuple(shape)[1:]
    if sum(d != 1 for d in dims) <= 1:
        return
    axes = tuple(range(1, len(dims)))
    raise InputError(
        f"Output {output!r} of model {model_name!r} has shape {(None, *dims)}: it has spatial "
        "dimensions (e.g. a segmentation map), not one score per class. Pass `score=` a "
        "function giving one number per image, e.g. "
        f"`score=lambda out: tf.reduce_mean(out[..., k], axis={axes})` for class k's mean."
    )


def resolve_head(
    model: keras.Model,
    output: int | str | None = None,
    head: str | None = None,
    score: Callable | None = None,
    inputs: dict[str, Any] | None = None,
    reshape: Callable | None = None,
) -> tuple[Head, dict[int, np.ndarray]]:
    """Check `explain`'s model-form arguments; return the `Head` and the held inputs as
    `{input index: rows}`.

    Raises:
        InputError: an unknown output, head kind or input name, a missing held input, or
            arguments that contradict each other; the message lists what the model has.
    """
    kind = "auto" if head is None else str(head).lower()
    if kind not in HEAD_KINDS:
        raise InputError(f"`head` must be one of {', '.join(HEAD_KINDS)}. Received {head!r}.")
    for name, fn in (("score", score), ("reshape", reshape)):
        if fn is not None and not callable(fn):
            raise InputError(f"`{name}` must be a function. Received {type(fn).__name__}.")
    if score is not None and (output is not None or head is not None):
        raise InputError(
            "`score` replaces `output` and `head` (it receives all outputs); pass one or the other."
        )
    graph = hasattr(model, "_run_through_graph") or isinstance(model, keras.Sequential)
    if not graph:  # subclassed: no symbolic outputs or inputs to pick from
        if output not in (None, 0) or inputs:
            raise InputError(
                f"Model {model.name!r} is subclassed, so its outputs and inputs have no names "
                "to choose from; pass `score=lambda outputs: ...` to pick what is explained."
            )
        return Head(kind=kind, score=score, reshape=reshape), {}
    out_names = _names(model.outputs, getattr(model, "_outputs_struct", None))
    out_index = _index(output, out_names, "output", model)
    if score is None:
        check_scores_shape(model.outputs[out_index].shape, out_names[out_index], model.name)
    in_names = _names(model.inputs, getattr(model, "_inputs_struct", None))
    given = dict(inputs or {})
    unknown = sorted(set(given) - set(in_names))
    if unknown:
        raise InputError(
            f"No input {', '.join(map(repr, unknown))} in model {model.name!r}. Its inputs "
            f"are {', '.join(map(repr, in_names))}."
        )
    free = [i for i, n in enumerate(in_names) if n not in given]
    if len(free) != 1:
        shapes = ", ".join(f"{n!r} {tuple(t.shape)}" for n, t in zip(in_names, model.inputs))
        raise InputError(
            f"Model {model.name!r} has inputs {shapes}. Pass the images as `images` and every "
            "other input in `inputs={name: array}` (one row, or one row per image), so exactly "
            f"one input is left for the images; {len(free)} are left."
        )
    held = {
        i: _held_rows(given[n], model.inputs[i], n) for i, n in enumerate(in_names) if n in given
    }
    return Head(out_index, kind, free[0], score, reshape), held
