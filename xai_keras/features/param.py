"""How a synthetic image is represented while it is optimised, and the image priors.

Plain gradient ascent on pixels finds high-frequency patterns that excite a unit but look
like noise. Following Olah, Mordvintsev & Schubert, "Feature Visualization" (Distill, 2017),
two changes of variables make the optimiser prefer natural-looking images:

- Fourier parameters: the image is the inverse FFT of a spectrum whose coefficients are
  scaled by 1/frequency, so a step of the same size moves low frequencies more than high ones
  (the spectrum of natural images falls off roughly like 1/f).
- Decorrelated colour: the optimised channels are a luminance and two colour-opponent axes,
  mixed to RGB by a fixed matrix that gives luminance more room than colour, as in natural
  images; a data set's own colour statistics can be used instead (`colour_matrix`).

A sigmoid maps the result into the model's value range, so no pixel is ever clipped (clipping
would stop its gradient). The regularisers (total variation, L2, blur, random transformations)
are functions of tensors, used inside the compiled optimisation step.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from xai_keras.errors import InputError

__all__ = ["FourierImage", "PixelImage", "colour_matrix", "random_transform", "total_variation"]

# Orthonormal luminance / red-green / blue-yellow axes (columns), each given a typical spread:
# in natural images the luminance axis carries most of the colour variance.
_OPPONENT = np.stack(
    [np.array([1, 1, 1]) / math.sqrt(3), np.array([1, 0, -1]) / math.sqrt(2)]
    + [np.array([1, -2, 1]) / math.sqrt(6)],
    axis=1,
)
DEFAULT_COLOURS = (_OPPONENT * np.array([1.0, 0.45, 0.3])).astype(np.float32)


def colour_matrix(images: np.ndarray) -> np.ndarray:
    """A (3, 3) matrix that maps decorrelated channels to RGB with the images' colour spread.

    It is the square root of the pixels' colour covariance (via its eigenvectors), scaled so its
    largest column has norm 1; pass it as `colours=` to `maximize` to use a data set's colours.
    """
    pixels = np.asarray(images, np.float64).reshape(-1, np.shape(images)[-1])
    if pixels.shape[-1] != 3:
        raise InputError(f"colour_matrix needs RGB images (…, 3). Received shape {images.shape}.")
    values, vectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
    root = vectors * np.sqrt(np.maximum(values, 0))
    return (root / max(np.linalg.norm(root, axis=0).max(), 1e-12)).astype(np.float32)


def _mix_colours(x: tf.Tensor, colours: np.ndarray | None) -> tf.Tensor:
    """Decorrelated channels to RGB (identity for grayscale or when switched off)."""
    if colours is None or x.shape[-1] != 3:
        return x
    return tf.einsum("nhwc,rc->nhwr", x, tf.constant(colours, tf.float32))


def _squash(x: tf.Tensor, value_range: tuple[float, float]) -> tf.Tensor:
    lo, hi = value_range
    return lo + (hi - lo) * tf.sigmoid(x)


def _gaussian_1d(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(2.5 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur_pixels(x: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur of (N, H, W, C) with reflected borders."""
    k = _gaussian_1d(sigma)
    r, c = len(k) // 2, x.shape[-1]
    x = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    rows = tf.constant(np.tile(k.reshape(-1, 1, 1, 1), (1, 1, c, 1)))
    cols = tf.constant(np.tile(k.reshape(1, -1, 1, 1), (1, 1, c, 1)))
    x = tf.nn.depthwise_conv2d(x, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(x, cols, [1, 1, 1, 1], "VALID")


class PixelImage:
    """One free parameter per pixel and channel (in decorrelated colour if `colours` is set)."""

    def __init__(self, size: tuple[int, int], channels: int, colours: np.ndarray | None = None):
        self.size, self.channels, self.colours = size, channels, colours

    def init(self, n: int, rng: np.random.Generator, std: float = 0.01) -> np.ndarray:
        """Parameters for `n` images close to mid-grey, slightly random to break symmetry."""
        return rng.normal(0, std, (n, *self.size, self.channels)).astype(np.float32)

    def to_image(self, p: tf.Tensor, value_range: tuple[float, float]) -> tf.Tensor:
        return _squash(_mix_colours(p, self.colours), value_range)

    def blur(self, p: tf.Tensor, sigma: float) -> tf.Tensor:
        return blur_pixels(p, sigma)


class FourierImage:
    """The image as a 1/f-scaled spectrum per channel: `(N, C, H, W // 2 + 1, 2)` real/imag.

    Args:
        size: (H, W) of the image.
        channels: image channels.
        colours: (3, 3) decorrelated-to-RGB matrix, or None.
        decay: the spectrum's weights fall like 1/f**decay (1 = natural images).
    """

    def __init__(
        self,
        size: tuple[int, int],
        channels: int,
        colours: np.ndarray | None = None,
        decay: float = 1.0,
    ):
        self.size, self.channels, self.colours = size, channels, colours
        h, w = size
        fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
        self.freqs = np.sqrt(fy**2 + fx**2)
        weights = 1.0 / np.maximum(self.freqs, 1.0 / max(h, w)) ** decay
        # Unit-variance parameters then give pixels of about unit variance (Parseval).
        self.weights = (weights * h * w / (2 * np.sqrt(np.sum(weights**2)))).astype(np.float32)

    def init(self, n: int, rng: np.random.Generator, std: float = 0.01) -> np.ndarray:
        shape = (n, self.channels, *self.freqs.shape, 2)
        return rng.normal(0, std, shape).astype(np.float32)

    def spatial(self, p: tf.Tensor) -> tf.Tensor:
        """Parameters to the unsquashed (N, H, W, C) image."""
        spectrum = tf.complex(p[..., 0], p[..., 1]) * tf.cast(self.weights, tf.complex64)
        x = tf.signal.irfft2d(spectrum, fft_length=list(self.size))
        return tf.transpose(x, [0, 2, 3, 1])

    def to_image(self, p: tf.Tensor, value_range: tuple[float, float]) -> tf.Tensor:
        return _squash(_mix_colours(self.spatial(p), self.colours), value_range)

    def blur(self, p: tf.Tensor, sigma: float) -> tf.Tensor:
        """A Gaussian blur is a product with its frequency response in this parameterisation."""
        response = np.exp(-2 * (math.pi * sigma * self.freqs) ** 2).astype(np.float32)
        return p * response[..., None]


def total_variation(x: tf.Tensor) -> tf.Tensor:
    """Mean absolute difference between neighbouring pixels, per image: (N,)."""
    dy = tf.reduce_mean(tf.abs(x[:, 1:] - x[:, :-1]), axis=[1, 2, 3])
    dx = tf.reduce_mean(tf.abs(x[:, :, 1:] - x[:, :, :-1]), axis=[1, 2, 3])
    return dx + dy


def random_transform(
    x: tf.Tensor, seed: tf.Tensor, jitter: float, rotate: float, scale: float
) -> tf.Tensor:
    """Shift by up to `jitter` pixels, rotate by up to `rotate` degrees and scale by up to
    1 +- `scale`, independently per image, in one resampling (borders reflected).

    A feature that survives small transformations is a property of the pattern, not of exact
    pixel positions; this is the "transformation robustness" prior.
    """
    n = tf.shape(x)[0]
    h, w = x.shape[1], x.shape[2]
    u = tf.random.stateless_uniform([4, n], seed, -1.0, 1.0)
    angle = u[0] * (rotate * math.pi / 180)
    zoom = 1.0 + u[1] * scale
    tx, ty = u[2] * jitter, u[3] * jitter
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # Output pixel (x, y) reads input ((R / zoom) (p - c) + c + t): rotation about the centre.
    a0, a1 = tf.cos(angle) / zoom, -tf.sin(angle) / zoom
    b0, b1 = tf.sin(angle) / zoom, tf.cos(angle) / zoom
    a2 = cx - a0 * cx - a1 * cy + tx
    b2 = cy - b0 * cx - b1 * cy + ty
    zero = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=tf.constant([h, w], tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
