"""Complexity metrics: how concentrated is a map? Pure numpy, any maps (N, H, W).

A map that puts its mass on few pixels is easier to read; these say how few. They read the
magnitude |map| of each pixel (signed maps count negative evidence as mass too) and need no
model. They say nothing about faithfulness: a one-pixel map of the wrong pixel is perfectly
sparse, so read them beside a faithfulness metric.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xai_keras.checks import check_maps, check_number
from xai_keras.evaluate.registry import register_metric

__all__ = ["complexity", "effective_complexity", "sparseness"]


def _magnitudes(maps: Any) -> np.ndarray:
    m = check_maps(maps)
    return np.abs(m.reshape(len(m), -1).astype(np.float64))


@register_metric(
    "sparseness",
    direction="higher",
    default=False,
    description="Gini index of the map's magnitudes: 0 for a uniform map, 1 - 1/n for one pixel",
    reference='Chalasani et al., "Concise Explanations of Neural Networks using Adversarial '
    'Training", ICML 2020',
)
def sparseness(maps: Any) -> np.ndarray:
    """Sparseness: the Gini index of |map| over the n pixels,

        G = sum_{i=1}^{n} (2 i - n - 1) a_(i) / (n sum_i a_(i)),   a_(1) <= ... <= a_(n),

    0 for a uniform map, (n - 1) / n = 1 - 1/n for a map with one non-zero pixel. An all-zero
    map gets 0 (no concentration; Quantus divides by zero there).

    Args:
        maps: (N, H, W) or (H, W) maps.

    Returns:
        (N,) values in [0, 1 - 1/n]; higher is sparser.

    Example:
        >>> sparseness(exp.maps).mean()

    Reference: Chalasani et al., "Concise Explanations of Neural Networks using Adversarial
    Training", ICML 2020. (Quantus `Sparseness`.)
    """
    a = np.sort(_magnitudes(maps), axis=1)
    n = a.shape[1]
    weights = 2 * np.arange(1, n + 1) - n - 1
    total = a.sum(axis=1)
    return np.where(total > 0, (a * weights).sum(axis=1) / (n * np.where(total > 0, total, 1)), 0.0)


@register_metric(
    "complexity",
    direction="lower",
    default=False,
    description="entropy of the map's fractional contributions |a_i| / sum |a|: 0 for one "
    "pixel, log n for a uniform map",
    reference='Bhatt, Weller and Moura, "Evaluating and Aggregating Feature-based Model '
    'Explanations", IJCAI 2020',
)
def complexity(maps: Any) -> np.ndarray:
    """Complexity: the Shannon entropy (natural log) of the fractional contributions
    p_i = |a_i| / sum_j |a_j|,  H = -sum_i p_i ln p_i (0 ln 0 = 0).

    0 for a map with one non-zero pixel, ln n for a uniform map; an all-zero map gets ln n
    (it singles nothing out).

    Args:
        maps: (N, H, W) or (H, W) maps.

    Returns:
        (N,) values in [0, ln n]; lower is simpler.

    Example:
        >>> complexity(exp.maps).mean()

    Reference: Bhatt, Weller and Moura, "Evaluating and Aggregating Feature-based Model
    Explanations", IJCAI 2020. (Quantus `Complexity`, which uses `scipy.stats.entropy`:
    the same.)
    """
    a = _magnitudes(maps)
    total = a.sum(axis=1, keepdims=True)
    p = np.where(total > 0, a / np.where(total > 0, total, 1), 1.0 / a.shape[1])
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=1)


@register_metric(
    "effective_complexity",
    direction="lower",
    default=False,
    description="share of pixels whose magnitude exceeds `eps` times the map's largest",
    reference='Nguyen and Martinez, "On Quantitative Aspects of Model Interpretability", '
    "arXiv 2007.07584, 2020",
)
def effective_complexity(maps: Any, eps: float = 1e-2) -> np.ndarray:
    """Effective Complexity: the share of pixels with |a_i| > eps * max_j |a_j|.

    The paper (and Quantus) count |a_i| > eps with an absolute eps and return a count; here
    the threshold is relative to each map's peak and the count is divided by n, so maps
    normalised differently, and images of different sizes, compare. An all-zero map gets 0.

    Args:
        maps: (N, H, W) or (H, W) maps.
        eps: the threshold, a fraction of each map's largest magnitude, in [0, 1).

    Returns:
        (N,) shares in [0, 1]; lower is simpler.

    Example:
        >>> effective_complexity(exp.maps, eps=0.1).mean()

    Reference: Nguyen and Martinez, "On Quantitative Aspects of Model Interpretability",
    arXiv 2007.07584, 2020.
    """
    eps = check_number(eps, "eps", low=0.0, high=1.0)
    a = _magnitudes(maps)
    peak = a.max(axis=1, keepdims=True)
    return np.where(peak[:, 0] > 0, (a > eps * peak).mean(axis=1), 0.0)
