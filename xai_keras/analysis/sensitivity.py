"""Which factor moves the prediction: change one generative factor at a time around base
images (everything else, noise and clutter included, held fixed) and watch the output.

A model that is right for the right reason flips its answer when the shape changes and not
when the texture, colour, pose or position does; a model that learnt a shortcut flips when the
marker moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from xai_keras.data.shapes import (
    MARGIN,
    SCALE_RANGE,
    SHAPES,
    TEXTURES,
    ShapesSample,
    cue_slots,
    render_shapes,
)
from xai_keras.errors import InputError
from xai_keras.explainers.session import Session

__all__ = ["FACTOR_CHANGES", "Sensitivity", "factor_sensitivity"]

Change = Callable[[dict, np.random.Generator, int], dict]


def _other(values: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """A different value in range(count) for each entry."""
    return ((values + rng.integers(1, count, len(values))) % count).astype(values.dtype)


def _change_position(f: dict, rng: np.random.Generator, size: int) -> dict:
    margin = MARGIN + f["scale"]
    return {"x": rng.uniform(margin, 1 - margin), "y": rng.uniform(margin, 1 - margin)}


def _change_scale(f: dict, rng: np.random.Generator, size: int) -> dict:
    scale = rng.uniform(*SCALE_RANGE, len(f["scale"])).astype(np.float32)
    margin = MARGIN + scale  # keep the object inside the frame at its new size
    return {
        "scale": scale,
        "x": np.clip(f["x"], margin, 1 - margin),
        "y": np.clip(f["y"], margin, 1 - margin),
    }


def _change_cue(f: dict, rng: np.random.Generator, size: int) -> dict:
    slots = len(cue_slots(size))
    current = np.maximum(f["cue_slot"], 0)
    return {"cue_slot": _other(current, slots, rng)}


# One resampling rule per factor: each returns the factor arrays to replace.
FACTOR_CHANGES: dict[str, Change] = {
    "shape": lambda f, rng, s: {"shape": _other(f["shape"], len(SHAPES), rng)},
    "texture": lambda f, rng, s: {"texture": _other(f["texture"], len(TEXTURES), rng)},
    "hue": lambda f, rng, s: {"hue": rng.uniform(0, 1, len(f["hue"])).astype(np.float32)},
    "scale": _change_scale,
    "pose": lambda f, rng, s: {"rotation": rng.uniform(0, 2 * np.pi, len(f["rotation"]))},
    "position": _change_position,
    "clutter": lambda f, rng, s: {"clutter": _other(f["clutter"], f["clutter"].max() + 1, rng)},
    "cue": _change_cue,
}


@dataclass
class Sensitivity:
    """How the prediction responds to changing each factor alone.

    Attributes:
        factors: the factors changed.
        flip_rate: (factors,) share of changed images whose predicted class differs from the
            base image's prediction.
        drop: (factors,) mean fall of the probability of the base prediction.
        n_base: base images; `variations` changes of each factor were made per base image.
    """

    factors: list[str]
    flip_rate: np.ndarray
    drop: np.ndarray
    n_base: int
    variations: int

    def to_dict(self) -> dict:
        return {
            f: {"flip_rate": round(float(r), 4), "probability_drop": round(float(d), 4)}
            for f, r, d in zip(self.factors, self.flip_rate, self.drop, strict=True)
        }

    def to_markdown(self) -> str:
        lines = [
            f"**Sensitivity: one factor changed at a time ({self.n_base} base images x "
            f"{self.variations} changes)**",
            "",
            "| factor | prediction flips | mean drop of p(base class) |",
            "|---|---:|---:|",
        ]
        for f, r, d in zip(self.factors, self.flip_rate, self.drop, strict=True):
            lines.append(f"| {f} | {r:.1%} | {d:+.3f} |")
        return "\n".join(lines) + "\n"


def factor_sensitivity(
    model: keras.Model,
    sample: ShapesSample,
    factors: list[str] | None = None,
    variations: int = 4,
    seed: int = 0,
) -> Sensitivity:
    """Change each factor of `sample` alone, `variations` times per image, and measure how
    often the prediction flips and how much the base class' probability falls.

    Args:
        model: a classifier of `shapes` images.
        sample: base images from `generate_shapes` (a few hundred is plenty).
        factors: names from `FACTOR_CHANGES`; default all, "cue" only if the sample has one.
    """
    has_cue = bool(np.any(sample.factors["cue_slot"] >= 0))
    if factors is None:
        factors = [f for f in FACTOR_CHANGES if f != "cue" or has_cue]
    unknown = [f for f in factors if f not in FACTOR_CHANGES]
    if unknown:
        raise InputError(f"Unknown factors {unknown}; choose from {list(FACTOR_CHANGES)}.")
    size, channels = sample.images.shape[1], sample.images.shape[-1]
    session = Session(model, batch_size=256)
    base = session.probabilities(sample.images)
    predicted = base.argmax(1)
    p_base = base[np.arange(len(base)), predicted]
    rng = np.random.default_rng(seed)
    flips, drops = [], []
    for name in factors:
        flipped, dropped = [], []
        for _ in range(variations):
            changed = dict(sample.factors, **FACTOR_CHANGES[name](sample.factors, rng, size))
            probs = session.probabilities(render_shapes(changed, size, channels).images)
            flipped.append(probs.argmax(1) != predicted)
            dropped.append(p_base - probs[np.arange(len(probs)), predicted])
        flips.append(np.mean(flipped))
        drops.append(np.mean(dropped))
    return Sensitivity(factors, np.array(flips), np.array(drops), len(sample), variations)
