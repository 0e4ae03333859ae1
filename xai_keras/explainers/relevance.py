"""Relevance methods: Layer-wise Relevance Propagation (LRP) and DeepLIFT (rescale rule).

Both re-run the model's own layer graph (as guided backprop does; the model is never cloned or
changed) with each layer replaced by a function whose value is the layer's output and whose
gradient is the method's propagation rule ("modified gradients"). The attributions are then
one gradient pass, compiled and batched like the gradient family.

LRP in gradient form: the relevance of a tensor t is R_t = t * g_t, where g_t is the modified
gradient arriving at t. The explained logit y starts with R = y (gradient 1). An affine stage
z = W x + b with a rule that uses modified weights W' (and bias b') returns
    out = z' * sg(z / stab(z')) + sg(...)   with z' = W' x + b',
whose value is z and whose gradient is W'^T (R_z / z'): exactly the rule
R_x = x * W'^T (R_z / z'). LRP-0 is then the plain gradient (so LRP-0 = gradient x input),
ReLU, max pooling (winner takes all), average pooling, Add and Concatenate (proportional
splits) are their plain gradients too. Other element-wise activations pass relevance through
unchanged. A batch normalisation directly after a conv/dense layer is folded into it (the
rules then see the combined affine map); a BatchNormalization elsewhere is LRP-0 (gradient).

Beyond the plain CNN layers (one table, `LAYER_RULES`, maps each layer type to its rule):
- gating products (squeeze-excitation, `x * sigmoid(...)`): the gate is a constant, so the
  relevance flows only through the gated signal, none into the gate's branch (Arras et al.
  2017 for LSTM gates; Montavon et al. 2019; zennit's and LXT's convention). In the graph the
  gate is the broadcast factor of a Multiply; inside a composite layer, whose products are
  Python code, a sigmoid/hard-sigmoid output is the gate;
- padding, Split, GetItem, Reshape/transposes, Add, Concatenate, means: their gradient (the
  z-rule for sums, proportional for the rest);
- LayerNormalization and RMS norms: the identity rule with the standard deviation held
  constant (the centring is linear); softmax attention weights: constants, so relevance flows
  through the values (Ali et al., ICML 2022, "conservative propagation"; AttnLRP, the
  separate method, treats softmax and the query-key product with its own rules);
- composite layers (KerasHub blocks, encoders, patch embeddings): their own Python `call`
  runs, with each sublayer replaced by its rule (`sublayers.substitute`) and the raw
  `keras.ops` functions that have one (softmax, GELU/SiLU, dot-product attention) swapped
  for it while the kernel traces; the rest of their Python (sums, padding, reshapes, class
  tokens and position embeddings, which absorb relevance as biases do) keeps its gradient.
A layer no rule covers (or a product of two full-size signals) is refused by name, with its
path inside the composite layer that holds it.

The image enters as x * m with m a tensor of ones; the attributions are d y / d m, which is
the relevance at the input. Input-layer rules (z^B, flat, w^2) need relevance that does not
scale with the pixel value, so the layers fed by the image (through padding, reshaping,
rescaling or normalisation) see it as sg(x) * m, and their rule routes relevance to m.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf
from keras import layers as kl
from keras import ops

from xai_keras.checks import check_choice, check_number
from xai_keras.errors import InputError
from xai_keras.explainers.base import register
from xai_keras.explainers.baselines import make_baseline
from xai_keras.explainers.gradients import GradientMethod
from xai_keras.explainers.graph import ModelRunner, model_store
from xai_keras.explainers.heads import Head
from xai_keras.explainers.layers import is_graph_model, walk_layers
from xai_keras.explainers.session import Session
from xai_keras.explainers.sublayers import children, substitute

__all__ = ["LAYER_RULES", "LRP", "LRP_RULES", "DeepLift", "rule_kind"]

_STAB = 1e-6  # stabiliser of modified denominators (zennit's default)
_sg = tf.stop_gradient

# Layers that only move values around (the image's bounds follow them).
_LAYOUT = (
    kl.InputLayer,
    kl.Flatten,
    kl.Reshape,
    kl.Permute,
    kl.Dropout,
    kl.SpatialDropout1D,
    kl.SpatialDropout2D,
    kl.SpatialDropout3D,
    kl.GaussianDropout,
    kl.GaussianNoise,
    kl.AlphaDropout,
    kl.Identity,
    kl.ZeroPadding1D,
    kl.ZeroPadding2D,
    kl.ZeroPadding3D,
    kl.Cropping1D,
    kl.Cropping2D,
    kl.Cropping3D,
)
# Where DeepLIFT's summation-to-delta holds only approximately (their gradient is taken).
_MAX_POOLING = (
    kl.MaxPooling1D,
    kl.MaxPooling2D,
    kl.MaxPooling3D,
    kl.GlobalMaxPooling1D,
    kl.GlobalMaxPooling2D,
    kl.GlobalMaxPooling3D,
    kl.Maximum,
    kl.Minimum,
)
# Layers passed through with their own gradient: layout, pooling, merges (LRP-0 for sums).
_PLAIN = (
    *_LAYOUT,
    kl.UpSampling1D,
    kl.UpSampling2D,
    kl.MaxPooling1D,
    kl.MaxPooling2D,
    kl.MaxPooling3D,
    kl.AveragePooling1D,
    kl.AveragePooling2D,
    kl.AveragePooling3D,
    kl.GlobalAveragePooling1D,
    kl.GlobalAveragePooling2D,
    kl.GlobalAveragePooling3D,
    kl.GlobalMaxPooling1D,
    kl.GlobalMaxPooling2D,
    kl.GlobalMaxPooling3D,
    kl.Add,
    kl.Subtract,
    kl.Average,
    kl.Maximum,
    kl.Minimum,
    kl.Concatenate,
    kl.BatchNormalization,
    kl.Rescaling,
    kl.Normalization,
)
# Element-wise affine preprocessing: relevance passes through them unchanged.
_AFFINE = (kl.Rescaling, kl.Normalization)
_ACTIVATION_LAYERS = (kl.Activation, kl.ReLU, kl.LeakyReLU, kl.ELU, kl.PReLU)
_ELEMENTWISE = {
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "swish",
    "hard_silu",
    "hard_swish",
    "mish",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "softplus",
    "softsign",
    "linear",
}


def _is_conv(layer: Any) -> bool:
    return isinstance(layer, (kl.Conv1D, kl.Conv2D, kl.Conv3D)) and not isinstance(
        layer, (kl.Conv1DTranspose, kl.Conv2DTranspose, kl.Conv3DTranspose)
    )


def _weighted(layer: Any) -> bool:
    return isinstance(
        layer,
        (
            kl.Dense,
            kl.EinsumDense,
            kl.DepthwiseConv1D,
            kl.DepthwiseConv2D,
            kl.SeparableConv1D,
            kl.SeparableConv2D,
        ),
    ) or _is_conv(layer)


# Keras operations that are graph nodes but no layers (`ops.pad`, `ops.split`, `x[:, 0]`,
# `ops.mean`): they move, select or sum values, so their own gradient is the LRP-0/z-rule.
# Those that only move values carry the input-layer rules' bookkeeping along.
_LAYOUT_OPS = {"Pad", "Reshape", "Transpose", "Squeeze", "ExpandDims"}
_LINEAR_OPS = {*_LAYOUT_OPS, "Split", "GetItem", "Slice", "Concatenate", "Stack", "Add"}
_LINEAR_OPS |= {"Subtract", "Mean", "Sum", "Cast", "Flatten"}
# Layers of other libraries (KerasHub), known by class name: per-channel scales and shifts,
# stochastic depth (identity in inference), rotary position tables (linear in the queries).
_LINEAR_BY_NAME = {
    "DINOV2LayerScale",
    "DINOV3LayerScale",
    "LayerScale2d",
    "HGNetV2LearnableAffineBlock",
    "DropPath",
    "DINOV3RopePositionEmbedding",
}

# What each layer type does under the relevance rules: the name of a `_RuleRunner` method
# `_rule_<kind>(layer, run, *args, **kwargs)` (`run` computes the layer's own output). Keys are
# classes (matched along the MRO) or class names (layers of other libraries). A method with
# other rules (AttnLRP's for attention) extends a copy in its runner's `rules`.
LAYER_RULES: dict[type | str, str] = {
    **{t: "plain" for t in _PLAIN},
    kl.Embedding: "plain",  # position embeddings: constants added to the signal (biases)
    **{name: "plain" for name in _LINEAR_OPS | _LINEAR_BY_NAME},
    kl.Dense: "weighted",
    kl.EinsumDense: "weighted",
    kl.Conv1D: "weighted",
    kl.Conv2D: "weighted",
    kl.Conv3D: "weighted",
    kl.DepthwiseConv1D: "weighted",
    kl.DepthwiseConv2D: "weighted",
    kl.SeparableConv1D: "weighted",
    kl.SeparableConv2D: "weighted",
    **{t: "activation" for t in _ACTIVATION_LAYERS},
    kl.Multiply: "gate",
    kl.MultiHeadAttention: "attention",
    kl.Softmax: "constant",
    kl.LayerNormalization: "norm",
    "RmsNorm2d": "norm",
}
# Gating nonlinearities: inside a composite layer (whose products are Python code the graph
# does not show) their outputs are taken as gates, i.e. constants (squeeze-excitation).
_GATES = {"sigmoid", "hard_sigmoid"}


def rule_kind(layer: Any, rules: dict = LAYER_RULES) -> str | None:
    """The rule `layer` gets (a key of `rules` by class along the MRO, then by class name),
    or None."""
    for cls in type(layer).__mro__:
        kind = rules.get(cls)
        if kind is not None:
            return kind
    return rules.get(type(layer).__name__)


def _walk(model: keras.Model):
    """Every operation of a graph model, nested models opened."""
    ops_ = model.layers if isinstance(model, keras.Sequential) else model.operations
    for op in ops_:
        if is_graph_model(op):
            yield from _walk(op)
        else:
            yield op


def _activation_name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _size(shape: Any) -> int | None:
    dims = tuple(shape)[1:]
    return None if None in dims else int(np.prod(dims))


def _gates(shapes: list) -> list[bool] | None:
    """Which factors of a product are gates: those broadcast over the largest (e.g. (1, 1, C)
    squeeze-excitation weights, held constant); None when several full-size signals meet."""
    sizes = [_size(sh) for sh in shapes]
    if len(sizes) < 2 or None in sizes or sizes.count(max(sizes)) > 1:
        return None
    return [n < max(sizes) for n in sizes]


def _gate_inputs(op: Any) -> list[bool] | None:
    """`_gates` for a Multiply node of the graph (None if it has no single input list)."""
    try:
        inputs = op.input
    except (AttributeError, ValueError):  # a shared layer has several
        return None
    return _gates([t.shape for t in inputs]) if isinstance(inputs, (list, tuple)) else None


def _inner_layers(model: keras.Model) -> list[tuple[str, Any]]:
    """(path, layer) of the leaf layers inside composite layers (not graph nodes)."""
    graph = {id(lay) for _, lay in walk_layers(model)}
    return [
        (path, lay)
        for path, lay in walk_layers(model, inner=True)
        if id(lay) not in graph and not children(lay) and not is_graph_model(lay)
    ]


def _refuse(method: str, path: str, layer: Any, why: str) -> InputError:
    return InputError(
        f"Method {method!r} does not handle layer {path!r} of type {type(layer).__name__}: {why}."
    )


_HANDLED = (
    "it handles Conv, Dense, EinsumDense, BatchNormalization, LayerNormalization, pooling, "
    "padding, Add, Concatenate, Split, gating Multiply, Reshape, Softmax (as constant "
    "weights), element-wise activations, and composite layers built of these"
)


def _check_supported(
    model: keras.Model, method: str, dropped: set[int], rules: dict = LAYER_RULES
) -> None:
    """Refuse, naming the first layer (or a composite layer's sublayer) no rule covers."""
    if not is_graph_model(model):
        raise InputError(
            f"Method {method!r} re-runs the model's layer graph; model {model.name!r} is "
            "subclassed. Wrap it in a Functional or Sequential model."
        )
    inner = _inner_layers(model)
    for op in _walk(model):
        if id(op) in dropped:
            continue
        kind = rule_kind(op, rules)
        name = getattr(op, "name", type(op).__name__)
        if kind is None and isinstance(op, kl.Layer) and children(op):
            continue  # composite: its sublayers are checked below
        if kind is None:
            raise _refuse(method, name, op, _HANDLED)
        if kind == "gate" and _gate_inputs(op) is None:
            raise _refuse(
                method,
                name,
                op,
                "a product of two full-size signals has no LRP rule (only a "
                "gate broadcast over the signal, as in squeeze-excitation, is held constant)",
            )
        _check_activation(method, name, op)
    for path, lay in inner:
        if rule_kind(lay, rules) is None:
            raise _refuse(method, path, lay, _HANDLED)
        _check_activation(method, path, lay)


def _elementwise(fn: Callable) -> bool:
    """Whether an unnamed activation (a lambda) acts element by element: on a probe, each
    output must keep its input's shape and depend on its own input alone."""
    x = np.random.default_rng(0).uniform(-3, 3, (4, 6)).astype(np.float32)
    moved = x.copy()
    moved[:, :3] = np.random.default_rng(1).uniform(-3, 3, (4, 3))
    try:
        y, y2 = np.asarray(fn(tf.constant(x))), np.asarray(fn(tf.constant(moved)))
        y3 = np.asarray(fn(tf.constant(x.reshape(-1, 1))))
    except Exception:  # noqa: BLE001 (any failure: not a function of one tensor)
        return False
    return (
        y.shape == x.shape
        and np.allclose(y[:, 3:], y2[:, 3:])
        and np.allclose(y.reshape(-1, 1), y3, atol=1e-6)
    )


def _check_activation(method: str, path: str, op: Any) -> None:
    fn = getattr(op, "activation", None)
    if fn is None or isinstance(op, kl.Softmax):
        return
    name = _activation_name(fn)
    if name in _ELEMENTWISE or (isinstance(op, kl.Activation) and name == "softmax"):
        return
    if name == "<lambda>" and _elementwise(fn):
        return
    raise InputError(
        f"Method {method!r} does not handle activation {name!r} of layer {path!r} "
        f"({type(op).__name__}); element-wise activations only."
    )


def _folds(model: keras.Model) -> dict[int, Any]:
    """{id(weighted layer): the BatchNormalization it alone feeds (to fold into it)}."""
    found: dict[int, Any] = {}
    for op in _walk(model):
        if not isinstance(op, kl.BatchNormalization) or op.axis not in (
            -1,
            len(op.input.shape) - 1,
        ):
            continue
        try:
            prev = op.input._keras_history[0]
        except (AttributeError, ValueError):
            continue
        linear = getattr(prev, "activation", None) in (None, keras.activations.linear)
        if (
            _weighted(prev)
            and not isinstance(prev, kl.EinsumDense)
            and linear
            and getattr(prev, "data_format", "channels_last") == "channels_last"
            and len(prev._inbound_nodes) == 1
            and len(prev._outbound_nodes) == 1
            and len(op._inbound_nodes) == 1
        ):
            found[id(prev)] = op
    return found


def _bn_affine(bn: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """(scale, shift) of a BatchNormalization in inference: y = x * scale + shift."""
    scale = tf.math.rsqrt(tf.cast(bn.moving_variance, tf.float32) + bn.epsilon)
    if bn.scale:
        scale = scale * tf.cast(bn.gamma, tf.float32)
    shift = -tf.cast(bn.moving_mean, tf.float32) * scale
    if bn.center:
        shift = shift + tf.cast(bn.beta, tf.float32)
    return scale, shift


class _Affine:
    """One affine stage z = op(x, kernel) + bias of a weighted layer, any kernel allowed."""

    def __init__(self, op: Callable, kernel: tf.Tensor, bias: tf.Tensor | None, dense: bool):
        self.op, self.kernel, self.bias, self.dense = op, kernel, bias, dense

    def __call__(self, x: tf.Tensor, modify: Callable | None = None, bias: bool = True):
        """op(x, modify(kernel)) + modify(bias) (bias left out when `bias` is False)."""
        kernel = self.kernel if modify is None else modify(self.kernel)
        z = self.op(x, kernel)
        if bias and self.bias is not None:
            z = z + (self.bias if modify is None else modify(self.bias))
        return z


def _stages(layer: Any, bn: Any = None) -> list[_Affine]:
    """The affine stages of a weighted layer (separable convs have two), BN folded into the
    last one."""
    f32 = lambda v: tf.cast(v, tf.float32)  # noqa: E731
    bias = f32(layer.bias) if getattr(layer, "use_bias", True) and layer.bias is not None else None
    if isinstance(layer, kl.Dense):
        stages = [_Affine(lambda x, k: ops.matmul(x, k), f32(layer.kernel), bias, True)]
    elif isinstance(layer, kl.EinsumDense):
        equation = layer.equation
        stages = [_Affine(lambda x, k: ops.einsum(equation, x, k), f32(layer.kernel), bias, True)]
    elif _is_conv(layer):
        stages = [_Affine(layer.convolution_op, f32(layer.kernel), bias, False)]
    else:
        depthwise = isinstance(layer, (kl.DepthwiseConv1D, kl.DepthwiseConv2D))
        dkernel = layer.kernel if depthwise else layer.depthwise_kernel

        def dw(x, k, layer=layer):
            return ops.depthwise_conv(
                x,
                k,
                strides=layer.strides,
                padding=layer.padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            )

        if depthwise:
            stages = [_Affine(dw, f32(dkernel), bias, False)]
        else:

            def pw(x, k, layer=layer):
                return ops.conv(x, k, strides=1, padding="valid", data_format=layer.data_format)

            stages = [
                _Affine(dw, f32(dkernel), None, False),
                _Affine(pw, f32(layer.pointwise_kernel), bias, False),
            ]
    if bn is not None:
        last = stages[-1]
        scale, shift = _bn_affine(bn)
        shape = last.kernel.shape
        if isinstance(layer, (kl.DepthwiseConv1D, kl.DepthwiseConv2D)):
            kernel = last.kernel * tf.reshape(scale, shape[-2:])
        else:
            kernel = last.kernel * scale
        bias = shift if last.bias is None else last.bias * scale + shift
        stages[-1] = _Affine(last.op, kernel, bias, last.dense)
    return stages


def _stab(z: tf.Tensor) -> tf.Tensor:
    """z pushed away from zero by _STAB in its own direction (0 counts as positive)."""
    return z + tf.where(z >= 0, _STAB, -_STAB)


def _exact(value: tf.Tensor, surrogate: tf.Tensor) -> tf.Tensor:
    """A tensor with `value`'s value and `surrogate`'s gradient."""
    return surrogate + _sg(value - surrogate)


def _rescale(
    fn: Callable, x: tf.Tensor, reference: Callable | None = None, call: Callable | None = None
) -> tf.Tensor:
    """fn(x), with gradient (y - y0) / (x - x0) (the rescale rule), or dy/dx where x == x0.

    `reference` maps x (or y) to the reference's values; None: x0 = 0 and y0 = 0 (relevance
    passes through unchanged). Functions without weights get a custom gradient (no extra
    forward work); layers with weights (PReLU) are differentiated through instead.
    """
    ref = reference or tf.zeros_like
    weighted = bool(getattr(fn, "weights", None))
    fn = call or fn  # an activation layer's own call, where its __call__ runs this rule

    def multiplier(x, y, dydx):
        dx = x - ref(x)
        far = tf.abs(dx) > 1e-7
        return tf.where(far, (y - ref(y)) / tf.where(far, dx, tf.ones_like(dx)), dydx)

    if weighted:
        y = fn(x)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            y2 = fn(x)
        slope = tape.gradient(y2, x)
        return _exact(y, x * _sg(multiplier(x, y, slope)))

    @tf.custom_gradient
    def rescaled(x):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            y = fn(x)

        def grad(g):
            return g * multiplier(x, y, tape.gradient(y, x))

        return tf.identity(y), grad

    return rescaled(x)


# -- rules -----------------------------------------------------------------------------------
class _Chain:
    """What the layers fed by the image know about it: `probe` (m, with its gradient, moved
    the way the image was) and the image's lowest/highest values `low`, `high` there."""

    def __init__(self, probe: tf.Tensor, low: tf.Tensor, high: tf.Tensor):
        self.probe, self.low, self.high = probe, low, high


class Rule:
    """An LRP rule for one affine stage: returns a tensor whose gradient (times the stage's
    input) is the rule's relevance; its value does not matter.

    `x` is the stage's input, `xg` the same values carrying the gradient to follow (x itself,
    or sg(x) * m at the input layer), `z` the stage's output, `chain` set at the input layer.
    """

    name: ClassVar[str] = ""
    input_only: ClassVar[bool] = False

    def __call__(self, stage: _Affine, x, xg, z, chain: _Chain | None) -> tf.Tensor:
        raise NotImplementedError

    def fast(self, stage: _Affine, x: tf.Tensor) -> tf.Tensor:
        """The stage's output with the rule's gradient, away from the input layer (a custom
        gradient: no extra forward work beyond what the rule needs)."""
        z = stage(x)
        return _exact(z, self(stage, x, x, z, None))

    @staticmethod
    def _z(stage, x, xg, z):
        return z if xg is x else stage(xg)


class Zero(Rule):
    """LRP-0: R_j = sum_k x_j w_jk R_k / z_k (the plain gradient)."""

    name = "0"

    def __call__(self, stage, x, xg, z, chain):
        return self._z(stage, x, xg, z)

    def fast(self, stage, x):
        return stage(x)


class Epsilon(Rule):
    """LRP-epsilon: z_k + epsilon * sign(z_k) in the denominator absorbs weak relevance."""

    name = "epsilon"

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def _ratio(self, z):
        return z / (z + tf.where(z >= 0, self.epsilon, -self.epsilon))

    def __call__(self, stage, x, xg, z, chain):
        return self._z(stage, x, xg, z) * _sg(self._ratio(z))

    def fast(self, stage, x):
        @tf.custom_gradient
        def scaled(z):
            return tf.identity(z), lambda g: g * self._ratio(z)

        return scaled(stage(x))


class Gamma(Rule):
    """LRP-gamma: weights and bias w + gamma * w+ (favours positive contributions), for
    non-negative inputs (as after a ReLU; zennit's `Gamma`).

    An image whose input to the stage has negative values (after GELU, SiLU, a normalisation
    or a residual sum) gets the sign-aware form instead: each output's contributions of its
    own sign are favoured, z' = z + gamma * sum((x w)+) for z >= 0 and z + gamma * sum((x w)-)
    for z < 0, so |z'| >= |z| and the ratio z / z' stays bounded (with x >= 0 and z >= 0 it
    is the rule above).
    """

    name = "gamma"

    def __init__(self, gamma: float):
        self.gamma = gamma

    def _modify(self, w):
        return w + self.gamma * tf.nn.relu(w)

    def _zprime(self, stage, x, z):
        pos, neg = tf.nn.relu, lambda w: tf.minimum(w, 0.0)
        xp, xn = tf.nn.relu(x), tf.minimum(x, 0.0)
        plus = stage(xp, pos) + stage(xn, neg, bias=False)
        minus = stage(xp, neg) + stage(xn, pos, bias=False)
        signed = stage(x) + self.gamma * tf.where(_sg(z) >= 0, plus, minus)
        axes = list(range(1, x.shape.rank))
        unsigned = tf.reduce_all(_sg(x) >= 0, axis=axes)
        unsigned = tf.reshape(unsigned, [-1] + [1] * (z.shape.rank - 1))
        return tf.where(unsigned, stage(x, self._modify), signed)

    def __call__(self, stage, x, xg, z, chain):
        zp = self._zprime(stage, xg, z)
        return zp * _sg(z / _stab(zp))

    def fast(self, stage, x):
        @tf.custom_gradient
        def gamma(x):
            z = stage(x)

            def grad(g):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(x)
                    zp = self._zprime(stage, x, z)
                return tape.gradient(zp, x, output_gradients=g * z / _stab(zp))

            return z, grad

        return gamma(x)


class AlphaBeta(Rule):
    """LRP-alpha-beta: alpha * positive contributions / z+ - beta * negative ones / z-, with
    contributions x_j w_jk split by sign (inputs of either sign handled)."""

    name = "alphabeta"

    def __init__(self, alpha: float, beta: float):
        self.alpha, self.beta = alpha, beta

    def __call__(self, stage, x, xg, z, chain):
        xp, xn = tf.nn.relu(xg), tf.minimum(xg, 0.0)
        pos, neg = tf.nn.relu, lambda w: tf.minimum(w, 0.0)
        zp = stage(xp, pos) + stage(xn, neg, bias=False)
        out = self.alpha * zp * _sg(z / _stab(zp))
        if self.beta:
            zn = stage(xp, neg) + stage(xn, pos, bias=False)
            out = out - self.beta * zn * _sg(z / _stab(zn))
        return out


class Flat(Rule):
    """Flat (input layer): relevance spread uniformly over each output's receptive field."""

    name = "flat"
    input_only = True

    def weights(self, w):
        return tf.ones_like(w)

    def __call__(self, stage, x, xg, z, chain):
        zf = stage(chain.probe, self.weights, bias=False)
        return zf * _sg(z / _stab(zf))


class WSquare(Flat):
    """w^2 (input layer): relevance spread in proportion to the squared weights."""

    name = "wsquare"

    def weights(self, w):
        return tf.square(w)


class ZBox(Rule):
    """z^B (input layer): contributions measured against the image's bounds l <= x <= h:
    x w - l w+ - h w- (no bias term, as in Montavon et al. 2017 and zennit)."""

    name = "zbox"
    input_only = True

    def __call__(self, stage, x, xg, z, chain):
        low, high = chain.low * chain.probe, chain.high * chain.probe
        zb = (
            stage(xg, bias=False)
            - stage(low, tf.nn.relu, bias=False)
            - stage(high, lambda w: tf.minimum(w, 0.0), bias=False)
        )
        return zb * _sg(z / _stab(zb))


LRP_RULES = (
    "composite",
    "0",
    "epsilon",
    "gamma",
    "alpha1beta0",
    "zplus",
    "alpha2beta1",
    "flat",
    "wsquare",
)


class Composite:
    """Which rule each affine stage gets: `first` at the layers fed by the image, `dense` at
    Dense layers, `conv` at convolutions."""

    def __init__(self, first: Rule, conv: Rule, dense: Rule):
        self.first, self.conv, self.dense = first, conv, dense

    @classmethod
    def named(cls, rule: str, epsilon: float, gamma: float) -> Composite:
        eps, gam = Epsilon(epsilon), Gamma(gamma)
        if rule in ("composite", "flat", "wsquare"):
            first = {"composite": ZBox(), "flat": Flat(), "wsquare": WSquare()}[rule]
            return cls(first, gam, eps)
        one = {
            "0": Zero(),
            "epsilon": eps,
            "gamma": gam,
            "alpha1beta0": AlphaBeta(1.0, 0.0),
            "zplus": AlphaBeta(1.0, 0.0),
            "alpha2beta1": AlphaBeta(2.0, 1.0),
        }[rule]
        return cls(one, one, one)

    def pick(self, stage: _Affine, first: bool) -> Rule:
        if first:
            return self.first
        return self.dense if stage.dense else self.conv


# -- runners ----------------------------------------------------------------------------------
class _RuleRunner(ModelRunner):
    """Re-runs the model with every layer replaced by its rule (`rules`: layer type -> a
    `_rule_<kind>` method), graph nodes and composite layers' sublayers alike.

    A composite layer (a KerasHub block) runs its own Python `call`, which calls its sublayers:
    those run their rules (`sublayers.substitute`), and the few raw operations with a rule of
    their own (`ops.softmax`, `ops.gelu`, `ops.dot_product_attention`) are swapped for their
    rules while the kernel traces (`_raw_rules`). Everything else a composite does in Python
    (sums, reshapes, padding, products with weights) keeps its gradient, the LRP-0/z-rule.
    """

    method = ""
    rules: ClassVar[dict] = LAYER_RULES

    def __init__(self, model: keras.Model, head: Head | None = None):
        super().__init__(model, None, head=head)
        _check_supported(model, self.method, set(self._subs), self.rules)
        self.folds = _folds(model)
        self.folded = {id(bn) for bn in self.folds.values()}
        graph = {id(lay) for _, lay in walk_layers(model)}
        self._inner = []  # no taps: the rules' runner records nothing
        self._inside = [
            lay
            for _, lay in walk_layers(model, inner=True)
            if id(lay) not in graph and rule_kind(lay, self.rules) is not None
        ]
        self._inside_ids = {id(lay) for lay in self._inside}

    def forward(self, x, captured=None):
        with substitute(self._inside, self._rule), _raw_rules(self), self._held_activations():
            return super().forward(x, captured)

    @contextlib.contextmanager
    def _held_activations(self):
        """Composite layers that keep an activation function as an attribute and call it in
        Python (Swin's MLP: `self.act_layer(x)`) run the activation rule instead, while the
        kernel traces."""
        found = []
        for _, lay in walk_layers(self.model, inner=True):
            if not children(lay) or is_graph_model(lay):
                continue
            for attr, value in vars(lay).items():
                if (
                    callable(value)
                    and getattr(value, "__module__", "").startswith("keras.src.activations")
                    and _activation_name(value) in _ELEMENTWISE
                ):
                    found.append((lay, attr, value))
        try:
            for lay, attr, fn in found:
                object.__setattr__(lay, attr, lambda t, f=fn: self._activation(f, t))
            yield
        finally:
            for lay, attr, fn in found:
                object.__setattr__(lay, attr, fn)

    def _rule(self, layer: Any, run: Callable, *args, **kwargs) -> Any:
        kind = rule_kind(layer, self.rules)
        return getattr(self, f"_rule_{kind}")(layer, run, *args, **kwargs)

    def _op(self, op: Any, captured: dict) -> Callable:
        if is_graph_model(op):
            return super()._op(op, captured)
        dropped = id(op) in self._subs
        if _weighted(op):
            return lambda x, **kw: self._weighted_layer(op, x, dropped)
        if dropped or id(op) in self.folded:
            return lambda x, *a, **kw: x

        def run(*args, **kwargs):
            if getattr(op, "_call_has_training_arg", False):
                kwargs["training"] = False
            return op(*args, **kwargs)

        if rule_kind(op, self.rules) is None:  # a composite layer: its sublayers have rules
            return run
        return lambda *args, **kwargs: self._rule(op, run, *args, **kwargs)

    # -- rules by kind (see LAYER_RULES) -------------------------------------------------
    def _rule_plain(self, layer, run, *args, **kwargs):
        """Layout, pooling, sums, linear maps without a rule of their own: their gradient."""
        return self._plain(layer, run(*args, **kwargs), args)

    def _rule_weighted(self, layer, run, x, *args, **kwargs):
        return self._weighted_layer(layer, x, False)

    def _rule_activation(self, layer, run, x, *args, **kwargs):
        fn = layer.activation if isinstance(layer, kl.Activation) else layer
        name = _activation_name(fn)
        if name == "softmax":
            return _sg(run(x, *args, **kwargs))
        if name in _GATES and id(layer) in self._inside_ids:
            return _sg(run(x, *args, **kwargs))
        return self._activation(fn, x, None if isinstance(layer, kl.Activation) else run)

    def _rule_gate(self, layer, run, inputs, *args, **kwargs):
        """x * gate: the gate (the broadcast factor) is a constant, so relevance flows only
        through the gated signal (Montavon et al. 2019, Sec. 10.2; zennit's and LXT's rule for
        gating products)."""
        gates = _gates([t.shape for t in inputs]) or [False] * len(inputs)
        held = [_sg(t) if gate else t for t, gate in zip(inputs, gates)]
        return run(held, *args, **kwargs)

    def _rule_constant(self, layer, run, *args, **kwargs):
        """Softmax inside attention: the attention weights are constants, relevance flows
        through the values (Ali et al., ICML 2022)."""
        return _sg(run(*args, **kwargs))

    def _rule_norm(self, layer, run, x, *args, **kwargs):
        """LayerNorm/RMSNorm: the identity rule with the standard deviation held constant
        (the centring is linear): Ali et al. 2022, Achtibat et al. 2024."""
        return _exact(run(x, *args, **kwargs), _norm_linear(layer, x))

    def _rule_attention(self, layer, run, *args, **kwargs):
        """Keras' MultiHeadAttention: its explicit path (softmax layer, then the weighted sum
        of values) instead of the fused kernel, so that its Softmax rule applies."""
        kwargs["return_attention_scores"] = True
        return run(*args, **kwargs)[0]

    def raw_rules(self) -> dict[tuple[Any, str], Callable]:
        """{(module, name): rule} for the raw `keras.ops` functions composite layers call in
        Python: softmax gives constant weights, GELU/SiLU the runner's activation rule,
        dot-product attention constant weights. A method with other rules overrides this."""
        swaps = {}
        for module in (keras.ops, keras.ops.nn):
            softmax = module.softmax
            swaps[(module, "softmax")] = lambda x, axis=-1, f=softmax: _sg(f(x, axis=axis))
            for name in ("gelu", "silu"):
                fn = getattr(module, name)

                def act(x, *a, f=fn, **k):
                    return self._activation(lambda t: f(t, *a, **k), x)

                swaps[(module, name)] = act
            attention = _attention_constant(module.dot_product_attention)
            swaps[(module, "dot_product_attention")] = attention
        return swaps

    # -- what subclasses give ---------------------------------------------------------
    def _plain(self, op: Any, y: Any, args: tuple) -> Any:
        return y

    def _weighted_layer(self, layer: Any, x: tf.Tensor, dropped: bool) -> tf.Tensor:
        x = x if x.dtype == tf.float32 else tf.cast(x, tf.float32)
        for stage in _stages(layer, self.folds.get(id(layer))):
            x = self._stage(stage, x)
        fn = getattr(layer, "activation", None)
        if dropped or fn is None or fn is keras.activations.linear:
            return x
        if _activation_name(fn) in _GATES and id(layer) in self._inside_ids:
            return _sg(fn(x))
        return self._activation(fn, x)

    def _stage(self, stage: _Affine, x: tf.Tensor) -> tf.Tensor:
        return stage(x)

    def _activation(self, fn: Callable, x: tf.Tensor, call: Callable | None = None) -> tf.Tensor:
        """fn(x) with the method's rule; `call` computes it where fn is a layer whose
        __call__ runs this rule."""
        raise NotImplementedError


def _norm_linear(layer: Any, x: tf.Tensor) -> tf.Tensor:
    """A normalisation layer's output as a linear function of x (its scale 1/std frozen):
    (x - mean) / sg(std) * gamma; RMS norms: x / sg(rms) * gamma."""
    x = tf.cast(x, tf.float32)
    rank = x.shape.rank
    if isinstance(layer, kl.LayerNormalization):
        axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
        eps, rms = layer.epsilon, layer.rms_scaling
        gamma = layer.gamma if layer.scale else None
    else:  # RmsNorm2d
        axes = [1 if getattr(layer, "data_format", "") == "channels_first" else -1]
        eps, rms, gamma = layer.eps, True, getattr(layer, "gamma", None)
    axes = [a % rank for a in axes]
    centred = x if rms else x - tf.reduce_mean(x, axes, keepdims=True)
    scale = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), axes, keepdims=True) + eps)
    out = centred * _sg(scale)
    if gamma is not None:
        shape = [x.shape[a] if a in axes else 1 for a in range(rank)]
        out = out * tf.reshape(tf.cast(gamma, tf.float32), shape)
    return out


_RAW_LOCK = threading.RLock()


def _attention_constant(original: Callable) -> Callable:
    """`ops.dot_product_attention` with its attention weights held constant (the softmax
    rule above), for blocks that call the fused kernel themselves (DINOv3)."""

    def attention(
        query,
        key,
        value,
        bias=None,
        mask=None,
        scale=None,
        is_causal=False,
        flash_attention=None,
        attn_logits_soft_cap=None,
    ):
        if attn_logits_soft_cap is not None or key.shape[-2] != query.shape[-2]:
            return original(
                query,
                key,
                value,
                bias=bias,
                mask=mask,
                scale=scale,
                is_causal=is_causal,
                flash_attention=flash_attention,
                attn_logits_soft_cap=attn_logits_soft_cap,
            )
        scale = 1.0 / np.sqrt(query.shape[-1]) if scale is None else scale
        logits = tf.einsum("btnh,bsnh->bnts", query, key) * scale
        if bias is not None:
            logits = logits + tf.cast(bias, logits.dtype)
        keep = None if mask is None else tf.cast(mask, tf.bool)
        if is_causal:
            t, s_ = tf.shape(logits)[-2], tf.shape(logits)[-1]
            causal = tf.linalg.band_part(tf.ones((t, s_), tf.bool), -1, 0)
            keep = causal if keep is None else tf.logical_and(keep, causal)
        if keep is not None:
            logits = tf.where(keep, logits, tf.cast(-1e9, logits.dtype))
        probs = _sg(tf.nn.softmax(logits, axis=-1))
        return tf.einsum("bnts,bsnh->btnh", probs, value)

    return attention


@contextlib.contextmanager
def _raw_rules(runner: _RuleRunner):
    """While the kernel traces, the public `keras.ops` functions that composite layers call
    in Python and that have a rule (`runner.raw_rules()`) run that rule. Keras' own layers
    import `keras.src.ops` and are unaffected; a lock keeps two traces from interleaving."""
    swaps = runner.raw_rules()
    with _RAW_LOCK:
        saved = {key: getattr(*key) for key in swaps}
        try:
            for (module, name), fn in swaps.items():
                setattr(module, name, fn)
            yield
        finally:
            for (module, name), fn in saved.items():
                setattr(module, name, fn)


class LrpRunner(_RuleRunner):
    """`relevance_fn(x, targets, low, high)` -> (relevance (B, H, W, C), logits, targets)."""

    method = "lrp"

    def __init__(self, model: keras.Model, composite: Composite, head: Head | None = None):
        super().__init__(model, head)
        self.composite = composite
        self._chain: dict[int, tuple[tf.Tensor, _Chain]] = {}
        self.relevance_fn = tf.function(self._relevance)

    def _relevance(self, x, targets, low, high):
        probe = tf.ones_like(x)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(probe)
            image = x * probe
            self._chain = {id(image): (image, _Chain(probe, low, high))}
            _, logits = self.forward(image)
            targets, y = self._pick(logits, targets)
        self._chain = {}
        return tape.gradient(y, probe), logits, targets

    def _entry(self, t: Any) -> _Chain | None:
        held = self._chain.get(id(t))
        return held[1] if held is not None and held[0] is t else None

    def _plain(self, op, y, args):
        chain = self._entry(args[0]) if args else None
        if chain is not None and isinstance(op, _LAYOUT + _AFFINE):
            if isinstance(op, _LAYOUT):
                follow = _Chain(op(chain.probe), op(chain.low), op(chain.high))
            else:
                a, b = op(chain.low), op(chain.high)
                follow = _Chain(chain.probe, tf.minimum(a, b), tf.maximum(a, b))
            self._chain[id(y)] = (y, follow)
        return y

    def _stage(self, stage, x):
        chain = self._entry(x)
        rule = self.composite.pick(stage, chain is not None)
        if chain is None:
            return rule.fast(stage, x)
        z = stage(x)
        return _exact(z, rule(stage, x, _sg(x) * chain.probe, z, chain))

    def _activation(self, fn, x, call=None):
        plain_relu = isinstance(fn, kl.ReLU) and fn.max_value is None
        if fn is keras.activations.relu or (
            plain_relu and not fn.negative_slope and not fn.threshold
        ):
            return (call or fn)(x)  # gradient: R_x = x * 1[x > 0] * g = y * g passes through
        return _rescale(fn, x, call=call)  # relevance passes through unchanged


class DeepLiftRunner(_RuleRunner):
    """`multipliers_fn(x, baseline, targets)` -> (attributions, logits, targets).

    The images and their baselines run as one batch [x; x0]; each element-wise nonlinearity's
    gradient is the rescale multiplier (y - y0) / (x - x0) (its gradient where x == x0), and
    linear layers keep theirs.
    """

    method = "deeplift"

    def __init__(self, model: keras.Model, head: Head | None = None):
        super().__init__(model, head)
        self.multipliers_fn = tf.function(self._multipliers)

    def _multipliers(self, x, baseline, targets):
        n = tf.shape(x)[0]
        both = tf.concat([x, baseline], axis=0)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(both)
            _, scores = self.forward(both)
            logits = scores[:n]
            targets, y = self._pick(logits, targets)
        grads = tape.gradient(y, both)[:n]
        return (x - baseline) * grads, logits, targets

    def _activation(self, fn, x, call=None):
        n = tf.shape(x)[0] // 2
        return _rescale(fn, x, lambda t: tf.concat([t[n:], t[:n]], axis=0), call)


def _cached(model: keras.Model, key: tuple, build: Callable) -> Any:
    store = model_store(model).setdefault("relevance", {})
    if key not in store:
        store[key] = build()
    return store[key]


# -- methods ----------------------------------------------------------------------------------
class _RelevanceMethod(GradientMethod):
    family = "gradient"
    signed = True

    def reduce(self, attributions):
        return tf.reduce_sum(attributions, axis=-1)


@register("lrp")
class LRP(_RelevanceMethod):
    """Layer-wise Relevance Propagation: the target logit redistributed layer by layer.

    Args:
        rule: "composite" (default: z^B at the layers fed by the image, gamma at convolutions,
            epsilon at dense layers; Montavon et al. 2019), "0", "epsilon", "gamma",
            "alpha1beta0" (= "zplus"), "alpha2beta1" (everywhere), "flat" or "wsquare" (that
            rule at the input layer, the composite elsewhere).
        epsilon: the epsilon rule's stabiliser.
        gamma: the gamma rule's weight on positive weights.

    The z^B rule's bounds are the session's value range (without one, each image's own
    minimum and maximum). Gates (squeeze-excitation), LayerNorm's standard deviation and
    attention weights are held constant, and composite layers (KerasHub blocks) are run
    with each sublayer's rule (see the module docstring); the gamma rule takes its
    sign-aware form where a layer's input is signed (after GELU/SiLU or a norm).

    Attributions (B, H, W, C) are signed relevance; the map sums channels.

    Reference: Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
    Layer-Wise Relevance Propagation", PLoS ONE 2015; Montavon et al., "Layer-Wise Relevance
    Propagation: An Overview", 2019; gates as constants: Arras et al., "Explaining Recurrent
    Neural Network Predictions in Sentiment Analysis", WASSA 2017; LayerNorm and attention:
    Ali et al., "XAI for Transformers: Better Explanations through Conservative
    Propagation", ICML 2022.
    """

    reference = "Bach et al., PLoS ONE 2015; Montavon et al., 2019; Ali et al., ICML 2022"
    zero_map_cause = "no relevance reached the input (a dead ReLU path or a zero logit)"

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        rule: str = "composite",
        epsilon: float = 1e-6,
        gamma: float = 0.25,
    ):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        rule = check_choice(rule, "rule", LRP_RULES, where=where)
        epsilon = check_number(epsilon, "epsilon", low=0.0, where=where)
        gamma = check_number(gamma, "gamma", low=0.0, where=where)
        self.rule, self.value_range = rule, session.value_range
        model, head = session.model, session.head
        composite = Composite.named(rule, epsilon, gamma)
        self.lrp = _cached(
            model,
            ("lrp", rule, epsilon, gamma, head),
            lambda: LrpRunner(model, composite, head),
        )

    def _bounds(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(low, high) like `x`: the value range's per-channel black and white (widened to
        the image where it steps outside), else each image's own minimum and maximum."""
        if self.value_range is not None:
            channels = int(x.shape[-1])
            a = np.broadcast_to(self.value_range.low, (channels,))
            b = np.broadcast_to(self.value_range.high, (channels,))
            low = tf.minimum(tf.constant(np.minimum(a, b), x.dtype), tf.reduce_min(x, (1, 2), True))
            high = tf.maximum(
                tf.constant(np.maximum(a, b), x.dtype), tf.reduce_max(x, (1, 2), True)
            )
        else:
            low = tf.reduce_min(x, axis=(1, 2, 3), keepdims=True)
            high = tf.reduce_max(x, axis=(1, 2, 3), keepdims=True)
        return tf.broadcast_to(low, tf.shape(x)), tf.broadcast_to(high, tf.shape(x))

    def attributions(self, x, targets):
        low, high = self._bounds(tf.cast(x, tf.float32))
        return self.lrp.relevance_fn(x, targets, low, high)


@register("deeplift")
class DeepLift(_RelevanceMethod):
    """DeepLIFT with the rescale rule: (x - x0) times multipliers that replace each
    nonlinearity's gradient with (y - y0) / (x - x0).

    Attributions sum to f(x) - f(x0) for the target logit (summation-to-delta) where the only
    nonlinearities are element-wise; max pooling takes its gradient (as DeepLIFT's reference
    code does by default), which keeps the sum only approximately.

    Args:
        baseline: the reference input x0: "black" (the range minimum), "mean", "blur", a
            number or an array (see `make_baseline`).

    Reference: Shrikumar et al., "Learning Important Features Through Propagating Activation
    Differences", ICML 2017.
    """

    reference = "Shrikumar et al., ICML 2017"
    completeness_tolerance = 0.1  # checked only without max pooling (see __init__)

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        baseline: str | float | np.ndarray = "black",
    ):
        super().__init__(session, layer)
        self.baseline, self.value_range = baseline, session.value_range
        model, head = session.model, session.head
        self.deeplift = _cached(model, ("deeplift", head), lambda: DeepLiftRunner(model, head))
        if any(isinstance(lay, _MAX_POOLING) for _, lay in walk_layers(model, inner=True)):
            self.completeness_tolerance = 0.0  # the identity does not hold: nothing to check

    def completeness_baseline(self, x):
        return make_baseline(x, self.baseline, self.value_range)

    def attributions(self, x, targets):
        return self.deeplift.multipliers_fn(x, self.completeness_baseline(x), targets)
