"""The search behind a SAG: beam search for sufficient patch sets, their minimisation, the
choice of diverse roots, and the deletion graph below each root."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xai_keras.explain.sag.scorer import Patches

if TYPE_CHECKING:
    from xai_keras.explain.sag.result import SAG

__all__ = ["beam_search", "diverse_minimal", "expand", "minimise", "rank_patches"]


def beam_search(
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


def rank_patches(model, image, target, index, method: str, n: int) -> list[int]:
    """Patches ordered by the mass of another method's map inside them (most first)."""
    from xai_keras.explain.api import explain

    maps = explain(model, image, method=method, targets=target).maps[0]
    mass = np.bincount(index.ravel(), weights=maps.ravel(), minlength=n)
    return [int(p) for p in np.argsort(-mass, kind="stable")]


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
