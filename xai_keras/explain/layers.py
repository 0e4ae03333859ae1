"""Find the layer to explain: by name, nested path or object; the default; or "auto".

The default is the last spatial layer before the model pools, with one exception learnt on real
models: a *class map* is never the default. A class map is a layer whose channels are the class
scores themselves (a class-conv head: `Conv2D(classes) -> GlobalAveragePooling2D -> softmax`,
as in mini-Xception, SqueezeNet or all-convolutional nets). The gradient of class c there is
one-hot on channel c, so Grad-CAM is nothing but that channel at a coarse grid, and on a real
facial-expression CNN it scored worse than a random map. The default then is the last feature
layer before the class map.

`layer="auto"` goes further: it scores a few candidate layers on the images being explained
with a cheap faithfulness proxy (see `choose_layer`) and keeps the best.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import layers as kl

from xai_keras.errors import LayerError
from xai_keras.explain.heads import token_grid

__all__ = [
    "RESAMPLING",
    "LayerChoice",
    "class_map_layers",
    "conv_candidates",
    "default_layer",
    "downstream",
    "feeds_global_pooling",
    "find_layer",
    "is_graph_model",
    "layer_reason",
    "output_shape",
    "resolve_layer",
    "walk_layers",
]

# Never the default layer: they only resample the layer before them.
RESAMPLING = (kl.MaxPooling2D, kl.AveragePooling2D, kl.ZeroPadding2D, kl.Cropping2D)
_SPATIAL_TYPES = (kl.Conv2D, kl.DepthwiseConv2D, kl.SeparableConv2D, kl.LayerNormalization)
# Layers that act on each channel alone: after them, channel k still only carries channel k.
_CHANNELWISE = (
    kl.GlobalAveragePooling2D,
    kl.GlobalMaxPooling2D,
    kl.MaxPooling2D,
    kl.AveragePooling2D,
    kl.BatchNormalization,
    kl.Activation,
    kl.ReLU,
    kl.LeakyReLU,
    kl.ELU,
    kl.Softmax,
    kl.Dropout,
    kl.Identity,
    kl.Flatten,
)
# Linear and position-independent: the gradient reaching a layer through them to a global
# average pool is the same at every position.
_LINEAR_PASS = (kl.Dropout, kl.Identity, kl.BatchNormalization)


@dataclass(frozen=True)
class LayerChoice:
    """The layer explained and why it was chosen.

    Attributes:
        path: "nested/path" of the layer.
        layer: the layer object.
        reason: one sentence: given by the user, the default (and what it skipped), or "auto"
            with the scores of the candidates.
        scores: for "auto", each candidate's faithfulness proxy (higher is better).
    """

    path: str
    layer: Any
    reason: str
    scores: dict[str, float] = field(default_factory=dict)


def is_graph_model(layer: Any) -> bool:
    """A Functional or Sequential model (a layer graph that can be walked and re-run)."""
    return isinstance(layer, keras.Model) and (
        isinstance(layer, keras.Sequential) or hasattr(layer, "_run_through_graph")
    )


def walk_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield `(path, layer)` for every layer, depth first, nested models included.

    Paths join the names of enclosing models with "/", e.g. "mobilenetv2/out_relu".
    """
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, layer
        if is_graph_model(layer):
            yield from walk_layers(layer, f"{path}/")


def output_shape(layer: Any) -> tuple | None:
    """The layer's symbolic output shape, or None (never called, or called several times)."""
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def _is_spatial(shape: tuple | None, any_tokens: bool = False) -> bool:
    """A grid CAMs can use: (N, H, W, C) larger than 1x1, or (N, T, C) tokens forming a
    square grid (after a class token), or any tokens when the user reshapes them."""
    if shape is None:
        return False
    if len(shape) == 4:
        return any(d is None or d > 1 for d in shape[1:3])
    if len(shape) != 3 or shape[1] is None:
        return False
    return any_tokens or token_grid(shape[1]) is not None


def conv_candidates(model: keras.Model) -> list[tuple[str, Any]]:
    """Layers whose output is a spatial grid larger than 1x1 (or square tokens): what CAMs
    can use."""
    return [
        (path, layer)
        for path, layer in walk_layers(model)
        if not isinstance(layer, kl.InputLayer | keras.Model) and _is_spatial(output_shape(layer))
    ]


def describe(candidates: list[tuple[str, Any]], limit: int = 12) -> str:
    """The candidates' paths, the last `limit` of them, for error messages."""
    names = [p for p, _ in candidates]
    shown = names[-limit:]
    more = f" (and {len(names) - limit} earlier)" if len(names) > limit else ""
    return ", ".join(shown) + more


def downstream(model: keras.Model, path: str) -> Iterator[Any]:
    """The layers after `path` along its single chain of consumers, stepping out of nested
    models whose output it is; stops where the chain branches or the model ends."""
    names = path.split("/")
    owners = [model]
    for name in names[:-1]:
        owners.append(owners[-1].get_layer(name))
    op = owners[-1].get_layer(names[-1])
    while True:
        nodes = op._outbound_nodes
        if not nodes and len(owners) > 1:  # the output of a nested model: continue outside it
            op = owners.pop()
            continue
        if len(nodes) != 1:
            return
        op = nodes[0].operation
        yield op


def _output_widths(model: keras.Model) -> set[int]:
    widths = set()
    for out in getattr(model, "outputs", None) or []:
        shape = tuple(out.shape[1:])
        if len(shape) == 1 and shape[0] is not None:
            widths.add(int(shape[0]))
    return widths


def _is_class_map(model: keras.Model, path: str, layer: Any, widths: set[int]) -> bool:
    shape = output_shape(layer)
    if shape is None or len(shape) != 4 or shape[-1] not in widths:
        return False
    after = list(downstream(model, path))
    return bool(after) and all(isinstance(op, _CHANNELWISE) for op in after)


def class_map_layers(model: keras.Model) -> list[str]:
    """Paths of the spatial layers whose channels are the class scores themselves: only
    channel-wise layers (pooling, activations, normalisation) lie between them and an output
    as wide as their channel count."""
    widths = _output_widths(model)
    return [p for p, lay in conv_candidates(model) if _is_class_map(model, p, lay, widths)]


def feeds_global_pooling(model: keras.Model, path: str) -> bool:
    """Whether `path` reaches a GlobalAveragePooling2D through linear, position-independent
    layers only: then the gradient at the layer is the same at every position, and the CAM
    variants that differ only in how they weigh positions coincide by construction."""
    if not is_graph_model(model):
        return False
    for op in downstream(model, path):
        if isinstance(op, kl.GlobalAveragePooling2D):
            return True
        linear = isinstance(op, kl.Activation) and op.activation is keras.activations.linear
        if not (isinstance(op, _LINEAR_PASS) or linear):
            return False
    return False


def _shape_text(layer: Any) -> str:
    shape = output_shape(layer) or ()
    return "x".join(str(d) for d in shape[1:])


def default_layer(model: keras.Model) -> LayerChoice:
    """The last spatial layer before the model pools or flattens (pooling and padding layers
    skipped, 1x1 maps never chosen), searched through nested models, and never a class map
    when a feature layer precedes it.

    Raises:
        LayerError: the model has no spatial layer.
    """
    candidates = conv_candidates(model)
    usable = [(p, lay) for p, lay in candidates if not isinstance(lay, RESAMPLING)]
    if not usable:
        raise LayerError(
            f"Model {model.name!r} has no layer with a spatial (N, H, W, C) output larger "
            "than 1x1, so CAM methods cannot be used. Use a gradient method such as "
            "method='saliency' or 'integrated_gradients'."
        )
    class_maps = set(class_map_layers(model))
    first_map = next((i for i, (p, _) in enumerate(usable) if p in class_maps), None)
    if first_map is None or first_map == 0:
        path, layer = usable[-1]
        note = (
            f" It is a class map ({_shape_text(layer)}): no feature layer precedes it."
            if path in class_maps
            else ""
        )
        return LayerChoice(
            path,
            layer,
            f"default: the last spatial layer ({_shape_text(layer)}) before the model pools.{note}",
        )
    path, layer = usable[first_map - 1]
    skipped, skipped_layer = usable[first_map]
    return LayerChoice(
        path,
        layer,
        f"default: the last feature layer ({_shape_text(layer)}) before {skipped!r}, whose "
        f"{_shape_text(skipped_layer).split('x')[-1]} channels are the class scores "
        "themselves (a class-conv head: its Grad-CAM would be only the class's own channel).",
    )


def find_layer(
    model: keras.Model, layer: str | Any | None = None, any_tokens: bool = False
) -> tuple[str, Any]:
    """Resolve `layer` (None, a name, a nested path or a layer object) to `(path, layer)`.

    `any_tokens`: accept (N, T, C) layers that are no square grid (the user reshapes them).
    None picks `default_layer`.

    Raises:
        LayerError: the layer is not in the model, or has no spatial output; the message lists
            the candidate layers.
    """
    if not is_graph_model(model):
        return _subclassed_layer(model, layer)
    if layer is None:
        choice = default_layer(model)
        return choice.path, choice.layer
    candidates = conv_candidates(model)
    path, obj = resolve_layer(model, layer)
    if is_graph_model(obj):
        inside = [p for p, _ in candidates if p.startswith(f"{path}/")]
        raise LayerError(
            f"{path!r} is a nested model, not a layer; name a layer inside it, e.g. "
            f"{(inside or [path + '/<layer>'])[-1]!r}."
        )
    shape = output_shape(obj)
    if not _is_spatial(shape, any_tokens):
        tokens = shape is not None and len(shape) == 3
        fix = "pass `reshape=` a function (N, T, C) -> (N, h, w, C). " if tokens else ""
        raise LayerError(
            f"Layer {path!r} has output shape {shape}, not a spatial (N, H, W, C) map or "
            f"square (N, T, C) tokens; {fix}Candidate conv layers: {describe(candidates)}."
        )
    return path, obj


def _subclassed_layer(model: keras.Model, layer: str | Any | None) -> tuple[str, Any]:
    """A subclassed model has no graph to search: the layer must be named, and is then found
    among the sublayers it tracks (its attributes)."""
    every = {lay.name: lay for lay in model._flatten_layers(include_self=False)}
    spatial = [n for n, lay in every.items() if isinstance(lay, _SPATIAL_TYPES)]
    hint = f"Its conv-like sublayers: {', '.join(spatial) or 'none'}."
    if layer is None:
        raise LayerError(
            f"Model {model.name!r} is a subclassed keras.Model: its layer graph cannot be read, "
            f"so name the layer to explain, e.g. layer={spatial[-1] if spatial else 'conv'!r} "
            f"or the layer object (layer=model.<attribute>). {hint}"
        )
    if isinstance(layer, str):
        if layer not in every:
            raise LayerError(f"No sublayer named {layer!r} in model {model.name!r}. {hint}")
        return layer, every[layer]
    if all(layer is not lay for lay in every.values()):
        raise LayerError(
            f"The layer object {getattr(layer, 'name', layer)!r} is not a sublayer of model "
            f"{model.name!r}. {hint}"
        )
    return layer.name, layer


def resolve_layer(model: keras.Model, layer: str | Any) -> tuple[str, Any]:
    """Resolve a name, nested path or layer object to `(path, layer)`, whatever its output.

    Raises:
        LayerError: no such layer; the message lists the candidate conv layers.
    """
    every = list(walk_layers(model))
    if isinstance(layer, str):
        matches = [(p, lay) for p, lay in every if p == layer or lay.name == layer]
        what = f"No layer named {layer!r} in model {model.name!r}."
    else:
        matches = [(p, lay) for p, lay in every if lay is layer]
        what = (
            f"The layer object {getattr(layer, 'name', layer)!r} is not part of model "
            f"{model.name!r}."
        )
    if not matches:
        raise LayerError(f"{what} Candidate conv layers: {describe(conv_candidates(model))}.")
    return matches[0]


def layer_reason(model: keras.Model, layer: str | Any | None, path: str | None) -> str:
    """Why `path` is explained: the default's reason, or "given" for a user's layer."""
    if path is None:
        return ""
    if layer is None and is_graph_model(model):
        return default_layer(model).reason
    return f"given: layer={path!r}."
