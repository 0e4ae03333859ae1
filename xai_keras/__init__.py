"""xai-keras: explain Keras image classifiers.

Example:
    >>> from xai_keras import explain
    >>> exp = explain(model, image)          # Grad-CAM of the top class
    >>> exp.save("gradcam.png")
"""

from xai_keras.explain import METHODS, SAG, Explanation, explain, find_layer, methods, sag
from xai_keras.scale import explain_dataset

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "SAG",
    "Explanation",
    "explain",
    "explain_dataset",
    "find_layer",
    "methods",
    "sag",
    "__version__",
]
