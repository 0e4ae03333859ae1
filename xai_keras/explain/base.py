"""The method registry and the base every explanation method shares.

A method is a class registered under a name. `explain()` validates inputs, splits them into
fixed-size batches and calls `method.attribute(x, targets)` on each; a method only says how
one batch is turned into maps. Options are keyword arguments of `__init__`; unknown ones are
rejected with the list of allowed names.
"""

from __future__ import annotations

import inspect
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

import keras
import tensorflow as tf

from xai_keras.errors import InputError
from xai_keras.explain.graph import ModelRunner
from xai_keras.explain.heads import Head
from xai_keras.explain.layers import find_layer
from xai_keras.explain.ranges import ValueRange

__all__ = ["METHODS", "BatchResult", "Method", "register", "methods", "get_method", "runner_for"]

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    """Class decorator adding a method to `METHODS` under `name`."""

    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def methods(family: str | None = None) -> list[str]:
    """Names of the registered methods, optionally only one family ("cam", "gradient",
    "perturbation", or "baseline" for the reference maps `random` and `centre`)."""
    return [n for n, cls in METHODS.items() if family is None or cls.family == family]


_ALIASES = {
    "grad_cam": "gradcam",
    "gradcam_pp": "gradcam++",
    "gradcampp": "gradcam++",
    "grad_cam++": "gradcam++",
    "ig": "integrated_gradients",
    "vanilla": "saliency",
    "hires_cam": "hirescam",
    "finer_cam": "finercam",
    "shapley_cam": "shapleycam",
    "kpca_cam": "kpcacam",
}


def get_method(name: str) -> type[Method]:
    """The method class registered under `name` (case, '-' and common aliases forgiven)."""
    if not isinstance(name, str):
        raise InputError(
            f"`method` must be a method name (a str) or a list of names. Received: "
            f"method={name!r}. Available methods: {', '.join(METHODS)}."
        )
    key = name.lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise InputError(f"Unknown method {name!r}. Available methods: {', '.join(METHODS)}.")
    return METHODS[key]


_RUNNERS_ATTR = "_xai_keras_runners"
# Runners whose head holds a user's function (`score=`, `reshape=`) are kept for at most this
# many heads per model (least recently used dropped): a fresh lambda per call cannot be told
# from a new function, and each would otherwise keep a runner and its traces forever. One
# `explain` call needs up to three runners per head (layer, input, guided).
MAX_FUNCTION_HEADS = 4
# The head methods are built for: set by `Method.create`, so method classes need not pass it on.
_HEAD: ContextVar[Head | None] = ContextVar("xai_keras_head", default=None)


def runner_for(
    model: keras.Model, layer: Any = None, guided: bool = False, head: Head | None = None
) -> ModelRunner:
    """The `ModelRunner` for (model, layer, guided, head), built once and kept on the model.

    Kept on the model itself (not in a global cache that the runner would keep alive), so
    the compiled kernels are traced once, reused by every later call, and freed with the model.
    Runners for heads with a user's function are kept for the `MAX_FUNCTION_HEADS` most
    recently used such heads only, so memory stays bounded when a new function comes each call.
    `head` defaults to the one the method being created explains (see `Method.create`).
    """
    head = head or _HEAD.get() or Head()
    per_model = model.__dict__.get(_RUNNERS_ATTR)
    if per_model is None:
        per_model = {}
        object.__setattr__(model, _RUNNERS_ATTR, per_model)  # bypass Keras' attribute tracking
    key = (id(layer), guided, head)
    runner = per_model.pop(key, None)  # re-inserted last: the dict's order is the LRU order
    if runner is None:
        runner = ModelRunner(model, layer, guided=guided, head=head)
    per_model[key] = runner
    if _has_function(head):
        recent = dict.fromkeys(k[2] for k in reversed(per_model) if _has_function(k[2]))
        for old in list(recent)[MAX_FUNCTION_HEADS:]:
            for k in [k for k in per_model if k[2] == old]:
                del per_model[k]
    return runner


def _has_function(head: Head) -> bool:
    return head.score is not None or head.reshape is not None


@dataclass
class BatchResult:
    """What a method returns for one batch.

    Attributes:
        raw: (B, h, w) maps before resizing/normalising (for CAMs, at the layer's resolution).
        logits: (B, classes) scores of the model (logits where a softmax was removed).
        targets: (B,) explained class indices.
        attributions: (B, H, W, C) per-channel input attributions (gradient family) or None.
    """

    raw: tf.Tensor
    logits: tf.Tensor
    targets: tf.Tensor
    attributions: tf.Tensor | None = None


class Method:
    """Base of all methods. Subclasses set the class attributes and implement `attribute`.

    Attributes:
        name: registry name (set by `register`).
        family: "cam", "gradient" or "perturbation".
        uses_layer: whether the method explains an intermediate layer (CAM family).
        signed: raw maps may be negative; the displayed map is their absolute value.
        reference: the paper.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    # Why a map can come out all zero, for the warning `explain` gives.
    zero_map_cause: ClassVar[str] = "the gradients or scores were constant or non-finite"
    # For CAM variants: how the method relates to Grad-CAM where the gradient is the same at
    # every position of the layer (e.g. "equals gradcam"); "" when it does not coincide.
    same_when_pooled: ClassVar[str] = ""
    uses_layer: ClassVar[bool] = False
    signed: ClassVar[bool] = False
    reference: ClassVar[str] = ""

    def __init__(self, model: keras.Model, layer: Any = None):
        self.model = model
        head = _HEAD.get()
        any_tokens = head is not None and head.reshape is not None
        self.layer_path, self.layer = (
            find_layer(model, layer, any_tokens) if self.uses_layer else (None, None)
        )
        self.runner = runner_for(model, self.layer)

    @classmethod
    def options(cls) -> list[str]:
        """The keyword options this method accepts beyond model and layer."""
        params = inspect.signature(cls.__init__).parameters
        return [p for p in params if p not in ("self", "model", "layer", "value_range")]

    @classmethod
    def takes_value_range(cls) -> bool:
        """Whether the method makes images (baselines) and so needs the model's value range."""
        return "value_range" in inspect.signature(cls.__init__).parameters

    @classmethod
    def create(
        cls,
        model: keras.Model,
        layer: Any = None,
        head: Head | None = None,
        value_range: ValueRange | None = None,
        **options: Any,
    ) -> Method:
        """Build the method for `head` (default: the top output) and the model's input
        `value_range`, rejecting options it does not know."""
        unknown = sorted(set(options) - set(cls.options()))
        if unknown:
            allowed = ", ".join(cls.options()) or "none"
            raise InputError(
                f"Method {cls.name!r} got unknown option(s) {', '.join(unknown)}. "
                f"Allowed options: {allowed}."
            )
        if layer is not None and not cls.uses_layer:
            raise InputError(
                f"Method {cls.name!r} explains the input, not a layer; do not pass `layer`. "
                f"Layer-based methods: {', '.join(methods('cam'))}."
            )
        token = _HEAD.set(head)
        try:
            if cls.takes_value_range():
                options["value_range"] = value_range
            return cls(model, layer, **options)
        finally:
            _HEAD.reset(token)

    def attribute(self, x: tf.Tensor, targets: tf.Tensor) -> BatchResult:
        """Explain one batch. `targets` < 0 means "the top class"."""
        raise NotImplementedError
