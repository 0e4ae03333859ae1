"""Metrics for explanations, usable on their own with any model and any maps (N, H, W).

- faithfulness: `deletion`, `insertion` (curves with `.auc`), `average_drop_increase`;
- localisation: `pointing_game`, `energy_pointing` against object masks;
- sanity: `cascading_randomization` (model-parameter randomisation) and its `summary`;
- shortcut: `shortcut_hits`, `shortcut_rate` against masks of a known spurious cue;
- ROAD: `road` (remove and debias: noisy linear imputation, most/least relevant first).

Each metric is registered where it is defined (`registry.register_metric`): `metrics()` lists
them, `get_metric(name)` says what one needs and which way is better; the benchmark,
`explain_dataset` and the CLI read the registry. A new metric is one module imported below
(see `xai_keras.evaluate.registry`).

Each returns per-image values; aggregate (mean, median, ...) as you need. `evaluate_model`
runs them all at once, as the benchmark does, on your own model and data (a `tf.data.Dataset`
or arrays) and returns their means.
"""

from typing import TYPE_CHECKING

from xai_keras.evaluate.faithfulness import Curves, average_drop_increase, deletion, insertion
from xai_keras.evaluate.localisation import energy_pointing, pointing_game, pointing_offcentre
from xai_keras.evaluate.registry import Metric, get_metric, metrics, register_metric
from xai_keras.evaluate.road import RoadCurves, noisy_linear_impute, road
from xai_keras.evaluate.sanity import SanityResult, cascading_randomization, summary
from xai_keras.evaluate.shortcut import shortcut_hits, shortcut_rate

if TYPE_CHECKING:
    from xai_keras.evaluate.scoring import ModelEvaluation, evaluate_model

__all__ = [
    "Curves",
    "Metric",
    "ModelEvaluation",
    "RoadCurves",
    "SanityResult",
    "average_drop_increase",
    "cascading_randomization",
    "deletion",
    "energy_pointing",
    "evaluate_model",
    "get_metric",
    "insertion",
    "metrics",
    "noisy_linear_impute",
    "pointing_game",
    "pointing_offcentre",
    "register_metric",
    "road",
    "shortcut_hits",
    "shortcut_rate",
    "summary",
]


def __getattr__(name: str):
    """`evaluate_model` and `ModelEvaluation` (with the benchmark's scoring) are imported on
    first use."""
    if name in ("evaluate_model", "ModelEvaluation"):
        from xai_keras.evaluate import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
