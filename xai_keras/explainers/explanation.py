"""The result of `explain`: maps, raw maps, targets and scores, and ways to look at them."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from xai_keras import visualize
from xai_keras.explainers.ranges import ValueRange
from xai_keras.io import figure_to_png, save_figure

__all__ = ["Explanation", "contact_sheet"]


@dataclass
class Explanation:
    """Maps explaining a model's decisions for a batch of images.

    Attributes:
        images: (N, H, W, C) the images as given (float32).
        maps: (N, H, W) float32 in [0, 1] at input resolution; 1 marks the most important pixels.
        raw: (N, h, w) maps before resizing and normalising (CAMs: the layer's resolution;
            signed methods keep their sign).
        targets: (N,) explained class indices.
        scores: (N,) the model's probability for each target (the softmax, or sigmoid for one
            unit, of the logits; the outputs themselves where they already are probabilities).
        logits: (N, classes) the scores the method explained (see `score_kind`).
        method: the method's registry name.
        layer: the explained layer's path, for CAM methods; None otherwise.
        score_kind: "logits" when a final softmax/sigmoid was skipped, "output" otherwise.
        class_names: optional names for titles.
        attributions: (N, H, W, C) per-channel input attributions (gradient family) or None.
        single: a single image (H, W, C) was given.
        layer_reason: why `layer` was explained (the user's, the default and what it
            skipped, or "auto" with the candidates' scores).
        method_reason: why `method` was run ("given." or the model's default and why).
        layer_scores: for layer="auto", each candidate layer's faithfulness proxy.
        value_range: the model's input range, used to show the images.
        signed: the method's raw maps carry a sign (LRP, DeepLIFT, Integrated Gradients,
            occlusion); pictures then show `signed_maps()` with a diverging colormap.
    """

    images: np.ndarray
    maps: np.ndarray
    raw: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    method: str
    layer: str | None = None
    score_kind: str = "logits"
    class_names: list[str] | None = None
    attributions: np.ndarray | None = None
    single: bool = field(default=False, repr=False)
    layer_reason: str = ""
    method_reason: str = ""
    layer_scores: dict[str, float] | None = None
    value_range: ValueRange | None = field(default=None, repr=False)
    signed: bool = False

    def __len__(self) -> int:
        return len(self.maps)

    def __repr__(self) -> str:
        """One line: method, how many images of which size, layer, targets and scores (the
        first 8), not the arrays."""
        n = len(self)
        size = "x".join(str(s) for s in self.images.shape[1:]) if self.images.ndim == 4 else "?"

        def short(values, fmt: str) -> str:
            shown = ", ".join(format(v, fmt) for v in np.asarray(values)[:8].tolist())
            return f"[{shown}{', ...' if len(values) > 8 else ''}]"

        layer = f", layer={self.layer!r}" if self.layer else ""
        signed = ", signed" if self.signed else ""
        return (
            f"Explanation(method={self.method!r}, {n} image{'s' if n != 1 else ''} {size}"
            f"{layer}, targets={short(self.targets, 'd')}, scores={short(self.scores, '.2f')}"
            f", score_kind={self.score_kind!r}{signed})"
        )

    def __getitem__(self, index: int | slice) -> Explanation:
        """The explanation of one image (or a slice of images), as an `Explanation`."""
        index = slice(index, index + 1) if isinstance(index, int) else index
        arrays = ("images", "maps", "raw", "targets", "scores", "logits", "attributions")
        parts = {k: getattr(self, k)[index] for k in arrays if getattr(self, k) is not None}
        return dataclasses.replace(self, **parts)

    def label(self, i: int) -> str:
        """'name (score)' of the explained class of image i."""
        t = int(self.targets[i])
        name = self.class_names[t] if self.class_names else f"class {t}"
        return f"{name} ({self.scores[i]:.2f})"

    def row_title(self, i: int, label: int | None = None) -> str:
        """Image i's title in pictures: the predicted class and score, the explained class
        where it is another, and the true class where `label` is known."""
        name = self.class_names.__getitem__ if self.class_names else (lambda t: f"class {t}")
        logits = np.asarray(self.logits) if self.logits is not None else None
        top = int(np.argmax(logits[i])) if logits is not None and logits.ndim == 2 else None
        if top is None or logits.shape[1] < 2 or top == int(self.targets[i]):
            lines = [f"pred {self.label(i)}"]
        else:
            lines = [f"pred {name(top)}", f"explains {self.label(i)}"]
        if label is not None:
            lines.append(f"true {name(int(label))}")
        return "\n".join(lines)

    def overlay(self, alpha: float = 0.45) -> np.ndarray:
        """(N, H, W, 3) uint8: the heatmap (OpenCV JET, or a diverging red/blue one for
        signed methods) blended over each image."""
        return visualize.blend(self.display_images(), self.heatmaps(), alpha)

    def signed_maps(self) -> np.ndarray:
        """(N, H, W) raw maps at input resolution scaled by their largest magnitude to
        [-1, 1], sign kept (for unsigned methods: `maps`)."""
        if not self.signed:
            return self.maps
        h, w = self.maps.shape[1:3]
        up = np.stack([cv2.resize(r, (w, h), interpolation=cv2.INTER_LINEAR) for r in self.raw])
        peak = np.abs(up).max(axis=(1, 2), keepdims=True)
        return (up / np.where(peak > 0, peak, 1)).astype(np.float32)

    def display_images(self) -> np.ndarray:
        """The images as pixels in [0, 255] (through `value_range` where it is known)."""
        if self.value_range is None:
            return self.images
        return np.clip(self.value_range.to_pixels(self.images), 0, 255)

    def heatmaps(self) -> np.ndarray:
        """(N, H, W, 3) uint8 colour-mapped maps (diverging for signed methods)."""
        if self.signed:
            return visualize.colorize_signed(self.signed_maps())
        return visualize.colorize(self.maps)

    def plot(self, labels: np.ndarray | None = None) -> Figure:
        """One row per image: image | heatmap | overlay, titled with the predicted class and
        score (and the true class, from `labels`, where given)."""
        name = self.method + (f" @ {self.layer}" if self.layer else "")
        return visualize.explanation_grid(
            self.display_images(),
            [(name, self.heatmaps()), ("overlay", self.overlay())],
            row_titles=[
                self.row_title(i, None if labels is None else labels[i]) for i in range(len(self))
            ],
            references=_REFERENCE_MAPS,
            signed=(name, "overlay") if self.signed else (),
        )

    def save(self, path: str | os.PathLike, dpi: int = 100) -> Path:
        """Save `plot()` as an image file (PNG, PDF, SVG, by suffix), atomically."""
        return save_figure(self.plot(), path, dpi=dpi)

    def _repr_png_(self) -> bytes:
        """A notebook shows the picture, not the dataclass fields."""
        return figure_to_png(self.plot())


# Methods whose maps are references that metrics compare against, not explanations.
_REFERENCE_MAPS = ("random", "centre")


def contact_sheet(explanations: list[Explanation], labels: np.ndarray | None = None) -> Figure:
    """One figure comparing methods: a row per image, a column per explanation's overlay.

    All explanations must cover the same images (e.g. one `explain` call per method). Rows are
    titled with the predicted class (and the true one, from `labels`, where given); `random`
    and `centre` columns are marked as reference maps.
    """
    first = explanations[0]
    columns = []
    for exp in explanations:
        if exp.images.shape != first.images.shape:
            raise ValueError("contact_sheet needs explanations of the same images.")
        columns.append((exp.method, exp.overlay()))
    titles = [first.row_title(i, None if labels is None else labels[i]) for i in range(len(first))]
    return visualize.explanation_grid(
        first.display_images(),
        columns,
        row_titles=titles,
        references=_REFERENCE_MAPS,
        signed=[exp.method for exp in explanations if exp.signed],
    )
