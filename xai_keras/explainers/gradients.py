"""The gradient family: attributions on the input pixels, from d(target logit)/d(input).

Every method here is built on one compiled kernel (`ModelRunner.input_grads_fn`), called once
(saliency, guided backprop) or once per noise sample / path step (SmoothGrad, Integrated
Gradients) on the whole batch. `attributions` are (B, H, W, C); the map reduces channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from xai_keras.checks import INT32_MAX, check_int, check_number
from xai_keras.explainers.base import BatchResult, Method, register
from xai_keras.explainers.baselines import make_baseline
from xai_keras.explainers.cam import GradCam
from xai_keras.explainers.session import Session

__all__ = [
    "GradientMethod",
    "Saliency",
    "GuidedBackprop",
    "GuidedGradCam",
    "SmoothGrad",
    "IntegratedGradients",
]


class GradientMethod(Method):
    """Base: `attributions` gives (B, H, W, C); the map is max |attribution| over channels."""

    family = "gradient"
    compiled_step = True

    def attributions(self, x: tf.Tensor, targets: tf.Tensor) -> tuple:
        """(attributions, logits, targets) for one batch."""
        raise NotImplementedError

    def reduce(self, attributions: tf.Tensor) -> tf.Tensor:
        return tf.reduce_max(tf.abs(attributions), axis=-1)

    def attribute(self, x: tf.Tensor, targets: tf.Tensor) -> BatchResult:
        attributions, logits, targets = self.attributions(x, targets)
        return BatchResult(self.reduce(attributions), logits, targets, attributions)

    def _resolve_targets(self, x: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Fix "top class" targets on the clean input before perturbing it."""
        logits = self.runner.forward_fn(x)
        return logits, self.runner.resolve_targets(logits, targets)


@register("saliency")
class Saliency(GradientMethod):
    """Vanilla gradient saliency.

    Reference: Simonyan et al., "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR Workshop 2014.
    """

    reference = "Simonyan et al., ICLR-W 2014"

    def attributions(self, x, targets):
        return self.runner.input_grads_fn(x, targets)


@register("guided_backprop")
class GuidedBackprop(GradientMethod):
    """Guided backpropagation: only positive gradients pass back through each ReLU.

    The guided rule is applied by the runner while re-executing the model; the user's model
    and its layers are not modified.

    Reference: Springenberg et al., "Striving for Simplicity: The All Convolutional Net",
    ICLR Workshop 2015.
    """

    reference = "Springenberg et al., ICLR-W 2015"

    def __init__(self, session: Session, layer: Any = None):
        super().__init__(session, layer)
        self.guided = session.runner_for(None, guided=True)

    def attributions(self, x, targets):
        return self.guided.input_grads_fn(x, targets)


@register("guided_gradcam")
class GuidedGradCam(GuidedBackprop):
    """Guided Grad-CAM: guided backprop gated by the (upsampled, normalised) Grad-CAM map.

    Reference: Selvaraju et al., ICCV 2017.
    """

    reference = "Selvaraju et al., ICCV 2017"
    uses_layer = True

    def __init__(self, session: Session, layer: Any = None):
        super().__init__(session, layer)
        self.gradcam = GradCam(session, layer)

    def attributions(self, x, targets):
        cam = self.gradcam.attribute(x, targets)
        grads, logits, targets = self.guided.input_grads_fn(x, cam.targets)
        up = tf.image.resize(cam.raw[..., None], tf.shape(x)[1:3], method="bilinear")
        peak = tf.reduce_max(up, axis=(1, 2, 3), keepdims=True)
        # Normalise the gate before multiplying: on wide untrained networks both factors can
        # be ~1e-20, and their product underflows to zero.
        gate = up / tf.where(peak > 0, peak, tf.ones_like(peak))
        return grads * gate, logits, targets


@register("smoothgrad")
class SmoothGrad(GradientMethod):
    """SmoothGrad: the gradient averaged over noisy copies of the input.

    Args:
        samples: number of noisy copies.
        noise: noise std as a fraction of each image's value range.
        seed: noise seed. Every image in a batch gets the same noise sequence, so an image's
            map does not depend on which batch it is in.

    Reference: Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017.
    """

    reference = "Smilkov et al., 2017"

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        samples: int = 25,
        noise: float = 0.15,
        seed: int = 0,
    ):
        super().__init__(session, layer)
        where = f"method {self.name!r}"
        samples = check_int(samples, "samples", low=1, where=where)
        noise = check_number(noise, "noise", low=0.0, where=where)
        seed = check_int(seed, "seed", low=0, high=INT32_MAX, where=where)
        self.samples, self.noise, self.seed = samples, noise, seed

    def attributions(self, x, targets):
        logits, targets = self._resolve_targets(x, targets)
        spread = tf.reduce_max(x, axis=(1, 2, 3), keepdims=True) - tf.reduce_min(
            x, axis=(1, 2, 3), keepdims=True
        )
        total = tf.zeros_like(x)
        for s in range(self.samples):
            eps = tf.random.stateless_normal(tf.shape(x)[1:], seed=(self.seed, s))
            total += self.runner.input_grads_fn(x + self.noise * spread * eps, targets)[0]
        return total / self.samples, logits, targets


@register("integrated_gradients")
class IntegratedGradients(GradientMethod):
    """Integrated Gradients: (x - baseline) times the gradient averaged along the straight path.

    Attributions sum to f(x) - f(baseline) for the target logit f (completeness), up to the
    quadrature error, which shrinks as `steps` grows; `explain` checks the sum on every call.
    The path integral is taken by the midpoint rule (gradients at alpha = (k + 1/2) / steps):
    the integrand can be singular at the baseline itself (LayerNorm of a constant image has
    zero variance and a 1/sqrt(epsilon) gradient, 1e23 after a few of them in a Swin), so no
    end point is evaluated (Captum's default Gauss-Legendre rule avoids them likewise). The
    map sums channels (signed).

    Args:
        steps: number of path intervals (one gradient evaluation each).
        baseline: "black", "mean", "blur", a number or an array (see `make_baseline`).
            "black" is the darkest value of the model's input range, not 0: pass
            `explain(..., value_range=(-1, 1))` for a model that takes [-1, 1].

    Reference: Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017.
    """

    reference = "Sundararajan et al., ICML 2017"
    signed = True
    completeness_tolerance = 0.1

    def __init__(
        self,
        session: Session,
        layer: Any = None,
        steps: int = 64,
        baseline: str | float | np.ndarray = "black",
    ):
        super().__init__(session, layer)
        steps = check_int(steps, "steps", low=1, where=f"method {self.name!r}")
        self.steps, self.baseline = steps, baseline
        self.value_range = session.value_range

    def reduce(self, attributions):
        return tf.reduce_sum(attributions, axis=-1)

    def completeness_baseline(self, x):
        return make_baseline(x, self.baseline, self.value_range)

    def attributions(self, x, targets):
        logits, targets = self._resolve_targets(x, targets)
        base = self.completeness_baseline(x)
        total = tf.zeros_like(x)
        for i in range(self.steps):
            point = base + ((i + 0.5) / self.steps) * (x - base)  # midpoint rule
            total += self.runner.input_grads_fn(point, targets)[0]
        return (x - base) * total / self.steps, logits, targets
