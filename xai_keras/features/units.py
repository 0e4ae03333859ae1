"""Which units of which layer: unit specs ("0-15", "0,3,7") and checked layer/unit choices."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers as kl

from xai_keras.errors import InputError, LayerError
from xai_keras.explainers.layers import conv_candidates, output_shape, resolve_layer

__all__ = ["UnitLayer", "parse_units", "relu_input", "unit_layer"]

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_units(
    spec: str | int | Sequence[int], n_units: int | None = None, layer: str | None = None
) -> list[int]:
    """Unit indices from a spec such as "0-15", "0,3,7", "0-3,9", "all", 5 or [1, 2].

    Ranges include both ends; duplicates are dropped, the order is kept. With `n_units` every
    index is checked against the layer's size (and "all" means every unit); `layer` names the
    layer in that error.

    Raises:
        InputError: the spec cannot be read, or an index is out of range.
    """
    if isinstance(spec, bool):
        raise InputError(f"Units must be integers or a spec like '0-15'. Received: {spec!r}.")
    if isinstance(spec, int):
        units = [spec]
    elif isinstance(spec, str):
        units = _parse_spec(spec, n_units)
    else:
        units = [_as_index(u) for u in spec]
    if not units:
        raise InputError("No units given. Pass e.g. '0-15', '0,3,7' or [0, 1].")
    units = list(dict.fromkeys(units))
    if n_units is not None:
        check_units(units, n_units, f"layer {layer!r}" if layer else "the layer")
    return units


def _as_index(u: Any) -> int:
    try:
        if isinstance(u, bool) or int(u) != u:
            raise TypeError
        return int(u)
    except (TypeError, ValueError):
        raise InputError(f"Unit indices must be integers. Received: {u!r}.") from None


def _parse_spec(spec: str, n_units: int | None) -> list[int]:
    """The string form: comma-separated indices and inclusive ranges."""
    text = spec.strip().lower()
    if text == "all":
        if n_units is None:
            raise InputError("'all' units needs the layer's size; pass explicit units instead.")
        return list(range(n_units))
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            units.append(int(part))
            continue
        match = _RANGE.match(part)
        if match is None:
            raise InputError(
                f"Cannot read unit spec {spec!r}: {part!r} is neither an index nor a range. "
                "Write indices and ranges separated by commas, e.g. '0-15', '0,3,7' or '0-3,9'."
            )
        lo, hi = int(match[1]), int(match[2])
        if lo > hi:
            raise InputError(
                f"Cannot read unit spec {spec!r}: the range {part!r} goes down; write '{hi}-{lo}'."
            )
        units.extend(range(lo, hi + 1))
    return units


def check_units(units: Sequence[int], n_units: int, where: str = "the layer") -> None:
    """Raise an InputError naming the valid range if any unit is outside 0..n_units-1."""
    bad = [u for u in units if not 0 <= u < n_units]
    if bad:
        raise InputError(
            f"Unit {bad[0]} is out of range: {where} has {n_units} units, so use 0..{n_units - 1}."
        )


@dataclass(frozen=True)
class UnitLayer:
    """A layer whose units we visualise.

    Attributes:
        path: the layer's path in the model ("block3_relu1", "inner/conv").
        layer: the layer object.
        n_units: channels (spatial layers) or units (dense layers).
        spatial: True for (N, H, W, C) outputs, whose units are channels.
    """

    path: str
    layer: Any
    n_units: int
    spatial: bool


def unit_layer(model: keras.Model, layer: str | Any) -> UnitLayer:
    """Resolve `layer` and read its number of units from its output shape.

    Raises:
        LayerError: no such layer, or its output has no unit axis; the message lists candidates.
    """
    path, obj = resolve_layer(model, layer)
    names = ", ".join(p for p, _ in conv_candidates(model)[-12:])
    if isinstance(obj, kl.InputLayer):
        raise LayerError(
            f"Layer {path!r} is the model's input, which has no units. Use a conv layer "
            f"({names}) or a dense layer such as the logits."
        )
    shape = output_shape(obj) or ()
    if len(shape) < 2 or shape[-1] is None or isinstance(obj, keras.Model):
        raise LayerError(
            f"Layer {path!r} has output shape {shape or 'unknown'}, with no unit axis to "
            f"visualise. Use a conv layer ({names}) or a dense layer such as the logits."
        )
    return UnitLayer(path, obj, int(shape[-1]), len(shape) == 4)


def relu_input(layer: Any) -> Any | None:
    """The layer feeding a stand-alone ReLU layer, else None.

    Maximising a ReLU's input raises the same unit, but its gradient does not vanish where
    the unit is off, so units that are silent on the start image can still be optimised.
    """
    relu = (isinstance(layer, kl.ReLU) and not layer.negative_slope and not layer.threshold) or (
        isinstance(layer, kl.Activation) and getattr(layer.activation, "__name__", "") == "relu"
    )
    if not relu:
        return None
    try:
        below = layer.input._keras_history[0]
    except (AttributeError, ValueError):  # called several times, or never
        return None
    return None if isinstance(below, kl.InputLayer) else below
