"""Run a user's model while catching one layer's activation, without changing or cloning it.

`ModelRunner(model, layer, guided=False)` re-executes the model's own layer graph (descending
into nested Functional/Sequential models), so it can

- hand back the activation of any layer, also one inside a nested model,
- stop before a final softmax/sigmoid and return logits (as tf-keras-vis' `ReplaceToLinear`
  does, but without touching the model),
- route gradients through guided ReLUs (guided backprop) by wrapping each ReLU's output,
- read the output a `Head` names (one of several outputs, a single sigmoid unit as two
  classes, a user's score function), with a multi-input model's other inputs held fixed.

Layers the graph does not reach (a subclassed model's, or the blocks inside a composite layer
such as a KerasHub encoder) get their `call` wrapped while the compiled kernel is traced, then
restored (`sublayers.intercept`): the layer to record, the taps and, for guided backprop, the
ReLUs.

Its compiled kernels (`tf.function`s) are built once per runner and traced once per input shape.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers as kl

from xai_keras.errors import InputError, LayerError
from xai_keras.explainers.heads import Head, check_scores_shape
from xai_keras.explainers.layers import (
    is_graph_model,
    resolve_layer,
    token_layout,
    walk_layers,
)
from xai_keras.explainers.sublayers import first_tensor, intercept

# Python bookkeeping called while kernels trace: never autograph it. (Converting WeakMethod's
# `super().__call__()` makes autograph read every calling frame's locals, which then keeps
# the caller's objects alive.)
_token_layout = tf.autograph.experimental.do_not_convert(token_layout)
_dereference = tf.autograph.experimental.do_not_convert(lambda target: target())

__all__ = ["LayerTaps", "ModelRunner", "hold_inputs", "model_store"]


class _QuietOwnKernelTraces(logging.Filter):
    """TensorFlow warns about "retracing" when several tf.functions built from one Python
    function trace close together. Our kernels are one per method and runner, each traced
    once per input shape (the tests count traces), so for them the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "xai_keras" in message)


tf.get_logger().addFilter(_QuietOwnKernelTraces())

_SQUASHING = ("softmax", "sigmoid")


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


def _output_layer(model: keras.Model, index: int = 0) -> tuple[Any, int]:
    """The layer that produces output `index`, and which of its outputs it is."""
    if isinstance(model, keras.Sequential):
        return model.layers[-1], 0
    history = model.outputs[index]._keras_history
    return history[0], history[2]


def _linear_head(model: keras.Model, index: int = 0) -> tuple[dict[int, Callable], str]:
    """Substitutions that drop a final softmax/sigmoid of output `index`, and which one was
    dropped ("softmax", "sigmoid", or "" when the output is used as it is)."""
    last, which = _output_layer(model, index)
    if is_graph_model(last):
        return _linear_head(last, which)
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "")
    if isinstance(last, kl.Softmax):
        name = "softmax"
    if name not in _SQUASHING:
        return {}, ""
    if isinstance(last, (kl.Softmax, kl.Activation)):
        return {id(last): lambda x, *a, **k: x}, name
    if isinstance(last, kl.Dense):

        def dense_logits(x, *args, **kwargs):
            dtype = last.compute_dtype  # as Keras' autocasting would (mixed precision)
            y = tf.matmul(tf.cast(x, dtype), tf.cast(last.kernel, dtype))
            return y + tf.cast(last.bias, dtype) if last.bias is not None else y

        return {id(last): dense_logits}, name
    return {}, ""


def _unpack(out: Any) -> Any:
    """What a Functional model's call returns for `out`: a lone output without its list."""
    return out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out


_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_store(model: keras.Model) -> dict:
    """The library's per-model caches (compiled runners, held inputs), kept beside the model
    rather than on it: nothing is set on a user's model, and they go when the model goes
    (runners hold their model weakly, so they do not keep it alive)."""
    store = _STORES.get(model)
    if store is None:
        store = _STORES[model] = {}
    return store


def hold_inputs(model: keras.Model, rows: dict[int, np.ndarray]) -> None:
    """Set the values of a multi-input model's non-image inputs for the next passes.

    They live in variables kept per model (one per input, any number of rows), which the
    compiled kernels read, so changing them between calls does not retrace.
    """
    held = model_store(model).setdefault("held", {})
    for index, value in rows.items():
        var = held.get(index)
        if var is None or var.dtype != tf.as_dtype(value.dtype):
            spec = tf.TensorShape([None, *value.shape[1:]])
            held[index] = tf.Variable(value, shape=spec, trainable=False)
        else:
            var.assign(value)


class _Kernel:
    """A runner's compiled kernel with the function it runs: whoever holds this keeps the
    function alive (the runner holds it weakly), and calling it makes it the function a
    retrace runs. Attributes are the `tf.function`'s."""

    def __init__(self, runner: ModelRunner, name: str, fn: Callable):
        self._runner, self._name, self._fn = runner, name, fn
        self._compiled = runner._kernels[name]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._runner._target(self._name, self._fn)
        return self._compiled(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._compiled, name)


class ModelRunner:
    """Re-runs `model` returning `(activation of layer, scores)`; see the module docstring.

    Args:
        model: a Functional or Sequential Keras model (nested models are followed), or a
            subclassed one (then `layer` is recorded by wrapping its `call` while tracing).
        layer: the layer whose activation to return (an object from `find_layer`), or None.
        guided: route gradients through guided ReLUs.
        head: which output is explained and how (see `Head`).
        jit_compile: compile the kernels with XLA.
    """

    def __init__(
        self,
        model: keras.Model,
        layer: Any = None,
        guided: bool = False,
        head: Head | None = None,
        jit_compile: bool = False,
    ):
        head = head or Head()
        self._model = weakref.ref(model)  # see `model_store`: the cache must not keep it alive
        self.layer, self.guided, self.head = layer, guided, head
        self.jit_compile = jit_compile
        self.graph = is_graph_model(model)
        subs, dropped = {}, ""
        if self.graph and head.score is None and head.kind != "linear":
            subs, dropped = _linear_head(model, head.output)
        kind = "score" if head.score is not None else head.kind
        if kind == "auto":
            kind = dropped or ("linear" if self._output_width() == 1 else "auto")
        self._subs, self.kind = subs, kind
        self.score_kind = "score" if head.score is not None else ("logits" if subs else "output")
        self.taps: dict[int, Any] = {}  # extra layers `LayerTaps` records
        self._inner: list[Any] | None = None  # see `_unreached`
        self.outputs_are_probabilities: bool | None = None  # see `decide_squash`
        self._kernels: dict[str, Callable] = {}
        self._targets: dict[str, Callable] = {}  # what each kernel runs (see `kernel`)
        self.forward_fn = self.kernel("forward_logits", self._logits_only)
        self.layer_grads_fn = self.kernel("layer_grads", self._layer_grads)
        self.input_grads_fn = self.kernel("input_grads", self._input_grads)

    @property
    def model(self) -> keras.Model:
        """The model this runner re-runs."""
        return self._model()

    def _output_width(self) -> int | None:
        if not self.graph:
            return None
        return int(np.prod(self.model.outputs[self.head.output].shape[1:]))

    @property
    def num_scores(self) -> int | None:
        """The number of score columns (what `targets` index), or None if unknown before a
        pass (subclassed models). Refuses an output with spatial dimensions (a segmentation
        map is no row of class scores); layer readers (features, analysis) never ask, so they
        take any model."""
        if self.kind == "score":
            return 1
        if self.graph:
            out = self.model.outputs[self.head.output]
            history = getattr(out, "_keras_history", None)
            name = history[0].name if history else self.head.output
            check_scores_shape(out.shape, name, self.model.name)
        width = self._output_width()
        return 2 if width == 1 and self.kind == "sigmoid" else width

    # -- graph execution -------------------------------------------------------------
    def _record(self, op: Any, y: Any, captured: dict) -> Any:
        """After `op` ran: guide its ReLU, and keep its output if it is the layer or a tap."""
        if self.guided and _ends_in_relu(op):
            y = _guided_identity(y)
        if op is self.layer:
            captured["activation"] = first_tensor(y)
        if id(op) in self.taps:
            captured[id(op)] = y
        return y

    def _op(self, op: Any, captured: dict) -> Callable:
        sub = self._subs.get(id(op))
        if sub is not None:
            if id(op) not in self.taps:
                return sub

            def tapped_sub(*args, **kwargs):
                captured[id(op)] = y = sub(*args, **kwargs)
                return y

            return tapped_sub
        if is_graph_model(op):
            return lambda *args, **kwargs: _unpack(
                self._run(op, args[0] if len(args) == 1 else args, captured)
            )

        def call(*args, **kwargs):
            if getattr(op, "_call_has_training_arg", False):
                kwargs["training"] = False
            return self._record(op, op(*args, **kwargs), captured)

        return call

    def _run(self, model: keras.Model, x: Any, captured: dict) -> Any:
        if isinstance(model, keras.Sequential):
            for layer in model.layers:
                x = self._op(layer, captured)(x)
            return x
        return model._run_through_graph(x, operation_fn=lambda op: self._op(op, captured))

    def _unreached(self) -> list[Any]:
        """The layers to record that the graph re-run does not reach: all of them for a
        subclassed model, else those inside composite layers (and their guided ReLUs)."""
        if self._inner is None:
            graph = {id(lay) for _, lay in walk_layers(self.model)} if self.graph else set()
            watched = [self.layer, *self.taps.values()]
            if self.guided:
                inner = [lay for _, lay in walk_layers(self.model, inner=True)]
                pool = inner if self.graph else self.model._flatten_layers()
                watched += [lay for lay in pool if _ends_in_relu(lay)]
            self._inner = [
                lay
                for lay in watched
                if lay is not None and lay is not self.model and id(lay) not in graph
            ]
        return self._inner

    def _model_inputs(self, x: tf.Tensor) -> Any:
        """The images, with any held inputs (one row repeated, or one per image) beside."""
        count = len(self.model.inputs)
        if count == 1:
            return x
        held = model_store(self.model).get("held", {})
        batch = tf.shape(x)[0]
        values = []
        for i in range(count):
            if i == self.head.image_input:
                values.append(x)
            elif i not in held:
                raise InputError(f"Input {i} of model {self.model.name!r} was not given.")
            else:
                rows = held[i].value()
                values.append(tf.repeat(rows, batch // tf.shape(rows)[0], axis=0))
        return values

    def forward(
        self, x: tf.Tensor, captured: dict | None = None
    ) -> tuple[tf.Tensor | None, tf.Tensor]:
        """One pass: `(activation of the layer or None, scores (N, classes) float32)`;
        tapped layers' outputs land in `captured`."""
        captured = {} if captured is None else captured
        with intercept(self._unreached(), lambda op, y: self._record(op, y, captured)):
            if self.graph:
                out = _unpack(self._run(self.model, self._model_inputs(x), captured))
            else:
                out = self.model(x, training=False)
        if self.head.score is not None:
            scores = tf.reshape(self.head.score(out), (-1, 1))
        else:
            scores = keras.tree.flatten(out)[self.head.output]
            scores = tf.reshape(scores, (tf.shape(scores)[0], -1))
            if self.kind == "sigmoid" and scores.shape[-1] == 1:
                scores = tf.concat([-scores, scores], axis=-1)  # class 0: the negative logit
        return captured.get("activation"), tf.cast(scores, tf.float32)

    def to_grid(self, a: tf.Tensor) -> tf.Tensor:
        """A captured activation as a float32 (N, h, w, C) grid: token layers (N, T, C) are
        reshaped by `head.reshape`, or onto their patch grid with the prefix tokens (class,
        distillation, registers) dropped (`layers.token_layout`)."""
        if a.shape.rank == 3:
            if self.head.reshape is not None:
                a = self.head.reshape(a)
            else:
                layout = _token_layout(self.model, self.layer, int(a.shape[1]))
                if layout is None:
                    raise LayerError(
                        f"Layer {self.layer.name!r} outputs {a.shape[1]} tokens, which no patch "
                        "grid of the model accounts for; pass `reshape=` a function "
                        "(N, T, C) -> (N, h, w, C)."
                    )
                skip, h, w = layout
                a = tf.reshape(a[:, skip:], (-1, h, w, a.shape[-1]))
        return tf.cast(a, tf.float32)

    def decide_squash(self, scores: tf.Tensor) -> None:
        """Learn from one batch of eager scores whether an "auto" head's outputs already are
        probabilities (a softmax inside a custom layer leaves nothing to strip). `Session`
        calls it on the first images it sees, before any compiled kernel squashes."""
        out = np.asarray(scores)
        self.outputs_are_probabilities = bool(
            out.min() >= 0
            and (np.allclose(out.sum(-1), 1, atol=1e-3) or (out.shape[-1] == 1 and out.max() <= 1))
        )

    def squash(self, scores: tf.Tensor) -> tf.Tensor:
        """Probabilities (or values) from the scores `forward` returns: softmax or sigmoid of
        logits, the values themselves for linear heads and score functions, and for an "auto"
        head with nothing to strip what `decide_squash` learnt (a softmax when undecided)."""
        if self.kind in ("softmax", "sigmoid"):
            return tf.nn.softmax(scores) if self.kind == "softmax" else tf.sigmoid(scores)
        if self.kind in ("linear", "score"):
            return scores
        if self.outputs_are_probabilities is None and tf.executing_eagerly():
            self.decide_squash(scores)
        if self.outputs_are_probabilities:
            return scores
        return tf.sigmoid(scores) if scores.shape[-1] == 1 else tf.nn.softmax(scores)

    def kernel(self, name: str, fn: Callable) -> Callable:
        """`tf.function(fn)`, built once per runner under `name`.

        Method objects are created on every `explain` call; keeping their compiled per-batch
        kernels here (the runner lives as long as the model) means a second call on the same
        input shape reuses the trace instead of tracing again. `fn` must depend only on the
        runner's model and layer and on its arguments. With `jit_compile` XLA compiles it.

        A method's bound `fn` is held weakly (the latest one given under `name` traces): the
        method holds its session and so the model, and the runner lives in a store that must
        not keep the model alive (`model_store`).
        """
        self._target(name, fn)
        if name not in self._kernels:

            def trampoline(*args: Any, **kwargs: Any) -> Any:
                return _dereference(self._targets[name])(*args, **kwargs)

            self._kernels[name] = tf.function(trampoline, jit_compile=self.jit_compile or None)
        return _Kernel(self, name, fn)

    def _target(self, name: str, fn: Callable) -> None:
        """What kernel `name` runs when it traces: `fn`, held weakly if it is another
        object's bound method."""
        if inspect.ismethod(fn) and fn.__self__ is not self:
            self._targets[name] = weakref.WeakMethod(fn)
        else:
            self._targets[name] = lambda fn=fn: fn

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
        """(activation, d target score / d activation, scores, targets); the activation and
        its gradient as float32 grids (`to_grid`)."""
        return self.score_grads(x, targets)

    def score_grads(self, x: tf.Tensor, targets: tf.Tensor, score: Callable | None = None) -> tuple:
        """As `_layer_grads`, differentiating `score(logits, targets) -> (B,)` (default: the
        target logit), for CAMs that explain another score (Finer-CAM, ShapleyCAM)."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            activation, logits = self.forward(x)
            targets, y = self._pick(logits, targets)
            if score is not None:
                y = score(logits, targets)
        grads = tape.gradient(y, activation)
        if grads is None:
            raise LayerError(
                f"The explained score does not depend on layer {self.layer.name!r} (it is not "
                "on the path to the chosen output); pick a layer before that output."
            )
        return self.to_grid(activation), self.to_grid(grads), logits, targets

    def _input_grads(self, x: tf.Tensor, targets: tf.Tensor) -> tuple:
        """(d target logit / d input, logits, targets)."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            _, logits = self.forward(x)
            targets, y = self._pick(logits, targets)
        return tape.gradient(y, x), logits, targets


class LayerTaps(ModelRunner):
    """The activations of several layers (nested ones and composite layers' sublayers
    included) and the logits, in one pass.

    Used where many layers are read at once (layer analysis, feature maps, the token-model
    default); `__call__` is compiled and returns `([activation per layer, in the order given],
    logits)`.
    """

    def __init__(self, model: keras.Model, layers: list[str | Any], head: Head | None = None):
        super().__init__(model, head=head)
        self.paths, objs = zip(*(resolve_layer(model, lay) for lay in layers), strict=True)
        self.layers = list(objs)
        self.taps = {id(lay): lay for lay in self.layers}
        self._fn = tf.function(self._tapped)

    def _tapped(self, x: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
        captured: dict = {}
        _, scores = self.forward(x, captured)
        return [first_tensor(captured[id(lay)]) for lay in self.layers], scores

    def __call__(self, x: Any) -> tuple[list[tf.Tensor], tf.Tensor]:
        return self._fn(tf.convert_to_tensor(x, tf.float32))

    def patch_gradients(self, x: Any) -> list[bool]:
        """For each token layer: does the top class's score send gradient to its patch tokens
        (prefix tokens excluded) on images `x`? Untraced: it runs once per model."""
        x = tf.convert_to_tensor(x, tf.float32)
        with tf.GradientTape() as tape:
            captured: dict = {}
            _, logits = self.forward(x, captured)
            acts = [first_tensor(captured.get(id(lay))) for lay in self.layers]
            _, y = self._pick(logits, -tf.ones(tf.shape(x)[:1], tf.int32))
        grads = tape.gradient(y, [a for a in acts if a is not None])
        found = iter(grads)
        reached = []
        for act in acts:
            grad = None if act is None else next(found)
            if grad is None or grad.shape.rank != 3:
                reached.append(False)
                continue
            layout = _token_layout(self.model, self.layers[len(reached)], int(grad.shape[1]))
            skip = layout[0] if layout else 0
            reached.append(bool(tf.reduce_any(grad[:, skip:] != 0)))
        return reached
