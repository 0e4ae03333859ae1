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
3. Beam search grows patch sets one patch at a time. The patches are ranked once per image
   by one batched forward and backward pass (`rank_by`, default "patch_ig": the magnitude
   of integrated gradients of the target's score over the patches' keep weights, from the
   baseline to the image), and at each size each of the `beam_width` best sets below the
   threshold is extended by the `candidates` best-ranked patches it does not hold yet (by
   every patch when `candidates` is None, an exhaustive search); sets reaching the threshold
   are recorded (and not grown further). It stops `extra_sizes` sizes after the first
   sufficient set, at `max_size`, once 4 x `max_roots` sets are recorded, or when the beam
   is empty. The cost is therefore bounded by max_size x beam_width x candidates masked
   forward passes (plus the minimisation and graph steps, each a few times the root size).
   The SAG paper's code likewise extends each set by its most promising patches only (15
   there). On the trained shapes CNN (40 images, scripts/bench_sag.py --roots) 10
   candidates cost 217 masked passes per image against 967 for the exhaustive search, and
   found roots on the same images, of the same mean smallest size (3.40 patches), all
   minimal and sufficient.
4. Each recorded set is made minimal by greedily dropping patches while the threshold still
   holds, so removing any one patch of a root drops it below the threshold.
5. Up to `max_roots` roots are chosen smallest (then most confident) first, skipping any that
   shares more than `max_overlap` of the smaller set's patches with a chosen root.
6. Each root is expanded into a deletion DAG: a node's children remove one patch each; the
   `branching` children with the largest drop are kept, nodes below `floor` are leaves, and
   identical sets reached from different parents are merged into one node.

All masked images are built and scored by one compiled function on fixed-size batches, and
every set's confidence is cached, so no set is ever scored twice. `n_forward` counts the
masked images that were scored, and those the ranking differentiated.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from xai_keras.checks import check_int, check_number
from xai_keras.errors import InputError
from xai_keras.explainers.base import get_method, methods
from xai_keras.explainers.baselines import REMOVAL_ORDER, auto_removal
from xai_keras.explainers.sag.picture import plot_sag
from xai_keras.explainers.sag.result import SAG
from xai_keras.explainers.sag.scorer import Patches, PatchScorer, patch_index_map
from xai_keras.explainers.sag.search import (
    beam_search,
    diverse_minimal,
    expand,
    minimise,
    rank_patches,
)
from xai_keras.explainers.session import Session, model_form

__all__ = ["AUTO_BASELINES", "SAG", "PatchScorer", "plot_sag", "sag", "patch_index_map"]

# What baseline="auto" tries, in order: the first under which the empty set is insufficient.
AUTO_BASELINES = REMOVAL_ORDER


def _scorer_factory(
    session: Session, image: np.ndarray, grid: tuple[int, int]
) -> Callable[[int, Any], PatchScorer]:
    """`(target, baseline) -> PatchScorer` for one image of the session's model."""

    def make(target: int, baseline: Any) -> PatchScorer:
        return PatchScorer(session, image, target, grid, baseline)

    return make


def sag(
    model: keras.Model | Session,
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
    candidates: int | None = 10,
    rank_by: str = "patch_ig",
    extra_sizes: int = 2,
    batch_size: int | None = None,
    class_names: list[str] | None = None,
    output: int | str | None = None,
    head: str | None = None,
    score: Callable | None = None,
    inputs: dict[str, Any] | None = None,
    reshape: Callable | None = None,
    value_range: Any = None,
) -> SAG:
    """Find diverse minimal sufficient patch sets and the graph of their deletions.

    Args:
        model: a Keras classifier (a final softmax is taken into account, see `explain`), or
            a `Session` for one.
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
        candidates: how many patches extend each set of the beam: the best-ranked ones the
            set does not hold yet. None extends by every patch (exhaustive, about
            patches / candidates times the cost of the search step).
        rank_by: how the patches are ranked when `candidates` limits the search:
            "patch_ig" (default: the magnitude of the target score's gradient with respect
            to each patch's keep weight, averaged over 16 points from the baseline to the
            image; 16 images in `n_forward`), or a method name of `explain` ("gradcam",
            "occlusion", ...; its cost is not in `n_forward`), whose map's mass in each
            patch ranks it.
        extra_sizes: sizes searched past the first one where a sufficient set appears.
        batch_size: masked images per compiled forward pass (default 64, or the session's).
        class_names: for the plot's title.
        output, head, score, inputs, reshape: what is explained and how, as in `explain`
            (held `inputs` take one row).
        value_range: the model's input range, e.g. (-1, 1) ("black" is its minimum).

    Returns:
        A `SAG`. If no set up to `max_size` reaches the threshold it has no roots and its
        `message` says so (a warning is issued too).

    Example:
        >>> g = sag(model, image, grid=(7, 7), threshold=0.9)
        >>> g.roots, g.confidence(g.roots[0])
        >>> g.save("sag.png")
    """
    counts = dict(beam_width=beam_width, max_size=max_size, max_roots=max_roots,
                  branching=branching, max_depth=max_depth, candidates=candidates,
                  extra_sizes=extra_sizes)  # fmt: skip
    fractions = dict(max_overlap=max_overlap, floor=floor)
    _check_search(threshold, relative, counts, fractions, rank_by)
    grid = _check_grid(grid)
    default_batch = None if isinstance(model, Session) else 64
    session = Session.of(model, **model_form(locals()), batch_size=batch_size or default_batch)
    x, single = session.images(image, name="image")
    if not single and x.shape[0] != 1:
        raise InputError(f"`sag` explains one image at a time. Received {x.shape[0]} images.")
    class_names = session.check_class_names(class_names, x)
    next(session.groups(1))  # hold this image's row of each held input
    img = x[0].numpy()
    make_scorer = _scorer_factory(session, img, grid)
    n = grid[0] * grid[1]
    full = tuple(range(n))
    target = int(session.explained(x, target)[0][0])
    scorer, probability, tried, choice = _choose_baseline(
        make_scorer, target, baseline, full, relative, threshold
    )
    empty = list(tried.values())[choice]
    n_forward = len(tried)  # the empty set under each baseline tried
    scorer.n_forward = 0

    def score(sets: list[Patches]) -> np.ndarray:
        p = scorer.probabilities(sets)
        return p / probability if relative else p

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
        baseline=list(tried)[choice],
        baselines_tried=tried,
    )
    if empty >= threshold:
        result.message = _no_baseline_message(tried, target, _is_auto(baseline), threshold)
    else:
        max_size = max_size or max(1, math.ceil(0.3 * n))
        exhaustive = candidates is None or candidates >= n
        ranking = list(range(n)) if exhaustive else rank_patches(scorer, rank_by, session)
        found = beam_search(
            score, threshold, beam_width, max_size, ranking, candidates, extra_sizes, 4 * max_roots
        )
        graph = (max_roots, max_overlap, branching, max_depth)
        _roots_and_graph(result, score, found, max_size, graph)
    if result.message:
        warnings.warn(result.message, RuntimeWarning, stacklevel=2)
    result.n_forward = scorer.n_forward + scorer.n_gradient + n_forward
    return result


def _is_auto(baseline: Any) -> bool:
    return isinstance(baseline, str) and baseline == "auto"


def _choose_baseline(
    make_scorer: Callable[[int, Any], PatchScorer],
    target: int,
    baseline: Any,
    full: Patches,
    relative: bool,
    threshold: float,
) -> tuple[PatchScorer, float, dict[str, float], int]:
    """(scorer, full-image probability, tried, choice): the baselines are tried in order until
    the empty set is insufficient under one (`tried`: the empty set's confidence under each);
    `choice` indexes the one used, by `auto_removal`'s rule (the first that removes the
    evidence, else the one that removes most)."""
    tried: dict[str, float] = {}
    scorers = []
    for kind in AUTO_BASELINES if _is_auto(baseline) else (baseline,):
        scorer = make_scorer(target, kind)
        probability = float(scorer.probabilities([full])[0])
        if relative and probability <= 0:
            raise InputError(
                f"The model gives class {target} probability 0 on this image, so a confidence "
                "relative to it is undefined. Pass relative=False or another target."
            )
        empty = float(scorer.probabilities([()])[0]) / (probability if relative else 1.0)
        tried[kind if isinstance(kind, str) else "custom"] = empty
        scorers.append(scorer)
        if empty < threshold:
            break
    choice = int(auto_removal(list(tried.values()), threshold))
    return scorers[choice], probability, tried, choice


def _roots_and_graph(
    result: SAG, score: Callable, found: list, max_size: int, graph: tuple[int, float, int, int]
) -> None:
    """Diverse minimal roots from the sets the search found (or the whole image, shrunk) and
    the graph below them; else the message that nothing small suffices."""
    max_roots, max_overlap, branching, max_depth = graph
    full = tuple(range(result.grid[0] * result.grid[1]))
    threshold = result.threshold
    if not found and float(score([full])[0]) >= threshold:
        # Nothing small suffices, yet the whole image does: shrink the whole image instead,
        # so an image whose evidence can be removed always gets a (verified, minimal) root.
        found = [minimise(score, full, threshold)]
    if found:
        result.roots = diverse_minimal(score, found, threshold, max_roots, max_overlap)
        expand(result, score, branching, max_depth)
        return
    result.message = (
        f"No set of up to {max_size} of {len(full)} patches keeps {threshold:.0%} of the "
        f"{'full-image ' if result.relative else ''}confidence for class {result.target} "
        f"(probability {result.probability:.3f} on the full image): the model is not "
        "confident from any small region. Try a coarser grid, a larger max_size or a lower "
        "threshold."
    )


def _check_search(
    threshold: Any, relative: Any, counts: dict[str, Any], fractions: dict[str, Any], rank_by: Any
) -> None:
    """The search settings, each refused in one line naming it: `threshold` in (0, 1] ((0, 10]
    for a relative confidence, which can exceed 1), `relative` a bool, the `counts` (name ->
    value: `max_size` and `candidates` may be None, `max_depth` and `extra_sizes` 0), the
    `fractions` (name -> value in [0, 1]) and the ranking."""
    if not isinstance(relative, (bool, np.bool_)):
        raise InputError(f"`relative` must be True or False. Received: relative={relative!r}.")
    check_number(threshold, "threshold", low=0, high=10 if relative else 1, low_open=True)
    candidates = counts.pop("candidates")
    if candidates is not None and (
        isinstance(candidates, bool)
        or not isinstance(candidates, numbers.Integral)
        or candidates < 1
    ):
        raise InputError(
            "The `candidates` argument must be a positive int, or None for an exhaustive "
            f"search. Received: candidates={candidates!r}."
        )
    for name, value in counts.items():
        low = 0 if name in ("max_depth", "extra_sizes") else 1
        check_int(value, name, low=low, allow_none=name == "max_size")
    for name, value in fractions.items():
        check_number(value, name, low=0, high=1)
    if isinstance(rank_by, str) and rank_by == "patch_ig":
        return
    try:
        get_method(rank_by)
    except InputError:
        raise InputError(
            "The `rank_by` argument must be 'patch_ig' or a method name "
            f"({', '.join(methods())}). Received: rank_by={rank_by!r}."
        ) from None


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


def _check_grid(grid: Any) -> tuple[int, int]:
    """`grid` as (rows, cols) of ints >= 1, else one line saying the form it takes."""
    ok = isinstance(grid, (tuple, list)) and len(grid) == 2
    ok = ok and all(isinstance(g, numbers.Integral) and not isinstance(g, bool) for g in grid)
    if not ok or min(grid) < 1:
        raise InputError(
            "The `grid` argument must be (rows, cols) of ints >= 1, e.g. grid=(7, 7). "
            f"Received: grid={grid!r}."
        )
    return int(grid[0]), int(grid[1])
