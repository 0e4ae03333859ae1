"""Explanation methods: the CAM family, the gradient family, the perturbation methods
(occlusion, RISE, LIME, KernelSHAP) and the transformer methods (attention rollout, Chefer,
AttnLRP), behind `explain`, all running on one engine (`Session`)."""

from xai_keras.explainers import (  # noqa: F401  (register the methods)
    cam,
    gradients,
    occlusion,
    perturbation,
    reference,
    relevance,
)
from xai_keras.explainers.api import check_images, explain
from xai_keras.explainers.base import METHODS, Method, default_method, get_method, methods
from xai_keras.explainers.explanation import Explanation, contact_sheet
from xai_keras.explainers.layers import conv_candidates, find_layer
from xai_keras.explainers.sag import SAG, sag
from xai_keras.explainers.session import Session

__all__ = [
    "METHODS",
    "SAG",
    "Explanation",
    "Session",
    "Method",
    "check_images",
    "contact_sheet",
    "conv_candidates",
    "explain",
    "find_layer",
    "get_method",
    "default_method",
    "methods",
    "sag",
]

# Registered after the other families, so `methods()` lists the transformer methods last.
from xai_keras.explainers import attention  # noqa: E402, F401
