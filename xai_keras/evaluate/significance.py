"""Does a method beat a random map on this model? A paired test over images."""

from __future__ import annotations

import numpy as np
from scipy.stats import wilcoxon

__all__ = ["beats_random"]


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
