"""Activation maximisation: synthesise the inputs that most excite chosen units.

`maximize(model, "block3_relu1", [0, 1, 2])` optimises one image per unit, all in one batch,
by gradient ascent (Adam) on the unit's activation. The optimisation runs in one compiled
kernel that performs a chunk of steps in a `tf.while_loop`; it is kept on the model's runner,
so it is traced once per (settings, batch shape) and reused by later calls.

What is maximised, per `objective`:

- "channel" (default): the mean of a spatial layer's channel over all positions, so the whole
  image fills with the channel's favourite pattern;
- "neuron": the channel at the centre position only (one receptive field);
- a dense layer's unit, e.g. a class logit: `layer="logits"`, `units=[class index]`. A final
  softmax is skipped (the runner strips it), since maximising a probability mostly pushes the
  other classes down.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from tqdm import tqdm

from xai_keras.errors import InputError
from xai_keras.explainers.base import runner_for
from xai_keras.explainers.graph import ModelRunner
from xai_keras.features.param import (
    DEFAULT_COLOURS,
    FourierImage,
    PixelImage,
    random_transform,
    total_variation,
)
from xai_keras.features.plot import tile_figure
from xai_keras.features.units import UnitLayer, parse_units, relu_input, unit_layer

__all__ = ["Maximized", "Settings", "maximize", "unit_scores"]

_OBJECTIVES = ("channel", "neuron")
_PARAMS = ("fourier", "pixel")


@dataclass(frozen=True)
class Settings:
    """Everything that shapes the compiled step; one trace per distinct value.

    The defaults give readable pictures for small CNNs on 32-224 px images (see `maximize`).
    """

    objective: str = "channel"
    leak: float = 0.05
    param: str = "fourier"
    decorrelate: bool = True
    colours: tuple[tuple[float, ...], ...] | None = None
    lr: float = 0.05
    jitter: float = 0.05
    rotate: float = 5.0
    scale: float = 0.05
    tv: float = 0.0
    l2: float = 0.0
    blur_every: int = 8
    blur_sigma: float = 0.5
    margin: float = 0.1
    value_range: tuple[float, float] = (0.0, 1.0)


@dataclass
class Maximized:
    """Images that maximise units, and how far each unit got.

    Attributes:
        images: (N, H, W, C) float32 in `value_range`, one per unit.
        activations: (N,) the objective reached on the final (untransformed) image.
        units: the unit index of each image.
        layer: the layer's path.
        objective: "channel", "neuron" or "unit" (dense layers).
        steps: optimisation steps taken.
        settings: the settings used.
        traces: how often the compiled step has been traced for these settings and shapes,
            counted over all calls (1 after any number of same-shaped calls).
    """

    images: np.ndarray
    activations: np.ndarray
    units: list[int]
    layer: str
    objective: str
    steps: int
    settings: Settings = field(default_factory=Settings)
    traces: int = 0

    def __len__(self) -> int:
        return len(self.units)

    def grid(self, cols: int | None = None) -> Figure:
        """A figure: one image per unit, labelled with the unit and the activation reached."""
        labels = [f"unit {u}\n{a:.3g}" for u, a in zip(self.units, self.activations, strict=True)]
        title = f"{self.layer}: {self.objective} maximisation, {self.steps} steps"
        return tile_figure(self.images, labels, title, self.settings.value_range, cols)

    def save(self, path: str | os.PathLike, cols: int | None = None) -> Path:
        """Write `grid()` as a PNG (atomically)."""
        from xai_keras.io import save_figure

        return save_figure(self.grid(cols), path)


# -- the objective ---------------------------------------------------------------------
def _objective(
    runner: ModelRunner,
    x: tf.Tensor,
    units: tf.Tensor,
    objective: str,
    spatial: bool,
    leak: float | None = None,
) -> tf.Tensor:
    """Per image, the value of its own unit: (N,). With `leak`, the runner's layer is a
    ReLU's input and the ReLU is redone here as a leaky one."""
    activation, logits = runner.forward(x)
    if activation is None:  # the layer was a stripped softmax head: its logits count
        activation = logits
    if leak is not None:
        activation = tf.nn.leaky_relu(activation, alpha=leak)
    if not spatial:
        flat = tf.reshape(activation, (tf.shape(activation)[0], -1))
        return tf.gather(flat, units, batch_dims=1)
    channel = tf.gather(activation, units, axis=-1, batch_dims=1)  # (N, h, w)
    if objective == "neuron":
        return channel[:, channel.shape[1] // 2, channel.shape[2] // 2]
    return tf.reduce_mean(channel, axis=[1, 2])


def unit_scores(
    model: keras.Model,
    layer: str | Any,
    images: np.ndarray,
    units: Sequence[int],
    objective: str = "channel",
) -> np.ndarray:
    """The objective `maximize` optimises, for given images: image i scored on units[i].

    Used to compare synthetic images with real ones on the same scale.
    """
    target = unit_layer(model, layer)
    runner = runner_for(model, target.layer)
    fn = runner.kernel(
        f"features:score:{objective}:{target.spatial}",
        functools.partial(_objective, runner, objective=objective, spatial=target.spatial),
    )
    x = tf.convert_to_tensor(np.asarray(images, np.float32))
    return fn(x, tf.constant(np.asarray(units), tf.int32)).numpy()


# -- the compiled optimisation -----------------------------------------------------------
def _image_model(s: Settings, size: tuple[int, int], channels: int) -> PixelImage | FourierImage:
    colours = None
    if s.decorrelate and channels == 3:
        colours = DEFAULT_COLOURS if s.colours is None else np.asarray(s.colours, np.float32)
    if s.param == "fourier":
        return FourierImage(size, channels, colours)
    return PixelImage(size, channels, colours)


def _margin(s: Settings, size: tuple[int, int]) -> int:
    """Pixels of canvas kept around the image while it is transformed, then cropped away."""
    moving = s.jitter or s.rotate or s.scale
    return round(s.margin * max(size)) if moving else 0


def _crop(x: tf.Tensor, margin: int) -> tf.Tensor:
    return x[:, margin : x.shape[1] - margin, margin : x.shape[2] - margin] if margin else x


class _Ascent:
    """Adam steps on a batch of image parameters; `chunk` is what gets compiled."""

    def __init__(self, runner, target: UnitLayer, s: Settings, pic: Any, margin: int, leak):
        self.runner, self.target, self.s, self.pic = runner, target, s, pic
        self.margin, self.leak = margin, leak
        side = max(pic.size) - 2 * margin
        self.jitter = s.jitter * side if s.jitter < 1 else s.jitter  # fraction or pixels

    def loss(self, p: tf.Tensor, t: tf.Tensor, units: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Minus the units' objective on a randomly transformed view, plus the penalties."""
        s, margin = self.s, self.margin
        canvas = self.pic.to_image(p, s.value_range)
        image, seen = _crop(canvas, margin), canvas
        if self.jitter or s.rotate or s.scale:
            step_seed = tf.stack([seed, t])
            seen = random_transform(canvas, step_seed, self.jitter, s.rotate, s.scale)
        seen = _crop(seen, margin)
        score = _objective(self.runner, seen, units, s.objective, self.target.spatial, self.leak)
        loss = -tf.reduce_sum(score)
        if s.tv:
            loss += s.tv * tf.reduce_sum(total_variation(image))
        if s.l2:
            mid = (s.value_range[0] + s.value_range[1]) / 2
            loss += s.l2 * tf.reduce_sum(tf.reduce_mean((image - mid) ** 2, axis=[1, 2, 3]))
        return loss

    def step(self, p, m, v, t, units, seed):
        """One Adam step (blurring the parameters first when one is due)."""
        b1, b2, eps, s = 0.9, 0.999, 1e-8, self.s
        if s.blur_every > 0:
            due = tf.logical_and(t > 0, t % s.blur_every == 0)
            p = tf.cond(due, lambda: self.pic.blur(p, s.blur_sigma), lambda: p)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(p)
            loss = self.loss(p, t, units, seed)
        g = tape.gradient(loss, p)
        t1 = tf.cast(t + 1, tf.float32)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr = s.lr * tf.sqrt(1 - b2**t1) / (1 - b1**t1)
        return p - lr * m / (tf.sqrt(v) + eps), m, v

    def chunk(self, p, m, v, t, n, units, seed):
        """`n` steps from step number `t` in a graph loop (n is a tensor: no retrace)."""

        def body(i, p, m, v):
            p, m, v = self.step(p, m, v, t + i, units, seed)
            return i + 1, p, m, v

        _, p, m, v = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), p, m, v))
        return p, m, v


def _colours(colours: Any) -> tuple[tuple[float, ...], ...] | None:
    """A colour matrix as nested tuples (Settings are hashable and name the compiled step)."""
    if colours is None:
        return None
    c = np.asarray(colours, np.float64)
    if c.shape != (3, 3) or not np.isfinite(c).all():
        raise InputError(f"colours must be a finite (3, 3) matrix. Received shape {c.shape}.")
    return tuple(tuple(float(v) for v in row) for row in c)


def _check_settings(s: Settings, steps: int) -> None:
    if s.objective not in _OBJECTIVES:
        raise InputError(f"objective must be one of {_OBJECTIVES}. Received: {s.objective!r}.")
    if s.param not in _PARAMS:
        raise InputError(f"param must be one of {_PARAMS}. Received: {s.param!r}.")
    if steps < 1:
        raise InputError(f"steps must be >= 1. Received: steps={steps}.")
    lo, hi = s.value_range
    if not lo < hi:
        raise InputError(f"value_range must be (low, high) with low < high. Received: {(lo, hi)}.")
    for name in ("leak", "lr", "jitter", "rotate", "scale", "tv", "l2", "blur_sigma", "margin"):
        if getattr(s, name) < 0 or not math.isfinite(getattr(s, name)):
            raise InputError(f"{name} must be a finite number >= 0. Received: {getattr(s, name)}.")


def _image_size(model: keras.Model, size: int | tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or min(hw) < 8:
            raise InputError(f"size must be an int or (height, width), >= 8. Received: {size}.")
        return int(hw[0]), int(hw[1])
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise InputError(
            f"Model {model.name!r} takes inputs of shape {shape}, with no fixed image size: "
            "pass size=(height, width)."
        )
    return int(shape[1]), int(shape[2])


def maximize(
    model: keras.Model,
    layer: str | Any,
    units: str | int | Sequence[int],
    steps: int = 256,
    size: int | tuple[int, int] | None = None,
    *,
    objective: str = "channel",
    leak: float = 0.05,
    param: str = "fourier",
    decorrelate: bool = True,
    colours: np.ndarray | None = None,
    lr: float = 0.05,
    jitter: float = 0.05,
    rotate: float = 5.0,
    scale: float = 0.05,
    tv: float = 0.0,
    l2: float = 0.0,
    blur_every: int = 8,
    blur_sigma: float = 0.5,
    margin: float = 0.1,
    value_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    chunk: int = 16,
    progress: bool = False,
) -> Maximized:
    """Synthesise one image per unit that maximises it, by gradient ascent.

    Args:
        model: a Functional or Sequential Keras model (nested models are followed).
        layer: name, nested path or layer object; a spatial layer (units are channels) or a
            dense one (units are its outputs, e.g. class logits with layer="logits").
        units: indices, or a spec such as "0-15" or "0,3,7" (see `parse_units`).
        steps: Adam steps.
        size: (height, width) of the images; default: the model's input size.
        objective: "channel" (mean over positions) or "neuron" (centre position) for spatial
            layers; ignored for dense layers.
        leak: for a ReLU layer, optimise its input through a leaky ReLU of this slope: the
            same as the layer's activation where the unit is on, but with a small gradient
            where it is off, so a unit that is silent on the start image still moves (0: the
            plain ReLU). The reported activations are always the layer's own.
        param: "fourier" (1/f-scaled spectrum, smoother images) or "pixel".
        decorrelate: optimise RGB images in decorrelated colour (luminance + opponent axes).
        colours: a (3, 3) decorrelated-to-RGB matrix to use instead of the built-in one,
            e.g. `colour_matrix(training_images)` for a data set's own colour statistics.
        lr: Adam learning rate, in parameter units.
        jitter: random shift per step, as a fraction of the image side (< 1) or pixels (>= 1).
        rotate: random rotation per step, up to this many degrees.
        scale: random zoom per step, up to 1 +- this.
        tv: weight of the total-variation penalty (mean |neighbour difference|, image units).
        l2: weight of the mean squared distance from mid-grey.
        blur_every: blur the parameters every this many steps (0: never).
        blur_sigma: that blur's Gaussian sigma, in pixels.
        margin: while transforms are on, optimise a canvas this fraction of the side larger on
            each edge and show the model its transformed centre: the returned image's own
            borders and corners then get gradients like the rest (no frame artefacts).
        value_range: the pixel range the model expects; images stay strictly inside it.
        seed: seeds the start images and the random transformations (same seed, same images).
        chunk: steps per compiled call; the progress bar advances per chunk.
        progress: show a tqdm bar over the steps.

    Returns:
        A `Maximized` with the images and the activations they reach.

    Raises:
        LayerError: the layer is not in the model (the message lists candidates).
        InputError: a unit is out of range (the message gives the range), or a bad setting.
    """
    s = Settings(
        objective=objective,
        leak=float(leak),
        param=param,
        decorrelate=bool(decorrelate),
        colours=_colours(colours),
        lr=float(lr),
        jitter=float(jitter),
        rotate=float(rotate),
        scale=float(scale),
        tv=float(tv),
        l2=float(l2),
        blur_every=int(blur_every),
        blur_sigma=float(blur_sigma),
        margin=float(margin),
        value_range=(float(value_range[0]), float(value_range[1])),
    )
    _check_settings(s, steps)
    target = unit_layer(model, layer)
    unit_list = parse_units(units, target.n_units, target.path)
    hw = _image_size(model, size)
    channels = int(model.inputs[0].shape[-1])
    pad = _margin(s, hw)
    pic = _image_model(s, (hw[0] + 2 * pad, hw[1] + 2 * pad), channels)
    below = relu_input(target.layer) if s.leak > 0 else None
    runner = runner_for(model, below or target.layer)
    leak = s.leak if below is not None else None
    fn = runner.kernel(
        f"features:maximize:{s!r}:{hw}", _Ascent(runner, target, s, pic, pad, leak).chunk
    )

    p = tf.constant(pic.init(len(unit_list), np.random.default_rng(seed)))
    m, v = tf.zeros_like(p), tf.zeros_like(p)
    u = tf.constant(unit_list, tf.int32)
    seed_t = tf.constant(seed, tf.int32)
    with tqdm(
        total=steps, desc=f"maximise {target.path}", unit="step", disable=not progress
    ) as bar:
        for start in range(0, steps, max(1, chunk)):
            n = min(max(1, chunk), steps - start)
            p, m, v = fn(p, m, v, tf.constant(start), tf.constant(n), u, seed_t)
            bar.update(n)
    images = _crop(pic.to_image(p, s.value_range), pad).numpy()
    kind = objective if target.spatial else "unit"
    reached = unit_scores(model, target.layer, images, unit_list, objective)
    traces = fn.experimental_get_tracing_count()
    return Maximized(images, reached, unit_list, target.path, kind, steps, s, traces)
