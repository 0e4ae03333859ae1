"""A procedural image dataset whose generative factors and object masks are known exactly.

Each image shows one filled shape (the class) on a noisy background with distractor strokes.
The factors that generated it (shape, texture, hue, scale, rotation, x/y position, clutter) are
returned with it, together with the exact object mask: the pixels the shape was painted on.
This is what lets the rest of the toolkit check explanations against ground truth.

With `spurious_cue=True` a small bright marker is painted in a border slot chosen by the class
(with probability `cue_strength`, else at random), so a model can learn the marker instead of
the shape. Use it for the training split and generate the test split without the class link
(`cue_strength=0`) to expose a model that took the shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "MARGIN",
    "SHAPES",
    "TEXTURES",
    "ShapesSample",
    "cue_slots",
    "generate_shapes",
    "render_shapes",
]

SHAPES = ("circle", "square", "triangle", "star", "cross")
TEXTURES = ("solid", "stripes", "checker")
_CUE_SIZE = 0.1  # marker side, as a fraction of the image size
SCALE_RANGE = (0.15, 0.27)  # default circumradius range, as a fraction of the image side
MARGIN = 0.14  # objects keep this fraction of the image away from the border (cue slots)


@dataclass
class ShapesSample:
    """Images with their labels, exact object masks and the factors that generated them.

    Attributes:
        images: (N, H, W, C) float32 in [0, 1].
        labels: (N,) int32 class index into `SHAPES`.
        masks: (N, H, W) bool, True on the object's pixels.
        factors: name -> (N,) array: shape, texture (int), hue, scale, rotation (radians),
            x, y (centre, fraction of the image), clutter (number of strokes), cue_slot
            (-1 without a marker), noise_seed (background and clutter; see `render_shapes`).
        cue_masks: (N, H, W) bool, True on the spurious marker's pixels.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    cue_masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def _polygon(shape: str, cx: float, cy: float, r: float, theta: float) -> np.ndarray:
    """Vertices of `shape` with circumradius `r`, rotated by `theta`, as int32 (K, 2)."""
    if shape == "square":
        angles = theta + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif shape == "triangle":
        angles = theta + np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, r)
    elif shape == "star":
        angles = theta + np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif shape == "cross":
        w = 0.34 * r  # half arm width
        local = np.array(
            [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w),
             (-r, w), (-w, w), (-w, r)]
        )  # fmt: skip
        c, s = np.cos(theta), np.sin(theta)
        pts = local @ np.array([[c, s], [-s, c]]) + (cx, cy)
        return np.round(pts).astype(np.int32)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")
    pts = np.stack([cx + radii * np.cos(angles), cy - radii * np.sin(angles)], axis=1)
    return np.round(pts).astype(np.int32)


def cue_slots(size: int) -> list[tuple[int, int]]:
    """Top-left corners of the marker slots: four corners and the top centre."""
    m = max(2, round(_CUE_SIZE * size))
    lo, hi, mid = 1, size - m - 1, (size - m) // 2
    return [(lo, lo), (hi, lo), (lo, hi), (hi, hi), (mid, lo)]


def generate_shapes(
    n: int,
    image_size: int = 64,
    seed: int = 0,
    channels: int = 3,
    spurious_cue: bool = False,
    cue_strength: float = 1.0,
    clutter: int = 4,
    scale: tuple[float, float] = SCALE_RANGE,
) -> ShapesSample:
    """Generate `n` images of shapes; deterministic for a given `seed`.

    Args:
        n: number of images.
        image_size: side of the square images, in pixels (>= 16).
        seed: random seed; the same seed gives the same images, labels, masks and factors.
        channels: 3 for RGB, 1 for grayscale.
        spurious_cue: paint a class-linked marker in a border slot.
        cue_strength: probability that the marker's slot is the class's slot (else random).
        clutter: maximum number of distractor strokes on the background.
        scale: range of the object's circumradius, as a fraction of the image side.

    Returns:
        A `ShapesSample`.
    """
    if image_size < 16:
        raise ValueError(f"`image_size` must be >= 16. Received: image_size={image_size}.")
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels}.")
    if not 0 < scale[0] <= scale[1] <= 0.5 - MARGIN:
        raise ValueError(
            f"`scale` must satisfy 0 < low <= high <= {0.5 - MARGIN:.2f}. Received: scale={scale}."
        )
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(SHAPES), n).astype(np.int32)
    f = {
        "shape": labels,
        "texture": rng.integers(0, len(TEXTURES), n).astype(np.int32),
        "hue": rng.uniform(0, 1, n).astype(np.float32),
        "scale": rng.uniform(scale[0], scale[1], n).astype(np.float32),
        "rotation": rng.uniform(0, 2 * np.pi, n).astype(np.float32),
        "clutter": rng.integers(0, clutter + 1, n).astype(np.int32),
    }
    margin = MARGIN + f["scale"]
    f["x"] = rng.uniform(margin, 1 - margin).astype(np.float32)
    f["y"] = rng.uniform(margin, 1 - margin).astype(np.float32)
    if spurious_cue:
        linked = rng.uniform(0, 1, n) < cue_strength
        slots = rng.integers(0, len(cue_slots(image_size)), n)
        f["cue_slot"] = np.where(linked, labels, slots).astype(np.int32)
    else:
        f["cue_slot"] = np.full(n, -1, np.int32)
    f["noise_seed"] = rng.integers(0, 2**31 - 1, n).astype(np.int64)
    return render_shapes(f, image_size, channels)


def render_shapes(
    factors: dict[str, np.ndarray], image_size: int = 64, channels: int = 3
) -> ShapesSample:
    """Paint the images that `factors` describe (the dict `generate_shapes` returns).

    Everything random that is not a factor (background level and noise, clutter strokes) comes
    from each image's `noise_seed`, so changing one factor and rendering again changes only
    what that factor controls: what sensitivity analysis needs.
    """
    f = {k: np.asarray(v) for k, v in factors.items()}
    labels = f["shape"].astype(np.int32)
    n, s = len(labels), image_size
    slots = cue_slots(s)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    checker = ((xx // max(2, s // 16) + yy // max(2, s // 16)) % 2).astype(np.float32)
    images = np.empty((n, s, s, 3), np.float32)
    masks = np.zeros((n, s, s), np.uint8)
    cue_masks = np.zeros((n, s, s), bool)
    m = max(2, round(_CUE_SIZE * s))
    for i in range(n):
        rng = np.random.default_rng(int(f["noise_seed"][i]))
        img = np.full((s, s, 3), rng.uniform(0.1, 0.35), np.float32)
        img += rng.normal(0, 0.03, (s, s, 3)).astype(np.float32)
        for _ in range(int(f["clutter"][i])):
            p1, p2 = rng.integers(0, s, 2), rng.integers(0, s, 2)
            grey = float(rng.uniform(0.3, 0.7))
            cv2.line(img, tuple(map(int, p1)), tuple(map(int, p2)), (grey,) * 3, 1)
        cx, cy, r = f["x"][i] * s, f["y"][i] * s, f["scale"][i] * s
        shape = SHAPES[labels[i]]
        if shape == "circle":
            cv2.circle(masks[i], (round(cx), round(cy)), round(r * 0.85), 1, -1)
        else:
            cv2.fillPoly(masks[i], [_polygon(shape, cx, cy, r, f["rotation"][i])], 1)
        hsv = np.uint8([[[round(float(f["hue"][i]) * 179), 200, 235]]])
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255
        texture = TEXTURES[f["texture"][i]]
        if texture == "stripes":
            a = f["rotation"][i]
            shade = 0.55 + 0.45 * (np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / 6) > 0)
        elif texture == "checker":
            shade = 0.55 + 0.45 * checker
        else:
            shade = np.ones((s, s), np.float32)
        obj = masks[i].astype(bool)
        img[obj] = shade[obj, None] * colour
        if f["cue_slot"][i] >= 0:
            x0, y0 = slots[f["cue_slot"][i]]
            img[y0 : y0 + m, x0 : x0 + m] = 1.0
            cue_masks[i, y0 : y0 + m, x0 : x0 + m] = True
            masks[i, y0 : y0 + m, x0 : x0 + m] = 0  # the marker hides what it covers
        images[i] = img
    np.clip(images, 0, 1, out=images)
    if channels == 1:
        images = images @ np.float32([0.299, 0.587, 0.114])[:, None]
    return ShapesSample(images, labels, masks.astype(bool), f, cue_masks)
