"""Generative factors as variables MI can use: labels stay labels, angles become points on a
circle, and a rotation is taken modulo the shape's own symmetry (a square turned by 90 degrees is
the same image, so the pose that can be seen is 4 x the angle)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xai_keras.data.shapes import SHAPES, ShapesSample

__all__ = ["Factor", "shapes_factors", "SYMMETRY"]

# Rotational symmetry order of each shape; the circle has no visible pose (order 1 keeps the
# drawn angle, which leaves no trace in the image: an honest zero for those samples).
SYMMETRY = {"circle": 1, "square": 4, "triangle": 3, "star": 5, "cross": 4}


@dataclass(frozen=True)
class Factor:
    """One generative factor over n samples.

    Attributes:
        name: what it is called in reports.
        values: (n,) int class labels when `discrete`, else (n,) or (n, d) floats.
        discrete: whether `values` are labels.
        nuisance: whether a classifier of the shape should be invariant to it.
    """

    name: str
    values: np.ndarray
    discrete: bool
    nuisance: bool

    def bins(self, per_dim: int = 2) -> np.ndarray:
        """(n,) bin index: the labels, or quantile bins per dimension (for invariance)."""
        if self.discrete:
            return np.unique(self.values, return_inverse=True)[1]
        v = self.values.reshape(len(self.values), -1)
        edges = np.quantile(v, np.linspace(0, 1, per_dim + 1)[1:-1], axis=0)  # (per_dim-1, d)
        digits = np.stack([np.searchsorted(edges[:, j], v[:, j]) for j in range(v.shape[1])], 1)
        return np.ravel_multi_index(digits.T, (per_dim,) * v.shape[1])


def _circle(angle: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float64)


def shapes_factors(sample: ShapesSample) -> list[Factor]:
    """The factors of a `shapes` sample: shape (the class), texture, hue, scale, pose,
    position, clutter, and the spurious marker's slot when the sample has one."""
    f = sample.factors
    order = np.array([SYMMETRY[s] for s in SHAPES])[f["shape"]]
    factors = [
        Factor("shape", f["shape"].astype(np.int32), discrete=True, nuisance=False),
        Factor("texture", f["texture"].astype(np.int32), discrete=True, nuisance=True),
        Factor("hue", _circle(2 * np.pi * f["hue"]), discrete=False, nuisance=True),
        Factor("scale", f["scale"].astype(np.float64), discrete=False, nuisance=True),
        Factor("pose", _circle(order * f["rotation"]), discrete=False, nuisance=True),
        Factor(
            "position",
            np.stack([f["x"], f["y"]], 1).astype(np.float64),
            discrete=False,
            nuisance=True,
        ),
        Factor("clutter", f["clutter"].astype(np.int32), discrete=True, nuisance=True),
    ]
    if np.any(f["cue_slot"] >= 0):
        factors.append(Factor("cue", f["cue_slot"].astype(np.int32), discrete=True, nuisance=True))
    return factors
