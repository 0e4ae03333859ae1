"""What a layer computes on one image (feature maps) and what its weights look like (filters)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
from keras import layers as kl
from matplotlib.figure import Figure

from xai_keras.errors import InputError, LayerError
from xai_keras.explainers.api import check_images
from xai_keras.explainers.graph import LayerTaps
from xai_keras.explainers.layers import conv_candidates, resolve_layer, walk_layers
from xai_keras.features.plot import mosaic, mosaic_figure
from xai_keras.visualize import colorize, to_display

__all__ = ["FeatureMaps", "Filters", "default_map_layers", "feature_maps", "filters"]

_RESAMPLING = (kl.MaxPooling2D, kl.AveragePooling2D, kl.ZeroPadding2D, kl.Cropping2D)


def _index(names: Sequence[str], layer: int | str) -> int:
    if isinstance(layer, int):
        return layer
    if layer not in names:
        raise InputError(f"No layer {layer!r} here. Layers: {', '.join(names)}.")
    return list(names).index(layer)


def default_map_layers(model: keras.Model) -> list[str]:
    """The last layer at each spatial resolution (pooling skipped): one view per scale."""
    by_size: dict[tuple, str] = {}
    for path, layer in conv_candidates(model):
        if not isinstance(layer, _RESAMPLING):
            by_size[tuple(layer.output.shape[1:3])] = path  # later layers overwrite earlier
    if not by_size:
        raise LayerError(f"Model {model.name!r} has no layer with a spatial (N, H, W, C) output.")
    return list(by_size.values())


@dataclass
class FeatureMaps:
    """One image's activations at several layers.

    Attributes:
        image: (H, W, C) the input.
        layers: the layers' paths.
        maps: per layer, the (h, w, channels) activations, channels in the model's order.
        order: per layer, channel indices sorted by mean activation, largest first.
    """

    image: np.ndarray
    layers: list[str]
    maps: list[np.ndarray]
    order: list[np.ndarray]

    def tiles(self, layer: int | str = 0) -> np.ndarray:
        """(channels, h, w, 3) uint8: each channel min-max normalised on its own and colour
        mapped (viridis), in `order`. A constant channel is drawn black."""
        a = self.maps[_index(self.layers, layer)][..., self.order[_index(self.layers, layer)]]
        a = np.moveaxis(a, -1, 0).astype(np.float32)
        lo = a.min(axis=(1, 2), keepdims=True)
        span = a.max(axis=(1, 2), keepdims=True) - lo
        norm = np.where(span > 1e-12, (a - lo) / np.maximum(span, 1e-12), 0.0)
        return colorize(norm, cv2.COLORMAP_VIRIDIS)

    def grid(self) -> Figure:
        """The image, then one mosaic per layer (channels sorted by mean activation)."""
        sections = [("input", mosaic(to_display(self.image[None]), min_side=96))]
        for i, path in enumerate(self.layers):
            h, w, c = self.maps[i].shape
            title = f"{path}: {c} channels, {h}x{w}, most active first (row by row)"
            sections.append((title, mosaic(self.tiles(i))))
        return mosaic_figure(sections)

    def save(self, path: str | os.PathLike) -> Path:
        from xai_keras.io import save_figure

        return save_figure(self.grid(), path)


def feature_maps(
    model: keras.Model, image: Any, layers: Sequence[str | Any] | None = None
) -> FeatureMaps:
    """Activations of `layers` (default: `default_map_layers`) for one image, in one pass.

    Raises:
        InputError: not one image of the model's input shape.
        LayerError: a layer is unknown or not spatial; the message lists candidates.
    """
    x, _ = check_images(image, model, "image")
    if x.shape[0] != 1:
        raise InputError(f"feature_maps takes one image. Received a batch of {x.shape[0]}.")
    names = list(layers) if layers is not None else default_map_layers(model)
    taps = LayerTaps(model, names)
    acts = [a.numpy()[0] for a in taps(x)[0]]
    for path, a in zip(taps.paths, acts, strict=True):
        if a.ndim != 3:
            raise LayerError(
                f"Layer {path!r} has output shape {a.shape}, not a spatial (H, W, C) map. "
                f"Spatial layers: {', '.join(default_map_layers(model))}."
            )
    order = [np.argsort(-a.mean(axis=(0, 1)), kind="stable") for a in acts]
    return FeatureMaps(x.numpy()[0], list(taps.paths), acts, order)


@dataclass
class Filters:
    """Conv kernels drawn as small patches.

    Attributes:
        layers: the conv layers' paths.
        kernels: per layer, the raw kernel (kh, kw, in_channels, filters).
        kinds: per layer, "rgb" (a first layer's kernel drawn as colour, mid-grey = 0) or
            "norm" (per-filter L2 norm over input channels, white = strongest tap).
    """

    layers: list[str]
    kernels: list[np.ndarray]
    kinds: list[str]

    def tiles(self, layer: int | str = 0) -> np.ndarray:
        """(filters, kh, kw, 3) uint8, one patch per filter, each normalised on its own."""
        i = _index(self.layers, layer)
        k = np.moveaxis(self.kernels[i], -1, 0).astype(np.float32)  # (F, kh, kw, cin)
        if self.kinds[i] == "rgb":
            peak = np.abs(k).max(axis=(1, 2, 3), keepdims=True)
            return to_display(0.5 + 0.5 * k / np.maximum(peak, 1e-12))
        norm = np.sqrt((k**2).sum(-1, keepdims=True))
        peak = norm.max(axis=(1, 2, 3), keepdims=True)
        return to_display(norm / np.maximum(peak, 1e-12))

    def grid(self) -> Figure:
        sections = []
        for i, path in enumerate(self.layers):
            kh, kw, cin, n = self.kernels[i].shape
            how = "as RGB" if self.kinds[i] == "rgb" else f"L2 norm over {cin} input channels"
            sections.append((f"{path}: {n} filters {kh}x{kw}, {how}", mosaic(self.tiles(i))))
        return mosaic_figure(sections)

    def save(self, path: str | os.PathLike) -> Path:
        from xai_keras.io import save_figure

        return save_figure(self.grid(), path)


def _kernel(layer: Any) -> np.ndarray | None:
    """(kh, kw, in, out) for 2-D convolutions, None for other layers."""
    if isinstance(layer, kl.SeparableConv2D):
        return None
    if isinstance(layer, kl.DepthwiseConv2D):
        k = np.asarray(layer.kernel)
        return k.reshape(k.shape[0], k.shape[1], 1, -1)
    if isinstance(layer, kl.Conv2D) and not isinstance(layer, kl.Conv2DTranspose):
        return np.asarray(layer.kernel)
    return None


def filters(model: keras.Model, layers: Sequence[str | Any] | None = None) -> Filters:
    """Kernels of conv layers (default: every Conv2D/DepthwiseConv2D, nested ones included).

    The first conv layer seen, when its input channels are the image's (1 or 3), is drawn as
    colour patches: what it responds to in the image. Deeper kernels act on feature maps whose
    channels have no colour, so each filter is summarised by its L2 norm over input channels:
    where in the window it looks.
    """
    chosen = (
        [resolve_layer(model, lay) for lay in layers]
        if layers is not None
        else [(p, lay) for p, lay in walk_layers(model) if _kernel(lay) is not None]
    )
    if not chosen:
        raise LayerError(f"Model {model.name!r} has no Conv2D layer whose filters can be drawn.")
    first = next((lay for _, lay in walk_layers(model) if _kernel(lay) is not None), None)
    image_channels = int(model.inputs[0].shape[-1])
    paths, kernels, kinds = [], [], []
    for path, layer in chosen:
        k = _kernel(layer)
        if k is None:
            names = ", ".join(p for p, lay in walk_layers(model) if _kernel(lay) is not None)
            raise LayerError(f"Layer {path!r} is not a 2-D convolution. Conv layers: {names}.")
        on_image = layer is first and k.shape[2] == image_channels and image_channels in (1, 3)
        paths.append(path)
        kernels.append(k)
        kinds.append("rgb" if on_image else "norm")
    return Filters(paths, kernels, kinds)
