"""Information-theoretic analysis of hidden layers (Xu et al., "Deeper Interpretability of Deep
Networks", 2018): what each layer's units carry about the factors that generated the image,
how invariant they are, and which factor moves the prediction.

    >>> from xai_keras.analysis import analyze, mutual_information
    >>> report = analyze(model, "reports/analysis")   # a shapes classifier
    >>> print("\\n".join(report.findings))
"""

from xai_keras.analysis.factors import Factor, shapes_factors
from xai_keras.analysis.gcmi import copnorm, mutual_information, unit_information
from xai_keras.analysis.layers import (
    LayerAnalysis,
    analyze_layers,
    collect_activations,
    default_layers,
)
from xai_keras.analysis.report import AnalysisReport, analyze
from xai_keras.analysis.sensitivity import Sensitivity, factor_sensitivity

__all__ = [
    "AnalysisReport",
    "Factor",
    "LayerAnalysis",
    "Sensitivity",
    "analyze",
    "analyze_layers",
    "collect_activations",
    "copnorm",
    "default_layers",
    "factor_sensitivity",
    "mutual_information",
    "shapes_factors",
    "unit_information",
]
