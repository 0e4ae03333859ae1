"""Transformer methods: attention rollout, Chefer's gradient-weighted attention (ICCV 2021) and
transformer attribution (CVPR 2021), AttnLRP.

They read the attention of every `keras.layers.MultiHeadAttention` the model runs (also those
inside composite layers, such as a KerasHub encoder's blocks), in the order they run:

- `attention_rollout`, `chefer` and `transformer_attribution` call each attention layer with
  `return_attention_scores=True` while the kernel is traced (Keras 3 otherwise takes a fused
  `dot_product_attention` path whose probabilities are never formed) and keep the
  probabilities A (B, heads, T, T); the layer's output is computed from those same A, so
  gradients with respect to them are exact;
- `attnlrp` changes the gradients of the layers while tracing (LayerNorm, activations, the
  query/key/value projections) so that input x gradient is AttnLRP's relevance
  (`transformer_attribution` reads the attention's relevance the same way).

Token maps land on the patch grid (B, h, w): the class token's row over the patch tokens, the
prefix tokens (class, distillation, registers) read from the model (`layers.token_layout`).
A model with no prefix token gets the mean of the patch tokens' rows instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from xai_keras.checks import check_choice, check_number
from xai_keras.errors import LayerError
from xai_keras.explainers.base import BatchResult, Method, register
from xai_keras.explainers.layers import token_layout
from xai_keras.explainers.session import Session
from xai_keras.explainers.sublayers import is_builtin, replace_calls

__all__ = [
    "AttentionMethod",
    "AttentionRollout",
    "Chefer",
    "AttnLRP",
    "attention_layers",
    "rollout",
    "chefer_relevance",
    "attribution_rollout",
    "TransformerAttribution",
]

_token_layout = tf.autograph.experimental.do_not_convert(token_layout)
_sg = tf.stop_gradient


def _all_layers(model: keras.Model) -> list[Any]:
    """Every layer the model tracks, recursively (composite layers' sublayers included)."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def attention_layers(model: keras.Model, method: str = "") -> list[Any]:
    """The model's `keras.layers.MultiHeadAttention` layers; refuses a model with none."""
    found = _attention(model)
    if not found:
        raise LayerError(_missing(model, method))
    return found


def _attention(model: keras.Model) -> list[Any]:
    return [lay for lay in _all_layers(model) if isinstance(lay, keras.layers.MultiHeadAttention)]


def _missing(model: keras.Model, method: str) -> str:
    return (
        f"Method {method!r} needs keras.layers.MultiHeadAttention layers (their attention is "
        f"read and ruled), and model {model.name!r} has none (attention computed inside custom "
        "layers, e.g. with ops.softmax, cannot be reached); use 'saliency', "
        "'integrated_gradients' or a CAM on this model."
    )


def _safe_divide(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.where(b != 0, a / tf.where(b != 0, b, tf.ones_like(b)), tf.zeros_like(a))


def _with_gradient(value: tf.Tensor, through: tf.Tensor, scale: Any) -> tf.Tensor:
    """`value` forward; backward, the incoming gradient times `scale` passed to `through`."""
    return _sg(value) + (through - _sg(through)) * _sg(scale)


# -- rollout and Chefer's relevance, on recorded attention ------------------------------------
def _fuse(a: tf.Tensor, how: str) -> tf.Tensor:
    """(B, heads, T, T) -> (B, T, T)."""
    return {"mean": tf.reduce_mean, "max": tf.reduce_max, "min": tf.reduce_min}[how](a, axis=1)


def _discard(a: tf.Tensor, ratio: float) -> tf.Tensor:
    """The `ratio` lowest entries of each (T, T) matrix set to 0, except [0, 0] (as in
    jacobgil/vit-explain: the class token's attention to itself is kept)."""
    tokens = int(a.shape[-1])
    count = int(tokens * tokens * ratio)
    if count == 0:
        return a
    flat = tf.reshape(a, (-1, tokens * tokens))
    _, lowest = tf.math.top_k(-flat, count)
    rows = tf.broadcast_to(tf.range(tf.shape(flat)[0])[:, None], tf.shape(lowest))
    where = tf.stack([rows, lowest], axis=-1)
    keep = tf.tensor_scatter_nd_update(
        tf.ones_like(flat), where, tf.zeros(tf.shape(lowest), flat.dtype)
    )
    keep = tf.concat([tf.ones_like(keep[:, :1]), keep[:, 1:]], axis=1)
    return tf.reshape(flat * keep, tf.shape(a))


def rollout(
    attentions: list[tf.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0
) -> tf.Tensor:
    """Attention rollout: prod over blocks (last first) of 0.5 A + 0.5 I, rows renormalised.

    Args:
        attentions: per block, (B, heads, T, T) attention probabilities, first block first.
        head_fusion: "mean", "max" or "min" over heads.
        discard_ratio: fraction of the lowest fused attentions dropped per block.

    Returns:
        (B, T, T) token-to-token rollout.
    """
    result = None
    for a in attentions:
        a = _discard(_fuse(tf.cast(a, tf.float32), head_fusion), discard_ratio)
        a = 0.5 * a + 0.5 * tf.eye(int(a.shape[-1]), dtype=a.dtype)
        a = a / tf.reduce_sum(a, axis=-1, keepdims=True)
        result = a if result is None else tf.matmul(a, result)
    return result


def chefer_relevance(attentions: list[tf.Tensor], grads: list[tf.Tensor]) -> tf.Tensor:
    """Chefer et al. (ICCV 2021): R = I, then per block R += mean_h((dy/dA * A)^+) @ R.

    Returns:
        (B, T, T) relevance between tokens.
    """
    result = None
    for a, g in zip(attentions, grads):
        cam = tf.reduce_mean(tf.nn.relu(tf.cast(g * a, tf.float32)), axis=1)
        if result is None:
            result = tf.eye(int(cam.shape[-1]), batch_shape=tf.shape(cam)[:1], dtype=cam.dtype)
        result = result + tf.matmul(cam, result)
    return result


def attribution_rollout(relevances: list[tf.Tensor], grads: list[tf.Tensor]) -> tf.Tensor:
    """Chefer et al. (CVPR 2021): per block E = mean_h((dy/dA * R_A)^+), then the product over
    blocks (last first) of I + E, not renormalised (the authors' `compute_rollout_attention`).

    Returns:
        (B, T, T) relevance between tokens.
    """
    result = None
    for r, g in zip(relevances, grads):
        cam = tf.reduce_mean(tf.nn.relu(tf.cast(g * r, tf.float32)), axis=1)
        cam = cam + tf.eye(int(cam.shape[-1]), dtype=cam.dtype)
        result = cam if result is None else tf.matmul(cam, result)
    return result


class AttentionMethod(Method):
    """Base: maps on the patch grid from the attention of the model's MultiHeadAttention
    layers (self-attention over the model's tokens). A method's `_batch` builds one compiled
    batch: token relevance (B, T, T) turned into maps by `to_grid`, or input relevance."""

    family = "attention"
    compiled_step = True
    zero_map_cause = "no attention or gradient reached the patch tokens"

    def __init__(self, session: Session, layer: Any = None):
        super().__init__(session, layer)
        self.attention = attention_layers(self.model, self.name)

    @classmethod
    def unsupported(cls, model: keras.Model) -> str:
        return "" if _attention(model) else _missing(model, cls.name)

    @property
    def kernel_key(self) -> str:
        """This method's kernel name on the runner (options the trace depends on included)."""
        return self.name

    def attribute(self, x: tf.Tensor, targets: tf.Tensor) -> BatchResult:
        kernel = self.runner.kernel(f"attention:{self.kernel_key}", self._batch)
        return BatchResult(*kernel(x, targets))

    def _batch(self, x: tf.Tensor, targets: tf.Tensor) -> tuple:
        raise NotImplementedError

    def _recording(self, found: list) -> Any:
        """While tracing: each attention layer called for its probabilities, kept in `found`
        in the order the layers run; the layer's output is what it returns normally."""

        def make(layer: Any, call: Callable) -> Callable:
            def call_keeping_scores(*args: Any, **kwargs: Any) -> Any:
                kwargs["return_attention_scores"] = True
                out, scores = call(*args, **kwargs)
                found.append(scores)
                return out

            return call_keeping_scores

        return replace_calls(self.attention, make)

    def _attention_gradients(self, x: tf.Tensor, targets: tf.Tensor) -> tuple:
        """While tracing: the attention probabilities of every block, the explained score's
        gradient with respect to each (zeros where the score does not reach a block), the
        logits and the targets."""
        found: list = []
        with self._recording(found):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                _, logits = self.runner.forward(x)
                targets, y = self.runner._pick(logits, targets)
        grads = tape.gradient(y, found)
        grads = [tf.zeros_like(a) if g is None else g for a, g in zip(found, grads)]
        return found, grads, logits, targets

    def to_grid(self, relevance: tf.Tensor) -> tf.Tensor:
        """(B, T, T) token relevance -> (B, h, w): the class token's row over the patch tokens
        (no prefix token: the mean of the patch tokens' rows)."""
        tokens = int(relevance.shape[-1])
        layout = _token_layout(self.model, self.attention[-1], tokens)
        if layout is None:
            raise LayerError(
                f"Method {self.name!r}: the attention of model {self.model.name!r} runs over "
                f"{tokens} tokens, which no patch grid of the model accounts for."
            )
        prefix, h, w = layout
        row = relevance[:, 0, prefix:] if prefix else tf.reduce_mean(relevance, axis=1)
        return tf.reshape(row, (-1, h, w))


@register("attention_rollout")
class AttentionRollout(AttentionMethod):
    """Attention rollout: how attention mixes tokens, multiplied through the blocks.

    Each block's attention is fused over heads, its lowest `discard_ratio` entries dropped,
    the residual connection added (0.5 A + 0.5 I, rows renormalised), and the blocks
    multiplied; the map is the class token's row over the patch tokens (for a model without a
    prefix token, the mean of the patch tokens' rows). Class-agnostic: every target gets the
    same map. Follows jacobgil/vit-explain, except that rows are renormalised with the row sums
    (vit-explain's `a / a.sum(dim=-1)` divides column j by row j's sum, which differs from
    this only where the fused rows do not sum to 1: "max"/"min" fusion or `discard_ratio` > 0;
    `scripts/compare_transformers.py` measures both).

    Args:
        head_fusion: "mean" (default), "max" or "min" over heads.
        discard_ratio: fraction in [0, 1) of the lowest fused attentions dropped per block.

    Reference: Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
    """

    reference = "Abnar & Zuidema, ACL 2020"

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
    ):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        self.head_fusion = check_choice(
            head_fusion, "head_fusion", ("mean", "max", "min"), where=where
        )
        self.discard_ratio = check_number(
            discard_ratio, "discard_ratio", low=0.0, high=1.0, high_open=True, where=where
        )

    @property
    def kernel_key(self) -> str:
        return f"{self.name}:{self.head_fusion}:{self.discard_ratio}"

    def _batch(self, x, targets):
        found: list = []
        with self._recording(found):
            _, logits = self.runner.forward(x)
        targets = self.runner.resolve_targets(logits, targets)
        return self.to_grid(rollout(found, self.head_fusion, self.discard_ratio)), logits, targets


@register("chefer")
class Chefer(AttentionMethod):
    """Gradient-weighted attention relevance (Chefer et al., ICCV 2021, "generic attention
    explainability"): R = I; per block R += mean over heads of (dy/dA * A)^+ times R, with y
    the target logit; the map is the class token's row of R over the patch tokens (no prefix
    token: the mean of the patch tokens' rows). As the authors' ViT code
    (hila-chefer/Transformer-MM-Explainability).

    Reference: Chefer, Gur & Wolf, "Generic Attention-model Explainability for Interpreting
    Bi-Modal and Encoder-Decoder Transformers", ICCV 2021.
    """

    reference = "Chefer et al., ICCV 2021"

    def _batch(self, x, targets):
        found, grads, logits, targets = self._attention_gradients(x, targets)
        return self.to_grid(chefer_relevance(found, grads)), logits, targets


# -- AttnLRP -----------------------------------------------------------------------------------
def _is_linear(activation: Any) -> bool:
    return activation is None or activation is keras.activations.linear


def _epsilon(eps: float) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """LRP-epsilon at a linear output z, as a gradient scale z / (z + eps sign(z))."""

    def scale(z: tf.Tensor) -> tf.Tensor:
        if eps == 0:
            return tf.ones_like(z)
        return z / (z + eps * tf.where(z >= 0, tf.ones_like(z), -tf.ones_like(z)))

    return scale


def _identity_rule(act: Callable, z: tf.Tensor) -> tf.Tensor:
    """act(z) forward; backward the gradient times act(z) / z (AttnLRP's identity rule: an
    element-wise nonlinearity passes its relevance on unchanged)."""
    y = act(z)
    return _with_gradient(y, z, _safe_divide(y, z))


def _layer_norm(layer: keras.layers.LayerNormalization, x: tf.Tensor) -> tf.Tensor:
    """LayerNorm with its normalising scale a constant (identity rule; CP-LRP's LN rule)."""
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    axes = [a % x.shape.rank for a in axis]
    xf = tf.cast(x, tf.float32)
    if getattr(layer, "rms_scaling", False):
        y = xf * _sg(tf.math.rsqrt(tf.reduce_mean(xf**2, axes, keepdims=True) + layer.epsilon))
    else:
        mean, var = tf.nn.moments(xf, axes, keepdims=True)
        y = (xf - mean) * _sg(tf.math.rsqrt(var + layer.epsilon))
    if layer.gamma is not None:
        y = y * tf.cast(layer.gamma, y.dtype)
    if layer.beta is not None and not getattr(layer, "rms_scaling", False):
        y = y + tf.cast(layer.beta, y.dtype)
    return tf.cast(y, x.dtype)


def _pre_activation(layer: Any, x: tf.Tensor) -> tf.Tensor | None:
    """A Dense or EinsumDense layer's output before its activation (None for other layers)."""
    kernel = tf.cast(layer.kernel, layer.compute_dtype)
    x = tf.cast(x, layer.compute_dtype)
    if isinstance(layer, keras.layers.Dense):
        z = keras.ops.matmul(x, kernel)
    elif isinstance(layer, keras.layers.EinsumDense):
        z = keras.ops.einsum(layer.equation, x, kernel)
    else:
        return None
    bias = getattr(layer, "bias", None)
    return z if bias is None else z + tf.cast(bias, z.dtype)


_ELEMENTWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.ELU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
)


class _Rules:
    """The AttnLRP rules, as `make(layer, call)` for `replace_calls` (see `AttnLRP`)."""

    def __init__(self, model: keras.Model, attention: list[Any], epsilon: float, rule: str):
        self.scale = _epsilon(epsilon)
        self.share: dict[int, float | None] = {}  # query/key/value projections
        for mha in attention:
            qk = None if rule == "cp" else 0.25
            self.share[id(mha._query_dense)] = qk
            self.share[id(mha._key_dense)] = qk
            self.share[id(mha._value_dense)] = 1.0 if rule == "cp" else 0.5
        self.layers = [
            lay
            for lay in _all_layers(model)
            if isinstance(lay, keras.layers.LayerNormalization)
            or isinstance(lay, _ELEMENTWISE)
            or id(lay) in self.share
            or (is_builtin(lay) and hasattr(lay, "kernel") and hasattr(lay, "activation"))
        ]

    def __call__(self, layer: Any, call: Callable) -> Callable:
        share = self.share.get(id(layer), 1.0)
        activation = getattr(layer, "activation", None)

        def ruled(*args: Any, **kwargs: Any) -> Any:
            y = call(*args, **kwargs)
            x = args[0] if args else kwargs.get("inputs")
            if not isinstance(y, tf.Tensor) or not isinstance(x, tf.Tensor):
                return y
            if isinstance(layer, keras.layers.LayerNormalization):
                return _with_gradient(y, _layer_norm(layer, x), 1.0)
            if share is None:  # CP-LRP: no relevance through the attention logits
                return _sg(y)
            if isinstance(layer, _ELEMENTWISE):
                return _identity_rule(lambda _: y, tf.cast(x, y.dtype))
            if _is_linear(activation):
                return _with_gradient(y, y, share * self.scale(y))
            z = _pre_activation(layer, x)
            if z is None:
                return y  # a convolution with a built-in nonlinearity: plain gradient
            z = _with_gradient(z, z, share * self.scale(z))
            return _with_gradient(y, _identity_rule(activation, z), 1.0)

        return ruled


@register("attnlrp")
class AttnLRP(AttentionMethod):
    """AttnLRP: Layer-wise Relevance Propagation through attention, LayerNorm and GELU, as input
    x modified gradient (the authors' "efficient" formulation, LXT 2).

    Rules, applied by changing gradients while the model is traced (the model is not changed):
    LayerNorm's normalising scale is a constant (identity rule); element-wise activations
    (GELU inside Dense layers, Activation layers) pass relevance unchanged (gradient times
    act(z)/z); the two bilinear products of attention (Q K^T and A V) split relevance evenly
    between their factors (uniform rule: the query and key projections get 1/4 of the
    gradient, the value projection 1/2); the softmax keeps its gradient, which is the paper's
    softmax rule in this formulation; Dense, EinsumDense and convolution outputs use the
    epsilon rule. With `attention_rule="cp"` no relevance flows through the attention
    logits (CP-LRP inside attention, Ali et al. 2022: A is a constant, the value projection
    gets the full gradient), as LXT does for torchvision's ViT.

    Conservation: on a model without biases, constant tokens (class token, position
    embedding) or softmax relevance (`attention_rule="cp"`), the relevance sums to the target
    logit; the softmax rule absorbs relevance by design (the paper's bias term).

    Attributions (B, H, W, C) are signed relevance; the map sums channels. Nonlinearities
    written inline in a custom layer's `call` (not a layer) keep their plain gradient.

    Args:
        epsilon: the epsilon rule's stabiliser at linear layers (LXT: 0).
        attention_rule: "attnlrp" (default, uniform + softmax rules) or "cp".

    Reference: Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
    Transformers", ICML 2024.
    """

    reference = "Achtibat et al., ICML 2024"
    signed = True
    zero_map_cause = "no relevance reached the input (a zero logit)"

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        epsilon: float = 1e-6,
        attention_rule: str = "attnlrp",
    ):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        self.epsilon = check_number(epsilon, "epsilon", low=0.0, where=where)
        self.rule = check_choice(attention_rule, "attention_rule", ("attnlrp", "cp"), where=where)
        self.rules = _Rules(self.model, self.attention, self.epsilon, self.rule)

    @property
    def kernel_key(self) -> str:
        return f"{self.name}:{self.epsilon}:{self.rule}"

    def _batch(self, x, targets):
        with replace_calls(self.rules.layers, self.rules):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                _, logits = self.runner.forward(x)
                targets, y = self.runner._pick(logits, targets)
        relevance = x * tape.gradient(y, x)
        return tf.reduce_sum(relevance, axis=-1), logits, targets, relevance


@register("transformer_attribution")
class TransformerAttribution(AttentionMethod):
    """Transformer attribution (Chefer et al., CVPR 2021): per block, the LRP relevance of the
    attention R_A weighted by its gradient, E = mean over heads of (dy/dA * R_A)^+, and the
    product over blocks of I + E; the map is the class token's row over the patch tokens (no
    prefix token: the mean of the patch tokens' rows).

    R_A here is AttnLRP's relevance of A (A times its AttnLRP gradient, halved by the uniform
    rule of A V), where the authors' code propagates their own LRP rules (alpha-beta on linear
    layers); the gradient is the plain one, as theirs.

    Args:
        epsilon: the epsilon rule's stabiliser at linear layers in the LRP pass.

    Reference: Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention
    Visualization", CVPR 2021.
    """

    reference = "Chefer et al., CVPR 2021"

    def __init__(self, session: Session, layer: Any = None, epsilon: float = 1e-6):
        super().__init__(session, layer)
        self.epsilon = check_number(epsilon, "epsilon", low=0.0, where=f"method {self.name!r}")
        self.rules = _Rules(self.model, self.attention, self.epsilon, "attnlrp")

    @property
    def kernel_key(self) -> str:
        return f"{self.name}:{self.epsilon}"

    def _batch(self, x, targets):
        _, grads, logits, targets = self._attention_gradients(x, targets)
        ruled: list = []
        with replace_calls(self.rules.layers, self.rules), self._recording(ruled):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                _, ruled_logits = self.runner.forward(x)
                y = tf.gather(ruled_logits, targets, batch_dims=1)
        relevance = [
            tf.zeros_like(a) if g is None else 0.5 * a * g
            for a, g in zip(ruled, tape.gradient(y, ruled))
        ]
        return self.to_grid(attribution_rollout(relevance, grads)), logits, targets
