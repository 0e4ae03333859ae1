"""The CAM family: maps built from a conv layer's activations A (B, h, w, K).

`CamMethod` does the tape, the ReLU and the weighted sum; a method only says how the channel
weights are computed from A and the gradients G = d(target logit)/dA (`channel_weights`), or,
for element-wise methods such as Layer-CAM, overrides `combine`.
"""

from __future__ import annotations

import functools
from typing import Any

import keras
import tensorflow as tf

from xai_keras.checks import check_int
from xai_keras.errors import LayerError
from xai_keras.explain.base import BatchResult, Method, register
from xai_keras.explain.layers import downstream

__all__ = [
    "CamMethod",
    "gap_dense_head",
    "SharedCam",
    "shares_pass",
    "Cam",
    "GradCam",
    "GradCamPlusPlus",
    "XGradCam",
    "LayerCam",
    "EigenCam",
    "ScoreCam",
]

_SPATIAL = (1, 2)


def _safe_divide(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return a / tf.where(b != 0, b, tf.ones_like(b))


def _weighted_sum(a: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """relu(sum_k weights[b, k] * a[b, :, :, k]): the CAM of each image."""
    return tf.nn.relu(tf.einsum("bhwk,bk->bhw", a, weights))


_PASS_THROUGH = (keras.layers.Dropout, keras.layers.Identity, keras.layers.Flatten)


def gap_dense_head(model: keras.Model, path: str) -> keras.layers.Dense | None:
    """The Dense layer fed by GAP(layer) through nothing but dropout, or None."""
    seen_gap = False
    for op in downstream(model, path):
        if isinstance(op, keras.layers.GlobalAveragePooling2D) and not seen_gap:
            seen_gap = True
        elif isinstance(op, keras.layers.Dense) and seen_gap:
            return op
        elif not isinstance(op, _PASS_THROUGH) or not seen_gap:
            return None
    return None


def _masked_scores(runner, image, channel_maps, target):
    """Score-CAM's kernel: target probability of `image` masked by each upsampled channel,
    normalised to [0, 1]."""
    size = tf.shape(image)[:2]
    up = tf.image.resize(channel_maps[..., None], size, method="bilinear")
    low = tf.reduce_min(up, axis=(1, 2, 3), keepdims=True)
    high = tf.reduce_max(up, axis=(1, 2, 3), keepdims=True)
    masks = tf.where(high > low, _safe_divide(up - low, high - low), tf.zeros_like(up))
    return runner.squash(runner.forward(image[None] * masks)[1])[:, target]


class CamMethod(Method):
    """Base of the CAM family: relu(sum_k w_k A_k) with weights from `channel_weights`."""

    family = "cam"
    uses_layer = True
    zero_map_cause = (
        "the channel-weighted sum is negative or zero at every position, so the ReLU leaves "
        "nothing: at this layer the evidence is against the class; try another layer"
    )

    def channel_weights(self, a: tf.Tensor, g: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """(B, K) weight of each channel for each image."""
        raise NotImplementedError

    def combine(self, a: tf.Tensor, g: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """(B, h, w) map from activations and gradients."""
        return _weighted_sum(a, self.channel_weights(a, g, targets))

    def _batch(self, x: tf.Tensor, targets: tf.Tensor) -> tuple:
        a, g, logits, targets = self.runner.layer_grads_fn(x, targets)
        return self.combine(a, g, targets), logits, targets

    def attribute(self, x: tf.Tensor, targets: tf.Tensor) -> BatchResult:
        # One compiled kernel per method and runner: tape, weights and sum in one graph.
        return BatchResult(*self.runner.kernel(f"cam:{self.name}", self._batch)(x, targets))


def shares_pass(method: Method) -> bool:
    """Whether `method` builds its map from one (activation, gradient) pass of its layer."""
    return isinstance(method, CamMethod) and type(method).attribute is CamMethod.attribute


class SharedCam(Method):
    """Several CAMs of one layer from one forward and backward pass.

    `raw` of its `BatchResult` is (B, M, h, w): member m's maps are `raw[:, m]`.
    """

    family = "cam"
    uses_layer = True

    def __init__(self, members: list[CamMethod]):
        self.members = members
        self.model, self.layer_path = members[0].model, members[0].layer_path
        self.layer, self.runner = members[0].layer, members[0].runner

    def _batch(self, x: tf.Tensor, targets: tf.Tensor) -> tuple:
        a, g, logits, targets = self.runner.layer_grads_fn(x, targets)
        maps = tf.stack([m.combine(a, g, targets) for m in self.members], axis=1)
        return maps, logits, targets

    def attribute(self, x: tf.Tensor, targets: tf.Tensor) -> BatchResult:
        key = "shared:" + ",".join(m.name for m in self.members)
        return BatchResult(*self.runner.kernel(key, self._batch)(x, targets))


@register("gradcam")
class GradCam(CamMethod):
    """Grad-CAM: channels weighted by their spatially averaged gradient.

    Reference: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
    """

    reference = "Selvaraju et al., ICCV 2017"

    def channel_weights(self, a, g, targets):
        return tf.reduce_mean(g, axis=_SPATIAL)


@register("cam")
class Cam(CamMethod):
    """CAM: channels weighted by the class's row of the dense layer after global pooling.

    Exact only for a global-average-pooling + dense head; on such models Grad-CAM equals it
    up to the factor 1/(h*w).

    Reference: Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016.
    """

    reference = "Zhou et al., CVPR 2016"

    def __init__(self, model: keras.Model, layer: Any = None):
        super().__init__(model, layer)
        self.dense = gap_dense_head(model, self.layer_path)
        if self.dense is None:
            raise LayerError(
                f"method='cam' needs layer {self.layer_path!r} to feed a GlobalAveragePooling2D "
                f"+ Dense head, and in model {model.name!r} it does not. Use method='gradcam', "
                "which equals CAM on such models and works on any model."
            )

    def channel_weights(self, a, g, targets):
        rows = tf.transpose(tf.cast(self.dense.kernel, tf.float32))
        if self.runner.num_scores == 2 and rows.shape[0] == 1:  # one sigmoid unit: 0 = -logit
            rows = tf.concat([-rows, rows], axis=0)
        return tf.gather(rows, targets)


@register("gradcam++")
class GradCamPlusPlus(CamMethod):
    """Grad-CAM++: positive gradients weighted per pixel by higher-order terms.

    With an exponential score the second and third derivatives are powers of the first, so
    alpha = g^2 / (2 g^2 + sum(A) g^3) (0 where the denominator is 0). Follows the authors'
    final reference code: alpha is normalised over the positions with a *positive* gradient
    only (the positions whose weight relu(g) is non-zero). Normalising over all positions, as
    earlier versions and some peers do, lets the negative alphas of negative-gradient positions
    flip the sign of the sum, so a channel's weight can turn negative (A = [5, 5],
    g = [0.1, -0.25] gave w = -0.02). Here every weight is >= 0 on non-negative activations.

    Reference: Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep
    Convolutional Networks", WACV 2018.
    """

    reference = "Chattopadhay et al., WACV 2018"
    same_when_pooled = "equals gradcam with negative channel weights set to zero"

    def channel_weights(self, a, g, targets):
        g2, g3 = g**2, g**3
        total = tf.reduce_sum(a, axis=_SPATIAL, keepdims=True)
        alpha = _safe_divide(g2, 2.0 * g2 + total * g3)
        positive = tf.nn.relu(g)
        norm = tf.reduce_sum(tf.where(positive > 0, alpha, 0.0), axis=_SPATIAL, keepdims=True)
        return tf.reduce_sum(_safe_divide(alpha, norm) * positive, axis=_SPATIAL)


@register("xgradcam")
class XGradCam(CamMethod):
    """XGrad-CAM: gradients weighted by the normalised activations.

    Reference: Fu et al., "Axiom-based Grad-CAM", BMVC 2020.
    """

    reference = "Fu et al., BMVC 2020"
    same_when_pooled = "equals gradcam"

    def channel_weights(self, a, g, targets):
        total = tf.reduce_sum(a, axis=_SPATIAL)
        return _safe_divide(tf.reduce_sum(g * a, axis=_SPATIAL), total)


@register("layercam")
class LayerCam(CamMethod):
    """Layer-CAM: every activation weighted by its own positive gradient.

    Reference: Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization", IEEE TIP 2021.
    """

    reference = "Jiang et al., IEEE TIP 2021"
    same_when_pooled = "equals gradcam with negative channel weights set to zero"

    def combine(self, a, g, targets):
        return tf.nn.relu(tf.reduce_sum(tf.nn.relu(g) * a, axis=-1))


@register("eigencam")
class EigenCam(CamMethod):
    """Eigen-CAM: the activations projected on their first principal component.

    Class-agnostic (no gradients): it shows what the layer responds to most.

    Reference: Muhammad & Yeasin, "Eigen-CAM", IJCNN 2020.
    """

    reference = "Muhammad & Yeasin, IJCNN 2020"

    def combine(self, a, g, targets):
        b, h, w, k = tf.unstack(tf.shape(a))
        flat = tf.reshape(a, (b, h * w, k))
        _, _, v = tf.linalg.svd(flat)
        projection = tf.einsum("bnk,bk->bn", flat, v[:, :, 0])
        # The component's sign is arbitrary: orient it so most of the mass is positive.
        sign = tf.sign(tf.reduce_sum(projection, axis=1, keepdims=True))
        projection = projection * tf.where(sign == 0, tf.ones_like(sign), sign)
        return tf.nn.relu(tf.reshape(projection, (b, h, w)))


@register("scorecam")
class ScoreCam(CamMethod):
    """Score-CAM: each channel weighted by the class probability of the input masked by it.

    Every channel costs one forward pass; the masked passes run in compiled, fixed-size
    batches (`batch_size`). `max_channels` keeps only the most active channels per image to
    bound the cost on wide layers (e.g. 2048 channels on ResNet50).

    Args:
        max_channels: the number of channels (by mean activation) to score; None for all.

    Reference: Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020.
    """

    reference = "Wang et al., CVPR-W 2020"

    def __init__(self, model: keras.Model, layer: Any = None, max_channels: int | None = None):
        super().__init__(model, layer)
        where = f"method {self.name!r}"
        max_channels = check_int(max_channels, "max_channels", low=1, where=where, allow_none=True)
        self.max_channels = max_channels
        self._masked_scores = self.runner.kernel(
            "scorecam:masked", functools.partial(_masked_scores, self.runner)
        )

    def _channel_scores(self, x, a, targets):
        k = a.shape[-1]
        chunk = self.batch_size
        rows = []
        for i in range(a.shape[0]):
            channels = tf.range(k)
            if self.max_channels is not None and self.max_channels < k:
                channels = tf.math.top_k(tf.reduce_mean(a[i], axis=(0, 1)), self.max_channels)[1]
            maps = tf.transpose(tf.gather(a[i], channels, axis=-1), (2, 0, 1))  # (k', h, w)
            n = int(maps.shape[0])
            padded = tf.pad(maps, [[0, -n % chunk], [0, 0], [0, 0]])
            scores = tf.concat(
                [
                    self._masked_scores(x[i], padded[j : j + chunk], targets[i])
                    for j in range(0, n + (-n % chunk), chunk)
                ],
                axis=0,
            )[:n]
            rows.append(tf.scatter_nd(channels[:, None], scores, (k,)))
        return tf.stack(rows)

    def attribute(self, x, targets):
        a, logits = self.runner.kernel("forward", self.runner.forward)(x)  # no gradients needed
        a = self.runner.to_grid(a)
        targets = self.runner.resolve_targets(logits, targets)
        self.runner.squash(logits)  # decide, eagerly, whether outputs need a softmax
        weights = self._channel_scores(x, a, targets)
        return BatchResult(_weighted_sum(a, weights), logits, targets)
