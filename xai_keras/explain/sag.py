"""Structured Attention Graphs: several small patch sets that each keep the prediction.

One heatmap hides that a model can be just as confident from different small regions. A SAG
(Shitole et al., "One Explanation is Not Enough: Structured Attention Graphs for Image
Classification", NeurIPS 2021) finds them and shows how confidence falls as patches go.

How it is computed here:

1. The image is cut into a grid of patches. A patch set is shown by keeping those patches and
   replacing the rest with a baseline. The default, "auto", takes the first of a blurred copy,
   a strongly blurred copy, the image's mean colour and black (the minimum of the model's
   input range) under which the empty set is *not* sufficient: a baseline that keeps the
   class on its own (a blur often does) leaves nothing to find. If none removes the evidence,
   the model sees the class without the image's content, and the result says so.
2. Confidence of a set = softmax probability of the target class for the masked image, divided
   by the probability for the full image (`relative=True`), or the probability itself.
3. Beam search grows patch sets one patch at a time. At each size it scores every extension of
   the `beam_width` best sets below the threshold; sets reaching the threshold are recorded (and
   not grown further). It stops `extra_sizes` sizes after the first sufficient set, at
   `max_size`, once 4 x `max_roots` sets are recorded, or when the beam is empty. The cost is
   therefore bounded by max_size x beam_width x patches masked forward passes (plus the
   minimisation and graph steps, each a few times the root size).
4. Each recorded set is made minimal by greedily dropping patches while the threshold still
   holds, so removing any one patch of a root drops it below the threshold.
5. Up to `max_roots` roots are chosen smallest (then most confident) first, skipping any that
   shares more than `max_overlap` of the smaller set's patches with a chosen root.
6. Each root is expanded into a deletion DAG: a node's children remove one patch each; the
   `branching` children with the largest drop are kept, nodes below `floor` are leaves, and
   identical sets reached from different parents are merged into one node.

All masked images are built and scored by one compiled function on fixed-size batches, and
every set's confidence is cached, so no set is ever scored twice. `n_forward` counts the
masked images that were scored.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from xai_keras.errors import InputError
from xai_keras.explain.api import check_images, check_targets
from xai_keras.explain.base import runner_for
from xai_keras.explain.baselines import REMOVAL_ORDER, make_baseline
from xai_keras.explain.ranges import ValueRange, resolve_value_range
from xai_keras.io import figure_to_png, save_figure

__all__ = ["AUTO_BASELINES", "SAG", "PatchScorer", "sag", "patch_index_map"]

Patches = tuple[int, ...]
# What baseline="auto" tries, in order: the first under which the empty set is insufficient.
AUTO_BASELINES = REMOVAL_ORDER


def patch_index_map(height: int, width: int, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) int32: the patch id of each pixel for a `grid` of (rows, cols) patches.

    Works for sizes the grid does not divide: patch borders are rounded down.
    """
    rows, cols = grid
    if not (1 <= rows <= height and 1 <= cols <= width):
        raise InputError(
            f"The `grid` must be between (1, 1) and the image size ({height}, {width}). "
            f"Received: grid={grid}."
        )
    r = np.arange(height) * rows // height
    c = np.arange(width) * cols // width
    return (r[:, None] * cols + c[None, :]).astype(np.int32)


def _blend(keep: tf.Tensor, image: tf.Tensor, fill: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """(B, P) 0/1 keep-masks -> (B, H, W, C) images: kept patches from `image`, the rest
    from `fill`; `index` (H, W) gives each pixel's patch."""
    pixels = tf.gather(keep, index, axis=1)[..., None]
    return pixels * image[None] + (1.0 - pixels) * fill[None]


def _masked_probs(runner, keep, image, fill, index, target):
    """The compiled SAG kernel: (B,) target probability of each masked image."""
    return runner.squash(runner.forward(_blend(keep, image, fill, index))[1])[:, target]


class PatchScorer:
    """Scores patch sets of one image with a compiled, fixed-batch masked forward pass.

    Args:
        model: the classifier.
        image: (H, W, C) float32.
        target: the class whose probability is measured.
        grid: (rows, cols).
        baseline: what hidden patches show ("blur", "blur_strong", "black", "mean", a number
            or an array).
        batch_size: masked images per forward pass.
        value_range: the model's input range ("black" is its minimum).
    """

    def __init__(
        self,
        model: keras.Model,
        image: np.ndarray,
        target: int,
        grid: tuple[int, int],
        baseline: Any = "blur",
        batch_size: int = 64,
        value_range: ValueRange | None = None,
    ):
        self.runner = runner_for(model)
        self.image = tf.constant(image, tf.float32)
        self.fill = make_baseline(self.image[None], baseline, value_range)[0]
        self.index = tf.constant(patch_index_map(image.shape[0], image.shape[1], grid))
        self.n_patches = grid[0] * grid[1]
        self.target = tf.constant(int(target), tf.int32)
        self.batch_size = batch_size
        self.cache: dict[frozenset, float] = {}
        self.n_forward = 0
        self.runner.squash(self.runner.forward_fn(self.image[None]))  # decide how, eagerly
        self._kernel = self.runner.kernel("sag", functools.partial(_masked_probs, self.runner))

    def masked_images(self, sets: list[Patches]) -> np.ndarray:
        """The inputs as the model sees them for each patch set, (N, H, W, C)."""
        return _blend(self._keep(sets), self.image, self.fill, self.index).numpy()

    def _keep(self, sets: list[Patches]) -> tf.Tensor:
        keep = np.zeros((len(sets), self.n_patches), np.float32)
        for i, s in enumerate(sets):
            keep[i, list(s)] = 1.0
        return tf.constant(keep)

    def probabilities(self, sets: list[Patches]) -> np.ndarray:
        """Target probability for each set, scoring only sets not seen before.

        Batches are padded to `batch_size`, or to the next power of two for the few sets the
        minimisation and graph steps ask for: at most log2(batch_size) + 1 traced shapes,
        and little work spent on padding.
        """
        todo = list(dict.fromkeys(frozenset(s) for s in sets if frozenset(s) not in self.cache))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            keep = self._keep([tuple(s) for s in chunk])
            size = min(self.batch_size, 1 << (len(chunk) - 1).bit_length())
            keep = tf.pad(keep, [[0, size - len(chunk)], [0, 0]])
            probs = self._kernel(keep, self.image, self.fill, self.index, self.target)
            probs = probs.numpy()[: len(chunk)]
            self.n_forward += len(chunk)
            self.cache.update(zip(chunk, probs.tolist()))
        return np.array([self.cache[frozenset(s)] for s in sets], np.float64)


@dataclass
class SAG:
    """A structured attention graph for one image.

    Attributes:
        roots: minimal sufficient patch sets (sorted tuples of patch ids), most useful first.
        nodes: node id -> {"patches": tuple, "confidence": float, "depth": int}.
        edges: (parent id, child id) pairs: the child removes one patch of the parent.
        target, class_name: the explained class; probability: its probability on the full image.
        grid, threshold, relative, floor: the settings used.
        n_forward: masked images scored to build the graph.
        message: why the graph is empty, if it is.
        baseline: the baseline the hidden patches showed (the one "auto" chose).
        baselines_tried: confidence of the empty set under each baseline tried.
    """

    image: np.ndarray
    target: int
    probability: float
    grid: tuple[int, int]
    threshold: float
    relative: bool
    floor: float
    roots: list[Patches] = field(default_factory=list)
    nodes: dict[int, dict] = field(default_factory=dict)
    edges: list[tuple[int, int]] = field(default_factory=list)
    class_name: str | None = None
    n_forward: int = 0
    message: str = ""
    baseline: str = ""
    baselines_tried: dict[str, float] = field(default_factory=dict)
    scorer: PatchScorer | None = field(default=None, repr=False, compare=False)

    # -- queries ---------------------------------------------------------------------------------
    def confidence(self, patches: Patches) -> float:
        """The recorded confidence of a scored patch set."""
        key = tuple(sorted(patches))
        for node in self.nodes.values():
            if node["patches"] == key:
                return node["confidence"]
        if self.scorer is not None and frozenset(key) in self.scorer.cache:
            return self._relative(self.scorer.cache[frozenset(key)])
        raise KeyError(f"Patch set {key} was not scored for this SAG.")

    def masked_image(self, patches: Patches) -> np.ndarray:
        """The input as the model saw it for this patch set (H, W, C), for independent checks."""
        if self.scorer is None:
            raise ValueError("This SAG was loaded from a dict; masked images need the model.")
        return self.scorer.masked_images([tuple(patches)])[0]

    def _relative(self, p: float) -> float:
        return p / self.probability if self.relative else p

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "class_name": self.class_name,
            "probability": self.probability,
            "grid": list(self.grid),
            "threshold": self.threshold,
            "relative": self.relative,
            "floor": self.floor,
            "roots": [list(r) for r in self.roots],
            "nodes": {str(k): {**v, "patches": list(v["patches"])} for k, v in self.nodes.items()},
            "edges": [list(e) for e in self.edges],
            "n_forward": self.n_forward,
            "message": self.message,
            "baseline": self.baseline,
            "baselines_tried": self.baselines_tried,
            "image_shape": list(self.image.shape),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], image: np.ndarray | None = None) -> SAG:
        shape = tuple(data["image_shape"])
        return cls(
            image=image if image is not None else np.zeros(shape, np.float32),
            target=data["target"],
            probability=data["probability"],
            grid=tuple(data["grid"]),
            threshold=data["threshold"],
            relative=data["relative"],
            floor=data["floor"],
            roots=[tuple(r) for r in data["roots"]],
            nodes={int(k): {**v, "patches": tuple(v["patches"])} for k, v in data["nodes"].items()},
            edges=[tuple(e) for e in data["edges"]],
            class_name=data["class_name"],
            n_forward=data["n_forward"],
            message=data["message"],
            baseline=data.get("baseline", ""),
            baselines_tried=data.get("baselines_tried", {}),
        )

    def to_json(self, path: str | os.PathLike) -> Path:
        from xai_keras.io import write_json

        return write_json(path, self.to_dict())

    def to_dot(self) -> str:
        """Graphviz DOT text: one node per patch set, labelled with its patches and confidence."""
        lines = ["digraph SAG {", "  node [shape=box];"]
        for k, v in self.nodes.items():
            patches = ",".join(map(str, v["patches"]))
            lines.append(f'  n{k} [label="{{{patches}}}\\n{v["confidence"]:.2f}"];')
        lines += [f"  n{a} -> n{b};" for a, b in self.edges]
        return "\n".join(lines + ["}"])

    # -- pictures -------------------------------------------------------------------------------
    def plot(self, thumb: float = 1.6) -> Figure:
        """The image, then the graph: each node is the masked image with its confidence."""
        from xai_keras.explain.sag_plot import plot_sag

        return plot_sag(self, thumb)

    def save(self, path: str | os.PathLike, dpi: int = 110) -> Path:
        return save_figure(self.plot(), path, dpi=dpi)

    def _repr_png_(self) -> bytes:
        """A notebook shows the graph, not the dataclass fields."""
        return figure_to_png(self.plot())


# -- the search ------------------------------------------------------------------------------------
def _beam_search(
    score,
    threshold: float,
    beam_width: int,
    max_size: int,
    candidates: list[int],
    extra_sizes: int,
    max_found: int,
) -> list[Patches]:
    """Sets reaching `threshold`, grown patch by patch from the best sets below it.

    The search goes `extra_sizes` sizes past the first size with a sufficient set (larger
    alternatives may be more diverse), and stops early once `max_found` sets are recorded.
    """
    found: list[Patches] = []
    beam: list[Patches] = [()]
    last = max_size
    for size in range(1, max_size + 1):
        if size > last or len(found) >= max_found:
            break
        grown = list(
            dict.fromkeys(tuple(sorted((*s, p))) for s in beam for p in candidates if p not in s)
        )
        if not grown:
            break
        conf = score(grown)
        order = np.argsort(-conf, kind="stable")
        hits = [grown[i] for i in order if conf[i] >= threshold]
        if hits and not found:
            last = min(max_size, size + extra_sizes)
        found += hits
        beam = [grown[i] for i in order if conf[i] < threshold][:beam_width]
        if not beam:
            break
    return found


def _minimise(score, patches: Patches, threshold: float) -> Patches:
    """Drop patches while the set stays above the threshold; the result is minimal."""
    current = patches
    while len(current) > 1:
        subsets = [tuple(p for p in current if p != q) for q in current]
        conf = score(subsets)
        best = int(np.argmax(conf))
        if conf[best] < threshold:
            break
        current = subsets[best]
    return current


def _diverse_minimal(
    score, found: list[Patches], threshold: float, max_roots: int, max_overlap: float
) -> list[Patches]:
    """Minimise found sets smallest first; keep those that overlap no chosen root too much."""
    chosen: list[Patches] = []
    for s in sorted(found, key=len):
        root = tuple(sorted(_minimise(score, s, threshold)))
        if root in chosen:
            continue
        if all(len(set(root) & set(c)) <= max_overlap * min(len(root), len(c)) for c in chosen):
            chosen.append(root)
        if len(chosen) == max_roots:
            break
    conf = score(chosen) if chosen else []
    return [c for _, c in sorted(zip(-np.asarray(conf), chosen), key=lambda t: (len(t[1]), t[0]))]


def _rank_patches(model, image, target, index, method: str, n: int) -> list[int]:
    """Patches ordered by the mass of another method's map inside them (most first)."""
    from xai_keras.explain.api import explain

    maps = explain(model, image, method=method, targets=target).maps[0]
    mass = np.bincount(index.ravel(), weights=maps.ravel(), minlength=n)
    return [int(p) for p in np.argsort(-mass, kind="stable")]


def sag(
    model: keras.Model,
    image: Any,
    target: int | None = None,
    grid: tuple[int, int] = (7, 7),
    threshold: float = 0.9,
    relative: bool = True,
    baseline: Any = "auto",
    beam_width: int = 5,
    max_size: int | None = None,
    max_roots: int = 3,
    max_overlap: float = 0.5,
    floor: float = 0.4,
    branching: int = 2,
    max_depth: int = 3,
    rank_by: str | None = None,
    max_candidates: int | None = None,
    extra_sizes: int = 2,
    batch_size: int = 64,
    class_names: list[str] | None = None,
    value_range: Any = None,
) -> SAG:
    """Find diverse minimal sufficient patch sets and the graph of their deletions.

    Args:
        model: a Keras classifier (a final softmax is taken into account, see `explain`).
        image: one image (H, W, C), preprocessed as the model expects.
        target: the class to explain; default: the top class.
        grid: (rows, cols) of patches; sizes the grid does not divide are fine.
        threshold: confidence a set must keep to be sufficient.
        relative: confidence relative to the full image's probability (else absolute).
        baseline: what hidden patches show: "auto" (default: the first of "blur",
            "blur_strong", "mean" and "black" under which the empty set is insufficient),
            one of those, a number or an array.
        beam_width: sets kept per size during the search.
        max_size: the largest set searched (default: 30% of the patches).
        max_roots: the number of diverse roots returned.
        max_overlap: the largest share of the smaller root's patches two roots may share.
        floor: confidence under which graph nodes are not expanded further.
        branching: children kept per node (those with the largest confidence drop).
        max_depth: patches removed below a root, at most.
        rank_by: optionally a method name ("gradcam", "occlusion", ...) whose map orders the
            candidate patches; with `max_candidates` only the top patches are searched.
        max_candidates: the number of candidate patches when `rank_by` is set.
        extra_sizes: sizes searched past the first one where a sufficient set appears.
        batch_size: masked images per compiled forward pass.
        class_names: for the plot's title.
        value_range: the model's input range, e.g. (-1, 1) ("black" is its minimum).

    Returns:
        A `SAG`. If no set up to `max_size` reaches the threshold it has no roots and its
        `message` says so (a warning is issued too).

    Example:
        >>> g = sag(model, image, grid=(7, 7), threshold=0.9)
        >>> g.roots, g.confidence(g.roots[0])
        >>> g.save("sag.png")
    """
    if not 0 < threshold <= (1.0 if not relative else 10.0):
        raise InputError(f"`threshold` must be in (0, 1]. Received: threshold={threshold}.")
    if max_roots < 1 or beam_width < 1 or branching < 1:
        raise InputError("`max_roots`, `beam_width` and `branching` must be >= 1.")
    x, single = check_images(image, model, name="image")
    if not single and x.shape[0] != 1:
        raise InputError(f"`sag` explains one image at a time. Received {x.shape[0]} images.")
    img = x[0].numpy()
    grid = tuple(int(g) for g in grid)
    vrange = resolve_value_range(value_range)
    probe = PatchScorer(model, img, 0, grid, "black", batch_size, vrange)
    probe.runner.num_scores  # noqa: B018 (refuses an output with spatial dimensions)
    n = probe.n_patches
    full = tuple(range(n))
    logits = probe.runner.forward_fn(x).numpy()[0]
    top = int(np.argmax(logits))
    if class_names is not None and len(class_names) != len(logits):
        raise InputError(
            f"`class_names` has {len(class_names)} names but model {model.name!r} has "
            f"{len(logits)} classes; give one name per class, in class-index order."
        )
    target = top if target is None else int(check_targets(target, 1, len(logits))[0])
    auto = isinstance(baseline, str) and baseline == "auto"
    tried: dict[str, float] = {}
    for kind in AUTO_BASELINES if auto else (baseline,):
        scorer = PatchScorer(model, img, target, grid, kind, batch_size, vrange)
        probability = float(scorer.probabilities([full])[0])
        if relative and probability <= 0:
            raise InputError(
                f"The model gives class {target} probability 0 on this image, so a confidence "
                "relative to it is undefined. Pass relative=False or another target."
            )
        empty = float(scorer.probabilities([()])[0]) / (probability if relative else 1.0)
        tried[kind if isinstance(kind, str) else "custom"] = empty
        if empty < threshold:
            break
    n_forward = len(tried)  # the empty set under each baseline tried
    scorer.n_forward = 0

    def score(sets: list[Patches]) -> np.ndarray:
        p = scorer.probabilities(sets)
        return p / probability if relative else p

    max_size = max_size or max(1, math.ceil(0.3 * n))
    candidates = list(range(n))
    if rank_by is not None:
        candidates = _rank_patches(model, img, target, scorer.index.numpy(), rank_by, n)
        candidates = candidates[: max_candidates or n]

    result = SAG(
        image=img,
        target=target,
        probability=probability,
        grid=grid,
        threshold=threshold,
        relative=relative,
        floor=floor,
        class_name=class_names[target] if class_names else None,
        scorer=scorer,
        baseline=list(tried)[-1],
        baselines_tried=tried,
    )
    found = (
        []
        if empty >= threshold
        else _beam_search(
            score, threshold, beam_width, max_size, candidates, extra_sizes, 4 * max_roots
        )
    )
    if not found and empty < threshold and float(score([full])[0]) >= threshold:
        # Nothing small suffices, yet the whole image does: shrink the whole image instead,
        # so an image whose evidence can be removed always gets a (verified, minimal) root.
        found = [_minimise(score, full, threshold)]
    if found:
        result.roots = _diverse_minimal(score, found, threshold, max_roots, max_overlap)
        _expand(result, score, branching, max_depth)
    elif empty >= threshold:
        result.message = _no_baseline_message(tried, target, auto, threshold)
    else:
        result.message = (
            f"No set of up to {max_size} of {n} patches keeps {threshold:.0%} of the "
            f"{'full-image ' if relative else ''}confidence for class {target} (probability "
            f"{probability:.3f} on the full image): the model is not confident from any small "
            "region. Try a coarser grid, a larger max_size or a lower threshold."
        )
    if result.message:
        warnings.warn(result.message, RuntimeWarning, stacklevel=2)
    result.n_forward = scorer.n_forward + n_forward
    return result


def _no_baseline_message(tried: dict[str, float], target: int, auto: bool, threshold) -> str:
    """Why the graph is empty when the empty set already keeps the class; advice never
    repeats a baseline that was tried."""
    kept = ", ".join(f"{k} {v:.0%}" for k, v in tried.items())
    if auto:
        return (
            f"No baseline removes the evidence for class {target}: with no patch kept the "
            f"model keeps {kept} of its confidence (threshold {threshold:.0%}). It sees the "
            "class without the image's content (e.g. it is as confident on a blank image): a "
            "finding about the model, not a failure of the search."
        )
    others = [b for b in AUTO_BASELINES if b not in tried]
    return (
        f"The baseline alone ({kept}, no patch kept) keeps the confidence for class {target}: "
        "the model still sees the class without any patch, so no patch set is needed. Try "
        f"baseline='auto' (which tries {', '.join(AUTO_BASELINES)})"
        + (f" or one of {', '.join(repr(b) for b in others)}." if others else ".")
    )


def _expand(g: SAG, score, branching: int, max_depth: int) -> None:
    """Build the deletion DAG below each root, merging identical patch sets."""
    ids: dict[Patches, int] = {}

    def node(patches: Patches, depth: int) -> tuple[int, bool]:
        if patches in ids:
            return ids[patches], False
        ids[patches] = len(ids)
        conf = float(score([patches])[0])
        g.nodes[ids[patches]] = {"patches": patches, "confidence": conf, "depth": depth}
        return ids[patches], True

    frontier = [node(r, 0)[0] for r in g.roots]
    for depth in range(1, max_depth + 1):
        nxt = []
        for parent in frontier:
            info = g.nodes[parent]
            if info["confidence"] < g.floor or len(info["patches"]) <= 1:
                continue
            children = [tuple(p for p in info["patches"] if p != q) for q in info["patches"]]
            conf = score(children)
            for i in np.argsort(conf, kind="stable")[:branching]:
                child, new = node(children[i], depth)
                if (parent, child) not in g.edges:
                    g.edges.append((parent, child))
                if new:
                    nxt.append(child)
        frontier = nxt
