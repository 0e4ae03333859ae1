"""Run a user's model while catching one layer's activation, without changing or cloning it.

`ModelRunner(model, layer, guided=False)` re-executes the model's own layer graph (descending
into nested Functional/Sequential models), so it can

- hand back the activation of any layer, also one inside a nested model,
- stop before a final softmax/sigmoid and return logits (as tf-keras-vis' `ReplaceToLinear`
  does, but without touching the model),
- route gradients through guided ReLUs (guided backprop) by wrapping each ReLU's output.

Its compiled kernels (`tf.function`s) are built once per runner and traced once per input shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers as kl

from xai_keras.errors import LayerError

__all__ = [
    "LayerTaps",
    "ModelRunner",
    "conv_candidates",
    "find_layer",
    "resolve_layer",
    "walk_layers",
]


class _QuietOwnKernelTraces(logging.Filter):
    """TensorFlow warns about "retracing" when several tf.functions built from one Python
    function trace close together. Our kernels are one per method and runner, each traced
    once per input shape (the tests count traces), so for them the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "xai_keras" in message)


tf.get_logger().addFilter(_QuietOwnKernelTraces())

# Never the default layer: they only resample the layer before them.
_RESAMPLING = (kl.MaxPooling2D, kl.AveragePooling2D, kl.ZeroPadding2D, kl.Cropping2D)
_SQUASHING = ("softmax", "sigmoid")


def _is_graph_model(layer: Any) -> bool:
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
        if _is_graph_model(layer):
            yield from walk_layers(layer, f"{path}/")


def _output_shape(layer: Any) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # layer never called, or called several times
        return None


def conv_candidates(model: keras.Model) -> list[tuple[str, Any]]:
    """Layers whose output is a spatial grid (rank 4, larger than 1x1): what CAMs can use."""
    found = []
    for path, layer in walk_layers(model):
        shape = _output_shape(layer)
        if shape is None or len(shape) != 4 or _is_graph_model(layer):
            continue
        h, w = shape[1], shape[2]
        if (h is None or h > 1) or (w is None or w > 1):
            found.append((path, layer))
    return found


def _describe(candidates: list[tuple[str, Any]], limit: int = 12) -> str:
    names = [p for p, _ in candidates]
    shown = names[-limit:]
    more = f" (and {len(names) - limit} earlier)" if len(names) > limit else ""
    return ", ".join(shown) + more


def find_layer(model: keras.Model, layer: str | Any | None = None) -> tuple[str, Any]:
    """Resolve `layer` (None, a name, a nested path or a layer object) to `(path, layer)`.

    None picks the last spatial layer before the model pools or flattens (pooling and padding
    layers are skipped, 1x1 maps are never chosen), searched through nested models.

    Raises:
        LayerError: the layer is not in the model, or has no spatial output; the message lists
            the candidate layers.
    """
    candidates = conv_candidates(model)
    if layer is None:
        usable = [(p, lay) for p, lay in candidates if not isinstance(lay, _RESAMPLING)]
        if not usable:
            raise LayerError(
                f"Model {model.name!r} has no layer with a spatial (N, H, W, C) output larger "
                "than 1x1, so CAM methods cannot be used. Use a gradient method such as "
                "method='saliency' or 'integrated_gradients'."
            )
        return usable[-1]
    path, obj = resolve_layer(model, layer)
    if all(obj is not lay for _, lay in candidates):
        raise LayerError(
            f"Layer {path!r} has output shape {_output_shape(obj)}, not a spatial "
            f"(N, H, W, C) map. Candidate conv layers: {_describe(candidates)}."
        )
    return path, obj


@tf.custom_gradient
def _guided_identity(x: tf.Tensor) -> tuple[tf.Tensor, Callable]:
    """Identity whose gradient lets only positive signals through (guided backprop).

    Placed after a ReLU, whose own gradient already masks negative inputs, the pair gives
    the guided-ReLU rule: grad_in = grad_out * (input > 0) * (grad_out > 0).
    """
    return tf.identity(x), tf.nn.relu


def _ends_in_relu(layer: Any) -> bool:
    if isinstance(layer, kl.ReLU):
        return layer.max_value is None and not layer.negative_slope and not layer.threshold
    return getattr(layer, "activation", None) is keras.activations.relu


def _output_layer(model: keras.Model) -> Any:
    if isinstance(model, keras.Sequential):
        return model.layers[-1]
    return model.outputs[0]._keras_history[0]


def _linear_head(model: keras.Model) -> tuple[dict[int, Callable], str]:
    """Substitutions that drop a final softmax/sigmoid, and the kind of score left.

    Returns `({id(layer): replacement}, score_kind)`, with score_kind "logits" when the
    squashing was removed and "output" when the model's output is used as it is.
    """
    last = _output_layer(model)
    if _is_graph_model(last):
        subs, kind = _linear_head(last)
        return subs, kind
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "")
    if isinstance(last, kl.Softmax) or (isinstance(last, kl.Activation) and name in _SQUASHING):
        return {id(last): lambda x, *a, **k: x}, "logits"
    if isinstance(last, kl.Dense) and name in _SQUASHING:

        def dense_logits(x, *args, **kwargs):
            y = tf.matmul(x, last.kernel)
            return y + last.bias if last.bias is not None else y

        return {id(last): dense_logits}, "logits"
    return {}, "output"


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
        raise LayerError(f"{what} Candidate conv layers: {_describe(conv_candidates(model))}.")
    return matches[0]


class ModelRunner:
    """Re-runs `model` returning `(activation of layer, logits)`; see the module docstring.

    Args:
        model: a Functional or Sequential Keras model (nested models are followed).
        layer: the layer whose activation to return (an object from `find_layer`), or None.
        guided: route gradients through guided ReLUs.
    """

    def __init__(self, model: keras.Model, layer: Any = None, guided: bool = False):
        if not _is_graph_model(model):
            raise LayerError(
                f"Model {model.name!r} is a subclassed model; its layers cannot be traced. "
                "Wrap it in a Functional model (keras.Model(inputs, outputs))."
            )
        self.model, self.layer, self.guided = model, layer, guided
        self._subs, self.score_kind = _linear_head(model)
        self.taps: dict[int, Any] = {}  # extra layers `LayerTaps` records
        self.outputs_are_probabilities: bool | None = None  # learnt on the first `squash`
        self._kernels: dict[str, Callable] = {}
        self.forward_fn = tf.function(self._logits_only)
        self.layer_grads_fn = tf.function(self._layer_grads)
        self.input_grads_fn = tf.function(self._input_grads)

    # -- graph execution -------------------------------------------------------------
    def _op(self, op: Any, captured: dict) -> Callable:
        sub = self._subs.get(id(op))
        if sub is not None:
            if id(op) not in self.taps:
                return sub

            def tapped_sub(*args, **kwargs):
                captured[id(op)] = y = sub(*args, **kwargs)
                return y

            return tapped_sub
        if _is_graph_model(op):
            return lambda *args, **kwargs: self._run(
                op, args[0] if len(args) == 1 else args, captured
            )

        def call(*args, **kwargs):
            if getattr(op, "_call_has_training_arg", False):
                kwargs["training"] = False
            y = op(*args, **kwargs)
            if self.guided and _ends_in_relu(op):
                y = _guided_identity(y)
            if op is self.layer:
                captured["activation"] = y
            if id(op) in self.taps:
                captured[id(op)] = y
            return y

        return call

    def _run(self, model: keras.Model, x: Any, captured: dict) -> Any:
        if isinstance(model, keras.Sequential):
            for layer in model.layers:
                x = self._op(layer, captured)(x)
            return x
        out = model._run_through_graph(x, operation_fn=lambda op: self._op(op, captured))
        return out[0] if isinstance(out, (list, tuple)) else out

    def forward(self, x: tf.Tensor) -> tuple[tf.Tensor | None, tf.Tensor]:
        """One pass: `(activation of the layer or None, logits (N, classes))`."""
        captured: dict = {}
        logits = self._run(self.model, x, captured)
        logits = tf.reshape(logits, (tf.shape(logits)[0], -1))
        return captured.get("activation"), logits

    def squash(self, scores: tf.Tensor) -> tf.Tensor:
        """Probabilities from the scores `forward` returns: softmax (sigmoid for one unit) of
        logits, unless the model's own outputs already are probabilities (e.g. a softmax the
        runner could not strip, inside a custom layer). That is decided from the first batch
        seen in eager mode (call once outside `tf.function`)."""
        if self.outputs_are_probabilities is None:
            out = scores.numpy() if tf.executing_eagerly() else None
            self.outputs_are_probabilities = bool(
                self.score_kind == "output"
                and out is not None
                and out.min() >= 0
                and (
                    np.allclose(out.sum(-1), 1, atol=1e-3)
                    or (out.shape[-1] == 1 and out.max() <= 1)
                )
            )
        if self.outputs_are_probabilities:
            return scores
        return tf.sigmoid(scores) if scores.shape[-1] == 1 else tf.nn.softmax(scores)

    def probabilities(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """(N, classes) probabilities from the compiled forward pass, in fixed-size batches
        (the last one padded, so the pass is traced once per batch shape)."""
        x = tf.convert_to_tensor(x, tf.float32)
        n = int(x.shape[0])
        size = min(batch_size, n)
        parts = []
        for start in range(0, n, size):
            xb = x[start : start + size]
            real = int(xb.shape[0])
            if real < size:
                xb = tf.concat([xb, tf.repeat(xb[-1:], size - real, axis=0)], axis=0)
            parts.append(self.forward_fn(xb)[:real])
        return self.squash(tf.concat(parts, axis=0)).numpy()  # eager: decides how to squash

    def kernel(self, name: str, fn: Callable) -> Callable:
        """`tf.function(fn)`, built once per runner under `name`.

        Method objects are created on every `explain` call; keeping their compiled per-batch
        kernels here (the runner lives as long as the model) means a second call on the same
        input shape reuses the trace instead of tracing again. `fn` must depend only on the
        runner's model and layer and on its arguments.
        """
        if name not in self._kernels:
            self._kernels[name] = tf.function(fn)
        return self._kernels[name]

    # -- compiled kernels --------------------------------------------------------------
    @staticmethod
    def resolve_targets(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """The one rule for targets: a negative target means "the top class"."""
        top = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return tf.where(targets < 0, top, targets)

    @classmethod
    def _pick(cls, logits: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(resolved targets, their logits)."""
        targets = cls.resolve_targets(logits, targets)
        return targets, tf.gather(logits, targets, batch_dims=1)

    def _logits_only(self, x: tf.Tensor) -> tf.Tensor:
        return self.forward(x)[1]

    def _layer_grads(self, x: tf.Tensor, targets: tf.Tensor) -> tuple:
        """(activation, d target logit / d activation, logits, targets)."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            activation, logits = self.forward(x)
            targets, y = self._pick(logits, targets)
        return activation, tape.gradient(y, activation), logits, targets

    def _input_grads(self, x: tf.Tensor, targets: tf.Tensor) -> tuple:
        """(d target logit / d input, logits, targets)."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            _, logits = self.forward(x)
            targets, y = self._pick(logits, targets)
        return tape.gradient(y, x), logits, targets


class LayerTaps(ModelRunner):
    """The activations of several layers (nested ones included) and the logits, in one pass.

    Used where many layers are read at once (layer analysis, feature maps); `__call__` is
    compiled and returns `([activation per layer, in the order given], logits)`.
    """

    def __init__(self, model: keras.Model, layers: list[str | Any]):
        super().__init__(model)
        self.paths, objs = zip(*(resolve_layer(model, lay) for lay in layers), strict=True)
        self.layers = list(objs)
        self.taps = {id(lay): lay for lay in self.layers}
        self._fn = tf.function(self._tapped)

    def _tapped(self, x: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
        captured: dict = {}
        logits = self._run(self.model, x, captured)
        logits = tf.reshape(logits, (tf.shape(logits)[0], -1))
        return [captured[id(lay)] for lay in self.layers], logits

    def __call__(self, x: Any) -> tuple[list[tf.Tensor], tf.Tensor]:
        return self._fn(tf.convert_to_tensor(x, tf.float32))
