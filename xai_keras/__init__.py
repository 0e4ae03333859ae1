"""xai-keras: explain Keras image classifiers.

Example:
    >>> from xai_keras import explain
    >>> exp = explain(model, image)          # Grad-CAM of the top class
    >>> exp.save("gradcam.png")
    >>> deletion(model, image, exp.maps).auc      # lower: the map found what matters
    >>> print(evaluate_model(model, (images, labels)).summary())   # does it beat random?

The names below are imported on first use, so `import xai_keras.cli` (the `xai-keras`
command's `--help`) does not load TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that defines it
_LAZY = {
    "METHODS": "xai_keras.explainers",
    "SAG": "xai_keras.explainers",
    "Session": "xai_keras.explainers",
    "Explanation": "xai_keras.explainers",
    "explain": "xai_keras.explainers",
    "find_layer": "xai_keras.explainers",
    "methods": "xai_keras.explainers",
    "sag": "xai_keras.explainers",
    "explain_dataset": "xai_keras.scale",
    "deletion": "xai_keras.evaluate",
    "insertion": "xai_keras.evaluate",
    "evaluate_model": "xai_keras.evaluate",
    "ModelEvaluation": "xai_keras.evaluate",
}

__all__ = [
    "METHODS",
    "SAG",
    "Explanation",
    "ModelEvaluation",
    "Session",
    "deletion",
    "evaluate_model",
    "explain",
    "explain_dataset",
    "find_layer",
    "insertion",
    "methods",
    "sag",
    "__version__",
]

if TYPE_CHECKING:
    from xai_keras.evaluate import ModelEvaluation, deletion, evaluate_model, insertion
    from xai_keras.explainers import (
        METHODS,
        SAG,
        Explanation,
        Session,
        explain,
        find_layer,
        methods,
        sag,
    )
    from xai_keras.scale import explain_dataset


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xai_keras' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
