"""Metrics for explanations, usable on their own with any model and any maps (N, H, W).

- faithfulness: `deletion`, `insertion` (curves with `.auc`), `average_drop_increase`;
- localisation: `pointing_game`, `energy_pointing` against object masks;
- sanity: `cascading_randomization` (model-parameter randomisation) and its `summary`;
- shortcut: `shortcut_hits`, `shortcut_rate` against masks of a known spurious cue;
- ROAD: `road` (remove and debias: noisy linear imputation, most/least relevant first);
- more faithfulness: `faithfulness_correlation`, `faithfulness_estimate`, `pixel_flipping`,
  `region_perturbation`, `irof`, `infidelity`, `monotonicity`, `monotonicity_correlation`,
  `sufficiency`;
- robustness: `max_sensitivity`, `avg_sensitivity`, `local_lipschitz`,
  `relative_input_stability`;
- localisation: `top_k_intersection`, `relevance_rank_accuracy`, `relevance_mass_accuracy`,
  `localisation_auc`;
- complexity: `sparseness`, `complexity`, `effective_complexity`;
- randomisation: `random_logit`, `smooth_mprt` (besides `cascading_randomization`);
- axiomatic: `completeness`, `input_invariance`.

`metrics(family="robustness")` lists a family; the metrics registered with `default=False`
(all of the list above from "more faithfulness" on) are computed by `evaluate_model` only
when named in its `metrics=`.

Each metric is registered where it is defined (`registry.register_metric`): `metrics()` lists
them, `get_metric(name)` says what one needs and which way is better; the benchmark,
`explain_dataset` and the CLI read the registry. A new metric is one module imported below
(see `xai_keras.evaluate.registry`).

Each returns per-image values; aggregate (mean, median, ...) as you need. `evaluate_model`
runs them all at once, as the benchmark does, on your own model and data (a `tf.data.Dataset`
or arrays) and returns their means.
"""

from typing import TYPE_CHECKING

from xai_keras.evaluate.axiomatic import completeness, input_invariance
from xai_keras.evaluate.complexity import complexity, effective_complexity, sparseness
from xai_keras.evaluate.faithfulness import (
    Curves,
    PerturbationCurves,
    average_drop_increase,
    deletion,
    faithfulness_correlation,
    faithfulness_estimate,
    infidelity,
    insertion,
    irof,
    monotonicity,
    monotonicity_correlation,
    pixel_flipping,
    region_perturbation,
    sufficiency,
)
from xai_keras.evaluate.localisation import (
    energy_pointing,
    localisation_auc,
    pointing_game,
    pointing_offcentre,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from xai_keras.evaluate.registry import Metric, get_metric, metrics, register_metric
from xai_keras.evaluate.road import RoadCurves, noisy_linear_impute, road
from xai_keras.evaluate.robustness import (
    avg_sensitivity,
    local_lipschitz,
    max_sensitivity,
    relative_input_stability,
)
from xai_keras.evaluate.sanity import (
    SanityResult,
    cascading_randomization,
    random_logit,
    smooth_mprt,
    summary,
)
from xai_keras.evaluate.shortcut import shortcut_hits, shortcut_rate

if TYPE_CHECKING:
    from xai_keras.evaluate.scoring import ModelEvaluation, evaluate_model

__all__ = [
    "Curves",
    "Metric",
    "ModelEvaluation",
    "PerturbationCurves",
    "RoadCurves",
    "SanityResult",
    "average_drop_increase",
    "avg_sensitivity",
    "cascading_randomization",
    "complexity",
    "completeness",
    "deletion",
    "effective_complexity",
    "energy_pointing",
    "evaluate_model",
    "faithfulness_correlation",
    "faithfulness_estimate",
    "get_metric",
    "infidelity",
    "input_invariance",
    "insertion",
    "irof",
    "local_lipschitz",
    "localisation_auc",
    "max_sensitivity",
    "metrics",
    "monotonicity",
    "monotonicity_correlation",
    "noisy_linear_impute",
    "pixel_flipping",
    "pointing_game",
    "pointing_offcentre",
    "random_logit",
    "region_perturbation",
    "register_metric",
    "relative_input_stability",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "road",
    "shortcut_hits",
    "shortcut_rate",
    "smooth_mprt",
    "sparseness",
    "sufficiency",
    "summary",
    "top_k_intersection",
]


def __getattr__(name: str):
    """`evaluate_model` and `ModelEvaluation` (with the benchmark's scoring) are imported on
    first use."""
    if name in ("evaluate_model", "ModelEvaluation"):
        from xai_keras.evaluate import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
