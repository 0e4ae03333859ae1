"""See what units learn: activation maximisation, feature maps, filters, top examples.

>>> from xai_keras.features import maximize, visualize_units
>>> maximize(model, "block3_relu1", "0-15").save("units.png")
>>> visualize_units(model, "block2_relu1", "0-7", "out/", dataset=splits.test)
"""

from xai_keras.features.maps import FeatureMaps, Filters, feature_maps, filters
from xai_keras.features.maximize import Maximized, Settings, maximize, unit_scores
from xai_keras.features.param import colour_matrix
from xai_keras.features.plot import log_features
from xai_keras.features.report import units_figure, visualize_units
from xai_keras.features.top import (
    TopExamples,
    TopK,
    top_examples,
    top_examples_figure,
    top_examples_many,
)
from xai_keras.features.units import parse_units

__all__ = [
    "FeatureMaps",
    "Filters",
    "Maximized",
    "Settings",
    "TopExamples",
    "TopK",
    "colour_matrix",
    "feature_maps",
    "filters",
    "log_features",
    "maximize",
    "parse_units",
    "top_examples",
    "top_examples_figure",
    "top_examples_many",
    "unit_scores",
    "units_figure",
    "visualize_units",
]
