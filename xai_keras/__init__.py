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
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that defines it
_LAZY = {
    "METHODS": "xai_keras.explain",
    "SAG": "xai_keras.explain",
    "Session": "xai_keras.explain",
    "Explanation": "xai_keras.explain",
    "explain": "xai_keras.explain",
    "find_layer": "xai_keras.explain",
    "methods": "xai_keras.explain",
    "sag": "xai_keras.explain",
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
    from xai_keras.explain import (
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


class _Package(types.ModuleType):
    """`xai_keras.explain` is the function, as it was when this file imported it eagerly:
    importing the subpackage `xai_keras.explain` would otherwise bind the name to the module."""

    def __setattr__(self, name: str, value) -> None:
        if name == "explain" and isinstance(value, types.ModuleType):
            return  # the subpackage stays in sys.modules; the name resolves to the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
