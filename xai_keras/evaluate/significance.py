"""Does a method beat a random map on this model? A paired test over images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from scipy.stats import wilcoxon

from xai_keras.evaluate.faithfulness import deletion, insertion
from xai_keras.explainers.api import explain

__all__ = ["RandomReference", "beats_random", "random_reference"]


def beats_random(
    method_scores: np.ndarray,
    random_scores: np.ndarray,
    higher_is_better: bool,
    informative: np.ndarray | None = None,
) -> dict[str, float]:
    """One-sided Wilcoxon signed-rank test, paired by image: is the method better than
    random? Only the `informative` images count (see `Curves.informative`: where the
    baseline does not remove the class, every map's curve is flat and the difference is
    noise). Returns `{"p": ..., "wins": images where it is better, "n": images tested}`."""
    keep = np.ones(len(method_scores), bool) if informative is None else np.asarray(informative)
    diff = np.asarray(method_scores, np.float64)[keep] - np.asarray(random_scores, np.float64)[keep]
    diff = diff if higher_is_better else -diff
    wins = int((diff > 0).sum())
    if diff.size == 0 or not np.any(diff != 0):
        return {"p": 1.0, "wins": wins, "n": len(diff)}
    p = float(wilcoxon(diff, alternative="greater", zero_method="wilcox").pvalue)
    return {"p": p, "wins": wins, "n": len(diff)}


@dataclass
class RandomReference:
    """Per-image deletion and insertion AUCs of the `random` map (the mean over seeds), and
    which images can tell maps apart (`Curves.informative`: the same for every map)."""

    deletion: np.ndarray
    insertion: np.ndarray
    informative: np.ndarray

    def compare(
        self, deletion_auc: np.ndarray, insertion_auc: np.ndarray, alpha: float = 0.01
    ) -> dict[str, Any]:
        """A method's per-image AUCs against this reference: `p_deletion`, `p_insertion`,
        `wins_deletion`, `wins_insertion`, `n` (images tested) and `beats_random` (both p
        below `alpha`)."""
        d = beats_random(deletion_auc, self.deletion, False, self.informative)
        i = beats_random(insertion_auc, self.insertion, True, self.informative)
        return {
            "p_deletion": d["p"],
            "p_insertion": i["p"],
            "wins_deletion": d["wins"],
            "wins_insertion": i["wins"],
            "n": d["n"],
            "beats_random": bool(d["p"] < alpha and i["p"] < alpha),
        }


def random_reference(
    model: keras.Model,
    images: Any,
    targets: Any = None,
    seeds: int = 3,
    **curve_options: Any,
) -> RandomReference:
    """The `random` map's deletion and insertion AUCs on `images`, averaged over `seeds`
    seeded maps; `curve_options` go to `deletion`/`insertion` (baseline, steps, ...)."""
    dels, inss = [], []
    for seed in range(seeds):
        maps = explain(model, images, "random", seed=seed).maps
        removed = deletion(model, images, maps, targets, **curve_options)
        dels.append(removed.auc)
        inss.append(insertion(model, images, maps, targets, **curve_options).auc)
    return RandomReference(np.mean(dels, axis=0), np.mean(inss, axis=0), removed.informative)
