"""Information-theoretic analysis of hidden layers (Xu et al., "Deeper Interpretability of Deep
Networks", 2018): what each layer's units carry about the factors that generated the image."""

from xai_keras.analysis.gcmi import copnorm, mutual_information, unit_information

__all__ = ["copnorm", "mutual_information", "unit_information"]
