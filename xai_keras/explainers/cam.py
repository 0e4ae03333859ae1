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

from xai_keras.checks import check_choice, check_int, check_number
from xai_keras.errors import InputError, LayerError
from xai_keras.explainers.base import BatchResult, Method, register
from xai_keras.explainers.layers import downstream
from xai_keras.explainers.session import Session

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
    "HiResCam",
    "FinerCam",
    "ShapleyCam",
    "KpcaCam",
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
    compiled_step = True
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

    @property
    def kernel_key(self) -> str:
        """Names this method's compiled kernels on the runner: the name, plus any options
        the traced graph depends on (the first instance's kernel serves every later one)."""
        return self.name

    def attribute(self, x: tf.Tensor, targets: tf.Tensor) -> BatchResult:
        # One compiled kernel per method and runner: tape, weights and sum in one graph.
        return BatchResult(*self.runner.kernel(f"cam:{self.kernel_key}", self._batch)(x, targets))


def shares_pass(method: Method) -> bool:
    """Whether `method` builds its map from one (activation, gradient) pass of its layer."""
    return isinstance(method, CamMethod) and type(method).attribute is CamMethod.attribute


class SharedCam(Method):
    """Several CAMs of one layer from one forward and backward pass.

    `raw` of its `BatchResult` is (B, M, h, w): member m's maps are `raw[:, m]`.
    """

    family = "cam"
    uses_layer = True
    compiled_step = True

    def __init__(self, members: list[CamMethod]):
        self.members = members
        self.session, self.model = members[0].session, members[0].model
        self.layer_path = members[0].layer_path
        self.layer, self.runner = members[0].layer, members[0].runner

    def _batch(self, x: tf.Tensor, targets: tf.Tensor) -> tuple:
        a, g, logits, targets = self.runner.layer_grads_fn(x, targets)
        maps = tf.stack([m.combine(a, g, targets) for m in self.members], axis=1)
        return maps, logits, targets

    def attribute(self, x: tf.Tensor, targets: tf.Tensor) -> BatchResult:
        key = "shared:" + ",".join(m.kernel_key for m in self.members)
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

    def __init__(self, session: Session, layer: Any = None):
        super().__init__(session, layer)
        self.dense = gap_dense_head(self.model, self.layer_path)
        if self.dense is None:
            raise LayerError(
                f"method='cam' needs layer {self.layer_path!r} to feed a GlobalAveragePooling2D "
                f"+ Dense head, and in model {self.model.name!r} it does not. Use "
                "method='gradcam', which equals CAM on such models and works on any model."
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
    compiled_step = False  # a Python loop over images and channel chunks

    def __init__(self, session: Session, layer: Any = None, max_channels: int | None = None):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        max_channels = check_int(max_channels, "max_channels", low=1, where=where, allow_none=True)
        self.max_channels = max_channels
        self._masked_scores = self.runner.kernel(
            "scorecam:masked", functools.partial(_masked_scores, self.runner)
        )

    def _channel_scores(self, x, a, targets):
        k = a.shape[-1]
        rows = []
        for i in range(a.shape[0]):
            channels = tf.range(k)
            if self.max_channels is not None and self.max_channels < k:
                channels = tf.math.top_k(tf.reduce_mean(a[i], axis=(0, 1)), self.max_channels)[1]
            maps = tf.transpose(tf.gather(a[i], channels, axis=-1), (2, 0, 1))  # (k', h, w)
            scores = self.session.map_batches(
                functools.partial(self._masked_scores, x[i], target=targets[i]), maps
            )
            rows.append(tf.scatter_nd(channels[:, None], scores, (k,)))
        return tf.stack(rows)

    def attribute(self, x, targets):
        a, logits = self.runner.kernel("forward", self.runner.forward)(x)  # no gradients needed
        a = self.runner.to_grid(a)
        targets = self.runner.resolve_targets(logits, targets)
        self.runner.squash(logits)  # decide, eagerly, whether outputs need a softmax
        weights = self._channel_scores(x, a, targets)
        return BatchResult(_weighted_sum(a, weights), logits, targets)


# -- newer CAMs ---------------------------------------------------------------------------
@register("hirescam")
class HiResCam(CamMethod):
    """HiResCAM: every activation times its own gradient, summed over channels.

    relu(sum_k G_k * A_k) per position. Before the ReLU the map sums to sum(G * A), the
    first-order term of the score in the layer's activations, so it shows only what the
    gradient at each position credits there (Grad-CAM's spatially averaged gradients can show
    positions the score does not depend on). Where the gradient is the same at every position
    (a GAP + dense head) it equals Grad-CAM exactly.

    Reference: Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations
    of convolutional neural networks", arXiv:2011.08891, 2020.
    """

    reference = "Draelos & Carin, arXiv 2020"
    same_when_pooled = "equals gradcam"

    def combine(self, a, g, targets):
        return tf.nn.relu(tf.reduce_sum(g * a, axis=-1))


def _finer_score(logits, targets, comparisons, alpha):
    """Finer-CAM's score: sum_d p_d (y_c - alpha y_d) / sum_d p_d over the `comparisons`
    classes d whose logits are closest to the target's, p the softmax probabilities."""
    classes = logits.shape[-1]
    if classes is None or classes < 2:
        raise InputError(
            "method 'finercam' compares the target with other classes, and the explained "
            f"output has {classes} score column(s); use method='gradcam'."
        )
    own = tf.gather(logits, targets, batch_dims=1)
    distance = tf.stop_gradient(tf.abs(logits - own[:, None]))
    distance = tf.where(tf.one_hot(targets, classes) > 0, float("inf"), distance)
    similar = tf.math.top_k(-distance, k=min(comparisons, classes - 1))[1]
    p = tf.gather(tf.nn.softmax(logits), similar, batch_dims=1)
    gaps = own[:, None] - alpha * tf.gather(logits, similar, batch_dims=1)
    return tf.reduce_sum(p * gaps, axis=-1) / tf.maximum(tf.reduce_sum(p, axis=-1), 1e-30)


@register("finercam")
class FinerCam(CamMethod):
    """Finer-CAM: Grad-CAM of the target's lead over its most similar classes.

    Explains S = sum_d p_d (y_c - alpha * y_d) / sum_d p_d instead of y_c, where d runs over
    the `comparisons` classes whose logits are closest to the target's (for the top class:
    the runners-up) and p are the softmax probabilities. Channels that also support those
    classes cancel, leaving what tells the target apart from them. alpha = 0 gives Grad-CAM.
    As in the authors' code and pytorch-grad-cam, the probability weights are differentiated
    too (they are part of the explained score, not constants). Needs its own backward pass.

    Args:
        comparisons: how many similar classes to compare with (fewer if the model has fewer).
        alpha: comparison strength, >= 0 (1 in the paper's default setting).

    Reference: Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for
    Visual Explanation", CVPR 2025.
    """

    reference = "Zhang et al., CVPR 2025"
    zero_map_cause = (
        "the channel-weighted sum is negative or zero at every position: at this layer the "
        "evidence separating the class from its most similar classes is against it; lower "
        "alpha or try another layer"
    )

    def __init__(
        self, session: Session, layer: Any = None, comparisons: int = 3, alpha: float = 1.0
    ):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        self.comparisons = check_int(comparisons, "comparisons", low=1, where=where)
        self.alpha = check_number(alpha, "alpha", low=0, where=where)
        classes = self.runner.num_scores  # None until a pass for subclassed models
        if classes is not None and classes < 2:
            _finer_score(tf.zeros((1, classes)), tf.zeros((1,), tf.int32), 1, 0.0)  # refuses

    def _batch(self, x, targets):
        score = functools.partial(_finer_score, comparisons=self.comparisons, alpha=self.alpha)
        a, g, logits, targets = self.runner.score_grads(x, targets, score)
        return _weighted_sum(a, tf.reduce_mean(g, axis=_SPATIAL)), logits, targets

    def attribute(self, x, targets):
        return BatchResult(*self.runner.kernel(self.kernel_key, self._batch)(x, targets))

    @property
    def kernel_key(self):
        return f"{self.name}:{self.comparisons}:{self.alpha!r}"


def _log_probabilities(runner, scores):
    """log p of every score column, as `runner.squash` reads the head."""
    if runner.kind == "sigmoid" or scores.shape[-1] == 1:
        return tf.math.log_sigmoid(scores)
    if runner.kind == "auto" and runner.outputs_are_probabilities:
        return tf.math.log(tf.maximum(scores, 1e-30))
    return tf.nn.log_softmax(scores)


@register("shapleycam")
class ShapleyCam(CamMethod):
    """ShapleyCAM: channels weighted by the gradient minus half the Hessian-activation product.

    w_k = mean over positions of (G - H A / 2)_k, with H the Hessian of the score in the
    layer's activations: the second-order Taylor estimate of each channel's Shapley value in
    a game whose players are the activations (Grad-CAM is the first-order one). The score is
    the paper's ReST utility (`utility="rest"`), y_c + log p_c: the logit plus the log of its
    softmax (sigmoid for sigmoid heads) probability, so competing classes count. With
    `utility="logit"` the raw logit is used, as pytorch-grad-cam does by default; behind a
    layer the logit depends on piecewise-linearly (ReLU, pooling, dense), H A is then 0 and
    the map equals Grad-CAM. Costs a second backward pass (its own compiled kernel).

    Args:
        utility: "rest" (default, the paper's) or "logit".

    Reference: Cai, "CAMs as Shapley Value-based Explainers", The Visual Computer 2025
    (arXiv:2501.06261).
    """

    reference = "Cai, The Visual Computer 2025"

    def __init__(self, session: Session, layer: Any = None, utility: str = "rest"):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        self.utility = check_choice(utility, "utility", ("rest", "logit"), where=where)
        if self.utility == "rest" and self.runner.kind in ("linear", "score"):
            raise InputError(
                f"method 'shapleycam' with utility='rest' needs class probabilities, and the "
                f"explained output of model {self.model.name!r} is read as {self.runner.kind!r} "
                "values; pass utility='logit'."
            )

    def _batch(self, x, targets):
        runner = self.runner
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch(x)
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(x)
                activation, logits = runner.forward(x)
                targets, y = runner._pick(logits, targets)
                if self.utility == "rest":
                    y = y + tf.gather(_log_probabilities(runner, logits), targets, batch_dims=1)
            g = inner.gradient(y, activation)
            if g is None:
                raise LayerError(
                    f"The explained score does not depend on layer {runner.layer.name!r} (it "
                    "is not on the path to the chosen output); pick a layer before that output."
                )
            # sum(G * A) with A held constant: its gradient in A is H A (H is symmetric).
            gxa = tf.reduce_sum(g * tf.stop_gradient(activation))
        hvp = outer.gradient(gxa, activation, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        a, g, hvp = runner.to_grid(activation), runner.to_grid(g), runner.to_grid(hvp)
        weights = tf.reduce_mean(g - 0.5 * hvp, axis=_SPATIAL)
        return _weighted_sum(a, weights), logits, targets

    def attribute(self, x, targets):
        undecided = self.runner.kind == "auto" and self.runner.outputs_are_probabilities is None
        if undecided and tf.executing_eagerly():
            self.runner.squash(self.runner.forward_fn(x))  # decide, eagerly, how to read outputs
        return BatchResult(*self.runner.kernel(self.kernel_key, self._batch)(x, targets))

    @property
    def kernel_key(self):
        return f"{self.name}:{self.utility}"


_KPCA_KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def _kernel_matrix(x, kernel, gamma):
    """(B, n, n) kernel between the rows of x (B, n, k), with scikit-learn's definitions
    (coef0 = 1, degree = 3)."""
    dot = tf.einsum("bnk,bmk->bnm", x, x)
    if kernel == "linear":
        return dot
    if kernel == "sigmoid":
        return tf.tanh(gamma * dot + 1.0)
    if kernel == "poly":
        return (gamma * dot + 1.0) ** 3
    squares = tf.linalg.diag_part(dot)
    if kernel == "rbf":
        distance = squares[:, :, None] + squares[:, None, :] - 2.0 * dot
        return tf.exp(-gamma * tf.maximum(distance, 0.0))
    norms = tf.sqrt(squares)  # cosine; zero rows stay zero
    return _safe_divide(dot, norms[:, :, None] * norms[:, None, :])


@register("kpcacam")
class KpcaCam(CamMethod):
    """KPCA-CAM: the activations projected on their first kernel principal component.

    Eigen-CAM with kernel PCA: the positions (rows of channel values, centred over positions)
    are compared through a kernel, and the map is each position's score on the leading
    component of the centred kernel matrix (eigenvector times the square root of its
    eigenvalue), ReLU'd. Class-agnostic (no gradients). The component's sign is arbitrary
    and, as the projections sum to zero, cannot be set by the mass as Eigen-CAM's is; as in
    scikit-learn (which the authors and pytorch-grad-cam use), the position of largest
    magnitude is made positive. Solved in float64; a layer of n positions costs an n x n
    eigendecomposition per image.

    Args:
        kernel: "sigmoid" (default, as the authors'), "rbf", "poly", "linear" (= PCA) or
            "cosine", with scikit-learn's constants (coef0 = 1, degree = 3).
        gamma: the kernel's scale (> 0); None for 1 / channels.

    Reference: Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision
    Models using Kernel PCA", IEEE MMSP 2024 (arXiv:2410.00267).
    """

    reference = "Karmani et al., IEEE MMSP 2024"
    zero_map_cause = (
        "the activations are the same at every position, so there is no component to show"
    )

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        kernel: str = "sigmoid",
        gamma: float | None = None,
    ):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        self.kernel = check_choice(kernel, "kernel", _KPCA_KERNELS, where=where)
        self.gamma = check_number(
            gamma, "gamma", low=0, low_open=True, where=where, allow_none=True
        )

    @property
    def kernel_key(self):
        return f"{self.name}:{self.kernel}:{self.gamma!r}"

    def combine(self, a, g, targets):
        b, h, w, k = tf.unstack(tf.shape(a))
        x = tf.cast(tf.reshape(a, (b, h * w, k)), tf.float64)
        x = tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)
        x = x - tf.reduce_mean(x, axis=1, keepdims=True)
        gamma = self.gamma if self.gamma is not None else 1.0 / tf.cast(k, tf.float64)
        kx = _kernel_matrix(x, self.kernel, gamma)
        # Centre in feature space: K - 1K/n - K1/n + 1K1/n^2.
        kx = (
            kx
            - tf.reduce_mean(kx, axis=1, keepdims=True)
            - tf.reduce_mean(kx, axis=2, keepdims=True)
            + tf.reduce_mean(kx, axis=(1, 2), keepdims=True)
        )
        values, vectors = tf.linalg.eigh(kx)  # ascending
        v, top = vectors[:, :, -1], tf.maximum(values[:, -1], 0.0)
        peak = tf.gather(v, tf.argmax(tf.abs(v), axis=1), batch_dims=1)
        sign = tf.where(peak < 0, -tf.ones_like(peak), tf.ones_like(peak))
        projection = v * (sign * tf.sqrt(top))[:, None]
        return tf.nn.relu(tf.cast(tf.reshape(projection, (b, h, w)), tf.float32))
