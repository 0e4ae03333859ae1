"""The search behind a SAG: beam search for sufficient patch sets, their minimisation, the
choice of diverse roots, and the deletion graph below each root."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_keras.explainers.sag.scorer import Patches, PatchScorer

if TYPE_CHECKING:
    from xai_keras.explainers.sag.result import SAG

__all__ = ["PATCH_IG_STEPS", "beam_search", "diverse_minimal", "expand", "minimise", "rank_patches"]

PATCH_IG_STEPS = 16  # points from the baseline to the image for rank_by="patch_ig"


def beam_search(
    score,
    threshold: float,
    beam_width: int,
    max_size: int,
    ranking: list[int],
    candidates: int | None,
    extra_sizes: int,
    max_found: int,
) -> list[Patches]:
    """Sets reaching `threshold`, grown patch by patch from the best sets below it.

    Each set is grown by the first `candidates` patches of `ranking` it lacks (by every patch
    of `ranking` when `candidates` is None), so different sets still reach different patches.
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
            dict.fromkeys(
                tuple(sorted((*s, p)))
                for s in beam
                for p in itertools.islice((q for q in ranking if q not in s), candidates)
            )
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


def minimise(score, patches: Patches, threshold: float) -> Patches:
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


def diverse_minimal(
    score, found: list[Patches], threshold: float, max_roots: int, max_overlap: float
) -> list[Patches]:
    """Minimise found sets smallest first; keep those that overlap no chosen root too much."""
    chosen: list[Patches] = []
    for s in sorted(found, key=len):
        root = tuple(sorted(minimise(score, s, threshold)))
        if root in chosen:
            continue
        if all(len(set(root) & set(c)) <= max_overlap * min(len(root), len(c)) for c in chosen):
            chosen.append(root)
        if len(chosen) == max_roots:
            break
    conf = score(chosen) if chosen else []
    return [c for _, c in sorted(zip(-np.asarray(conf), chosen), key=lambda t: (len(t[1]), t[0]))]


def rank_patches(scorer: PatchScorer, rank_by: str, model: Any = None) -> list[int]:
    """All patches, most promising first.

    "patch_ig" ranks by the magnitude of integrated gradients over the patches' keep weights:
    the gradient of the target's score with respect to each patch's keep weight, averaged
    over `PATCH_IG_STEPS` points from the baseline (all weights 0) to the image (all 1), in
    one batched pass. The magnitude, not the sign: patches interact, and on the shapes CNN
    the patches of the exhaustive search's roots were often among the most negative (a
    signed ranking, or the gradient at the image alone, put them last and cost 1.5-3x the
    passes). Any other name is a method of `explain`, ranked by its map's mass inside each
    patch.
    """
    n = scorer.n_patches
    if rank_by == "patch_ig":
        steps = (np.arange(PATCH_IG_STEPS) + 0.5) / PATCH_IG_STEPS
        weight = np.abs(scorer.patch_gradients(np.repeat(steps[:, None], n, axis=1)).mean(0))
    else:
        from xai_keras.explainers.api import explain

        image = scorer.image.numpy()
        maps = explain(model, image, method=rank_by, targets=int(scorer.target)).maps[0]
        weight = np.bincount(scorer.index.numpy().ravel(), weights=maps.ravel(), minlength=n)
    return [int(p) for p in np.argsort(-weight, kind="stable")]


def expand(g: SAG, score, branching: int, max_depth: int) -> None:
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
