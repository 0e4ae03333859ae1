"""Layers inside composite layers: listed, measured and recorded.

KerasHub's encoders are single Keras layers (`ViTEncoder`, `DINOV2Encoder`, a `FusedMBConvBlock`)
whose `call` runs their blocks: the blocks are no nodes of the model's graph, so they have no
symbolic output to read and no node to re-run. This module makes them first-class:

- `children(layer)`: the sublayers a composite layer tracks (its attributes), in creation order;
- `probe(model)`: one symbolic trace of the model with every layer's `call` recorded, giving each
  layer's output shape and the order in which the layers ran (cached per model, weakly: nothing
  is stored on the model);
- `intercept(layers, fn)`: while tracing, route each layer's output through `fn(layer, output)`
  (to keep it, or to change its gradient); the layers' own `call` is restored afterwards;
- `replace_calls(layers, make)`: the general form, for rules that need a layer's inputs too
  (`make(layer, call)` returns the `call` to use while tracing).
- `substitute(layers, fn)`: the same, with `fn` running in place of each layer's `call`
  (propagation rules for the leaf layers of a composite block).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

__all__ = [
    "Probe",
    "children",
    "first_tensor",
    "intercept",
    "is_builtin",
    "probe",
    "replace_calls",
    "substitute",
]


def children(layer: Any) -> list[Any]:
    """The sublayers `layer` tracks directly (none for a leaf layer)."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    return list(flatten(include_self=False, recursive=False))


def is_builtin(layer: Any) -> bool:
    """A layer Keras itself defines (Dense, MultiHeadAttention, ...): its sublayers are its
    own machinery (query/key/value projections), never a feature map to explain."""
    return type(layer).__module__.startswith("keras.")


def first_tensor(value: Any) -> Any:
    """The first tensor of a layer's output (a tuple output's first element: the sequence of
    an encoder that also returns its hidden states or attention)."""
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value


@contextlib.contextmanager
def intercept(layers: list[Any], fn: Callable[[Any, Any], Any]) -> Iterator[None]:
    """Within the block, each layer's output passes through `fn(layer, output)`; the layers'
    `call` is wrapped on the instance and restored on exit (only tracing should happen
    inside: the compiled graph keeps what the wrappers did)."""
    with replace_calls(layers, lambda layer, call: _through(layer, call, fn)):
        yield


@contextlib.contextmanager
def replace_calls(layers: list[Any], make: Callable[[Any, Callable], Callable]) -> Iterator[None]:
    """Within the block, each layer's `call` is `make(layer, its current call)` (set on the
    instance, restored on exit; nested blocks stack). For rules that need a layer's inputs,
    e.g. calling an attention layer with `return_attention_scores=True`."""
    unique = list({id(lay): lay for lay in layers}.values())
    own = [lay.__dict__.get("call") for lay in unique]
    try:
        for lay in unique:
            object.__setattr__(lay, "call", make(lay, lay.call))
        yield
    finally:
        for lay, call in zip(unique, own):
            if call is None:
                object.__delattr__(lay, "call")
            else:
                object.__setattr__(lay, "call", call)


def substitute(layers: list[Any], fn: Callable[..., Any]) -> contextlib.AbstractContextManager:
    """Within the block, each layer's `call(*args, **kwargs)` runs as `fn(layer, call, *args,
    **kwargs)` (`call` is the layer's own): a rule in place of the layer, reached also where
    a composite layer's Python `call` invokes it. Restored on exit, as in `intercept`."""
    return replace_calls(layers, lambda layer, call: _wrapped(layer, call, fn))


def _wrapped(layer: Any, call: Callable, fn: Callable) -> Callable:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return fn(layer, call, *args, **kwargs)

    return wrapped


def _through(layer: Any, call: Callable, fn: Callable) -> Callable:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return fn(layer, call(*args, **kwargs))

    return wrapped


@dataclass
class Probe:
    """What one symbolic trace of a model saw.

    Attributes:
        shapes: id(layer) -> output shape (of its first tensor), None when the layer ran
            several times with different shapes.
        order: id(layer) of each layer in the order it first ran.
    """

    shapes: dict[int, tuple | None] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)

    def rank(self, layer: Any) -> int:
        """Where `layer` first ran (-1: never)."""
        try:
            return self.order.index(id(layer))
        except ValueError:
            return -1


def _as_inputs(model: keras.Model, xs: tuple) -> Any:
    """Tensors in the structure the model was built with (a list, or a dict such as
    KerasHub DINO backbones' {"pixel_values": ...})."""
    struct = model.input
    if isinstance(struct, dict):
        return dict(zip(struct, xs))
    return list(xs) if len(xs) > 1 else xs[0]


_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def probe(model: keras.Model, layers: list[Any]) -> Probe:
    """Trace `model` once on symbolic inputs with `layers` recorded (cached per model)."""
    found = _PROBES.get(model)
    if found is not None:
        return found
    seen = Probe()

    def record(layer: Any, out: Any) -> Any:
        shape = getattr(first_tensor(out), "shape", None)
        shape = None if shape is None or shape.rank is None else (None, *tuple(shape)[1:])
        key = id(layer)
        if key not in seen.shapes:
            seen.order.append(key)
            seen.shapes[key] = shape
        elif seen.shapes[key] != shape:
            seen.shapes[key] = None
        return out

    # A fixed batch size: layers that reshape with the batch size read from the tensor keep
    # static token counts then (the recorded shapes say None for the batch again).
    specs = [tf.TensorSpec((2, *t.shape[1:]), t.dtype) for t in model.inputs]
    with intercept(layers, record):
        fn = tf.function(lambda *xs: model(_as_inputs(model, xs), training=False))
        fn.get_concrete_function(*specs)
    _PROBES[model] = seen
    return seen
