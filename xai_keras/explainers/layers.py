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

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import layers as kl

from xai_keras.errors import LayerError
from xai_keras.explainers.heads import token_grid
from xai_keras.explainers.sublayers import children, first_tensor, is_builtin, probe

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
    "output_shape",
    "layer_shape",
    "resolve_layer",
    "token_layout",
    "walk_layers",
]

# At most this many tokens before the patch grid (class, distillation, register tokens).
MAX_PREFIX_TOKENS = 64

# Never the default layer: they only resample the layer before them.
RESAMPLING = (kl.MaxPooling2D, kl.AveragePooling2D, kl.ZeroPadding2D, kl.Cropping2D)
# Token-wise normalisation: its outputs are centred per token, so a channel-weighted sum of them
# is mostly negative; the residual stream before it is the token models' default instead.
_NORMALISING = (kl.LayerNormalization, kl.GroupNormalization, kl.UnitNormalization)
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


def walk_layers(
    model: keras.Model, prefix: str = "", inner: bool = False
) -> Iterator[tuple[str, Any]]:
    """Yield `(path, layer)` for every layer, depth first, nested models included.

    Paths join the names of enclosing models with "/", e.g. "mobilenetv2/out_relu". With
    `inner`, the sublayers of composite layers are walked too (a KerasHub encoder's blocks:
    "vit_backbone/vit_encoder/transformer_block_1/ln_1"), each after its owner.
    """
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, layer
        if is_graph_model(layer):
            yield from walk_layers(layer, f"{path}/", inner)
        elif inner:
            yield from _walk_inner(layer, f"{path}/")


def _walk_inner(layer: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    for child in children(layer):
        path = f"{prefix}{child.name}"
        yield path, child
        if is_graph_model(child):
            yield from walk_layers(child, f"{path}/", True)
        else:
            yield from _walk_inner(child, f"{path}/")


def output_shape(layer: Any) -> tuple | None:
    """The layer's symbolic output shape (of its first tensor, for a tuple output), or None
    (never called as a graph node, or called several times)."""
    try:
        return tuple(first_tensor(layer.output).shape)
    except (AttributeError, ValueError):
        return None


def _inside_builtin(model: keras.Model) -> set[int]:
    """ids of the layers that are machinery of a built-in Keras layer (a MultiHeadAttention's
    projections): addressable by path, never a feature map to search."""
    hidden: set[int] = set()
    for _, layer in walk_layers(model, inner=True):
        if is_builtin(layer) and not is_graph_model(layer):
            hidden |= {id(lay) for _, lay in _walk_inner(layer, "")}
    return hidden


_LAYOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _layout(model: keras.Model) -> tuple[list[tuple[str, Any]], dict[int, tuple | None]]:
    """Every layer (composite layers' sublayers included) in the order its output is computed,
    with its output shape. Graph models without composite layers are read from their graph;
    otherwise the model is traced once (`sublayers.probe`). Cached per model, weakly."""
    found = _LAYOUTS.get(model)
    if found is not None:
        return found
    every = [
        (p, lay)
        for p, lay in walk_layers(model, inner=True)
        if not isinstance(lay, kl.InputLayer) and not is_graph_model(lay)
    ]
    graph_ids = {id(lay) for _, lay in walk_layers(model)}
    if all(id(lay) in graph_ids for _, lay in every) or not getattr(model, "inputs", None):
        found = every, {id(lay): output_shape(lay) for _, lay in every}
    else:
        seen = probe(model, [lay for _, lay in every])
        shapes = {id(lay): output_shape(lay) or seen.shapes.get(id(lay)) for _, lay in every}
        ran = [(p, lay) for p, lay in every if seen.rank(lay) >= 0]
        found = sorted(ran, key=lambda item: seen.rank(item[1])), shapes
    _LAYOUTS[model] = found
    return found


def layer_shape(model: keras.Model, layer: Any) -> tuple | None:
    """The output shape of any layer of `model`, a composite layer's sublayer included."""
    return output_shape(layer) or _layout(model)[1].get(id(layer))


def token_layout(model: keras.Model, layer: Any, tokens: int) -> tuple[int, int, int] | None:
    """`(prefix, h, w)` for a token layer of `tokens` tokens: the patch grid is the last
    (N, h, w, C) map computed before the layer with h*w <= tokens (the patch embedding), and
    the tokens before it are prefix tokens (class, distillation, registers), read from the
    model rather than guessed from the count; a square grid with at most one prefix token
    where no such map precedes it."""
    order, shapes = _layout(model)
    ids = [id(lay) for _, lay in order]
    before = ids[: ids.index(id(layer))] if id(layer) in ids else ids
    for key in reversed(before):
        shape = shapes.get(key)
        if shape and len(shape) == 4 and None not in shape[1:3]:
            h, w = int(shape[1]), int(shape[2])
            if 0 <= tokens - h * w <= MAX_PREFIX_TOKENS and h * w > 1:
                return tokens - h * w, h, w
    found = token_grid(tokens)
    return None if found is None else (found[1], found[0], found[0])


def _is_spatial(model: keras.Model, layer: Any, shape: tuple | None, any_tokens: bool) -> bool:
    """A grid CAMs can use: (N, H, W, C) larger than 1x1, or (N, T, C) tokens on a patch grid
    (after their prefix tokens), or any tokens when the user reshapes them."""
    if shape is None:
        return False
    if len(shape) == 4:
        return any(d is None or d > 1 for d in shape[1:3])
    if len(shape) != 3 or shape[1] is None:
        return False
    return any_tokens or token_layout(model, layer, int(shape[1])) is not None


def conv_candidates(model: keras.Model) -> list[tuple[str, Any]]:
    """Layers whose output is a spatial grid larger than 1x1 (or tokens on a patch grid), in
    the order they are computed, composite layers' sublayers included: what CAMs can use."""
    order, shapes = _layout(model)
    hidden = _inside_builtin(model) if len(order) > len(model.layers) else set()
    return [
        (path, layer)
        for path, layer in order
        if id(layer) not in hidden and _is_spatial(model, layer, shapes.get(id(layer)), False)
    ]


def is_token_model(model: keras.Model) -> bool:
    """The model's last spatial layer is a token sequence (N, T, C) on a patch grid: a vision
    transformer, whose CAMs and default method are chosen differently."""
    if not is_graph_model(model):
        return False
    usable = [(p, lay) for p, lay in conv_candidates(model) if not isinstance(lay, RESAMPLING)]
    return _ends_in_tokens(model, usable)


def _ends_in_tokens(model: keras.Model, usable: list[tuple[str, Any]]) -> bool:
    return bool(usable) and len(layer_shape(model, usable[-1][1]) or ()) == 3


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
        if not is_graph_model(owners[-1]):  # inside a composite layer: no graph to follow
            return
        owners.append(owners[-1].get_layer(name))
    if not is_graph_model(owners[-1]):
        return
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


def _shape_text(model: keras.Model, layer: Any) -> str:
    shape = layer_shape(model, layer) or ()
    return "x".join(str(d) for d in shape[1:])


def default_layer(
    model: keras.Model, reaches: Callable[[list[Any]], list[bool]] | None = None
) -> LayerChoice:
    """The last spatial layer before the model pools or flattens (pooling and padding layers
    skipped, 1x1 maps never chosen), searched through nested models and composite layers, and
    never a class map when a feature layer precedes it.

    For token models, `reaches(layers)` (a session's gradient probe) says which token layers
    pass the explained score's gradient to their patch tokens: a head that reads only the
    class token after the last block leaves the later layers' patch tokens without gradient
    (their Grad-CAM is all zero), so the default is the last layer that does, the input of
    the last attention: the residual stream entering the last block. (pytorch-grad-cam
    recommends `blocks[-1].norm1`, that stream after LayerNorm; centred per token, it gave
    all-zero Grad-CAMs more often here.)

    Raises:
        LayerError: the model has no spatial layer.
    """
    candidates = conv_candidates(model)
    usable = [(p, lay) for p, lay in candidates if not isinstance(lay, RESAMPLING)]
    if not usable:
        raise LayerError(
            f"Model {model.name!r} has no layer with a spatial (N, H, W, C) output larger "
            "than 1x1 nor tokens on a patch grid, so CAM methods cannot be used. Use a "
            "gradient method such as method='saliency' or 'integrated_gradients'."
        )
    if reaches is not None and _ends_in_tokens(model, usable):
        return _token_default(model, usable, reaches)
    class_maps = set(class_map_layers(model))
    first_map = next((i for i, (p, _) in enumerate(usable) if p in class_maps), None)
    if first_map is None or first_map == 0:
        path, layer = usable[-1]
        note = (
            f" It is a class map ({_shape_text(model, layer)}): no feature layer precedes it."
            if path in class_maps
            else ""
        )
        return LayerChoice(
            path,
            layer,
            f"default: the last spatial layer ({_shape_text(model, layer)}) before the model "
            f"pools.{note}",
        )
    path, layer = usable[first_map - 1]
    skipped, skipped_layer = usable[first_map]
    return LayerChoice(
        path,
        layer,
        f"default: the last feature layer ({_shape_text(model, layer)}) before {skipped!r}, "
        f"whose {_shape_text(model, skipped_layer).split('x')[-1]} channels are the class "
        "scores themselves (a class-conv head: its Grad-CAM would be only the class's own "
        "channel).",
    )


def _token_default(
    model: keras.Model, usable: list[tuple[str, Any]], reaches: Callable
) -> LayerChoice:
    """The last token layer whose patch tokens the score depends on (see `default_layer`)."""
    tokens = [(p, lay) for p, lay in usable if len(layer_shape(model, lay) or ()) == 3]
    reached = reaches([lay for _, lay in tokens])
    last = len(tokens) - 1
    # Where the head reads only prefix tokens, go back to the input of the last block: skip
    # the layers inside a block whose output the score does not depend on (a KerasHub
    # block's attention projections), and token-wise normalisations.
    cut = _last_block(tokens, reached)
    for i in range(last, -1, -1):
        inside = bool(cut) and tokens[i][0].startswith(cut)
        if reached[i] and (i == last or not (inside or isinstance(tokens[i][1], _NORMALISING))):
            path, layer = tokens[i]
            break
    else:
        raise LayerError(
            f"No token layer of model {model.name!r} passes the score's gradient to its patch "
            "tokens (the head reads only prefix tokens that no attention mixes with the "
            "patches?); use a gradient method such as method='saliency'."
        )
    text = _shape_text(model, layer)
    if i == last:
        return LayerChoice(
            path, layer, f"default: the last spatial layer ({text}) before the model pools."
        )
    return LayerChoice(
        path,
        layer,
        f"default: the last token layer ({text}) whose patch tokens the score depends on; the "
        f"head reads only the prefix token(s) after it, so later layers such as "
        f"{tokens[last][0]!r} carry no gradient on the patch grid (all-zero CAMs).",
    )


def _last_block(tokens: list[tuple[str, Any]], reached: list[bool]) -> str:
    """ "path/" of the innermost composite layer (a transformer block) that holds the last
    layer the score reaches although its own output is not reached; "" where none does."""
    hits = [p for (p, _), r in zip(tokens, reached) if r]
    if not hits:
        return ""
    owners = [p for (p, _), r in zip(tokens, reached) if not r and hits[-1].startswith(f"{p}/")]
    return f"{max(owners, key=len)}/" if owners else ""


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
    if isinstance(obj, kl.InputLayer):  # no layer computes it: there is nothing to record
        raise LayerError(
            f"{path!r} is the model's input, not a layer with activations to explain; name a "
            f"layer (candidate conv layers: {describe(candidates)}), or explain the input "
            "with a gradient method such as method='saliency'."
        )
    shape = layer_shape(model, obj)
    if not _is_spatial(model, obj, shape, any_tokens):
        tokens = shape is not None and len(shape) == 3
        fix = "pass `reshape=` a function (N, T, C) -> (N, h, w, C). " if tokens else ""
        raise LayerError(
            f"Layer {path!r} has output shape {shape}, not a spatial (N, H, W, C) map or "
            f"(N, T, C) tokens on a patch grid; {fix}Candidate conv layers: "
            f"{describe(candidates)}."
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
    """Resolve a name, nested path or layer object to `(path, layer)`, whatever its output;
    composite layers' sublayers included ("vit_encoder/transformer_block_1"). A bare name
    matches the model's graph first, then sublayers, where it must be unambiguous.

    Raises:
        LayerError: no such layer (the message lists the candidate conv layers), or a bare
            name shared by several sublayers (it lists their paths).
    """
    graph = list(walk_layers(model))
    inner = [item for item in walk_layers(model, inner=True) if item not in graph]
    if isinstance(layer, str):
        for every in (graph, inner):
            matches = [(p, lay) for p, lay in every if p == layer or p.endswith(f"/{layer}")]
            exact = [(p, lay) for p, lay in matches if p == layer or lay.name == layer]
            if every is graph and exact:
                return exact[0]
            if len(matches) > 1 and not any(p == layer for p, _ in matches):
                shown = ", ".join(p for p, _ in matches[:6])
                raise LayerError(
                    f"Layer name {layer!r} is ambiguous in model {model.name!r}: it names "
                    f"{len(matches)} sublayers ({shown}); pass the full path."
                )
            if matches:
                return next((m for m in matches if m[0] == layer), matches[0])
        what = f"No layer named {layer!r} in model {model.name!r}."
    else:
        found = [(p, lay) for p, lay in graph + inner if lay is layer]
        if found:
            return found[0]
        what = (
            f"The layer object {getattr(layer, 'name', layer)!r} is not part of model "
            f"{model.name!r}."
        )
    raise LayerError(f"{what} Candidate conv layers: {describe(conv_candidates(model))}.")
