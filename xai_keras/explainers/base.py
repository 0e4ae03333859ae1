"""The method registry and the base every explanation method shares.

A method is a class registered under a name. It is built for a `Session` (the model, what is
explained, value range and batch size) and only says how one batch becomes maps:
`attribute(x, targets)`; the session's padded loop feeds it batches. Options are keyword
arguments of `__init__`; unknown ones are rejected with the list of allowed names. Facts about a
method that front ends need are class attributes (`family`, `uses_layer`, `signed`, `eager`,
`shares_pass`, ...), not lists kept elsewhere.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import keras
import tensorflow as tf

from xai_keras.catalogue import canonical_name, check_entry
from xai_keras.errors import InputError
from xai_keras.explainers.layers import find_layer, is_graph_model, is_token_model, layer_shape
from xai_keras.explainers.session import Session, runner_for

__all__ = [
    "METHODS",
    "BatchResult",
    "Method",
    "MethodChoice",
    "register",
    "methods",
    "get_method",
    "default_method",
    "runner_for",
]

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    """Class decorator adding a method to `METHODS` under `name` (its entry in
    `xai_keras.catalogue` must agree with the class)."""

    def wrap(cls: type[Method]) -> type[Method]:
        check_entry(name, cls.family, cls.uses_layer, cls.options())
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def methods(family: str | None = None, model: keras.Model | None = None) -> list[str]:
    """Names of the registered methods, optionally only one family ("cam", "gradient",
    "perturbation", "attention", or "baseline" for the reference maps `random` and
    `centre`), and optionally only those that can explain `model` (the transformer methods
    need keras MultiHeadAttention layers)."""
    return [
        n
        for n, cls in METHODS.items()
        if (family is None or cls.family == family)
        and (model is None or not cls.unsupported(model))
    ]




def get_method(name: str) -> type[Method]:
    """The method class registered under `name` (case, '-' and common aliases forgiven)."""
    if not isinstance(name, str):
        raise InputError(
            f"`method` must be a method name (a str) or a list of names. Received: "
            f"method={name!r}. Available methods: {', '.join(METHODS)}."
        )
    key = canonical_name(name)
    if key not in METHODS:
        raise InputError(f"Unknown method {name!r}. Available methods: {', '.join(METHODS)}.")
    return METHODS[key]


@dataclass(frozen=True)
class MethodChoice:
    """The method `explain` runs when none is named, and why."""

    name: str
    reason: str


# Where Grad-CAM is not the default: vision transformers whose attention layers the attention
# methods read get Chefer et al.'s gradient-weighted attention (2021b).
TRANSFORMER_DEFAULT = "chefer"


def default_method(model: keras.Model, layer: Any = None) -> MethodChoice:
    """Grad-CAM, except on a vision transformer whose attention the attention methods read
    (and no `layer` is named: a layer asks for a CAM).

    Grad-CAM on a ViT's token stream is as good as a coin: on KerasHub ViTs trained here
    (digits, 97% accuracy, 200 held-out images), the same recipe trained twice gave a default
    Grad-CAM that beat a random map (deletion p = 2e-6) and one that did not (p = 0.83), at
    every block tried (and on a DeiT, p = 0.49), Layer-CAM likewise; Chefer et al.'s method
    beat random on both (p <= 2.4e-7), as their paper reports against Grad-CAM
    (docs/kerashub.md has the table). Other token models (attention that is not a Keras
    MultiHeadAttention: Swin, MiT, DINOv3) keep Grad-CAM.
    """
    if layer is not None:
        return MethodChoice("gradcam", "default where a layer is named: Grad-CAM.")
    if is_token_model(model):
        transformer = METHODS.get(TRANSFORMER_DEFAULT)
        if transformer is not None and not transformer.unsupported(model):
            return MethodChoice(
                TRANSFORMER_DEFAULT,
                f"default for a vision transformer: {TRANSFORMER_DEFAULT} (gradient-weighted "
                "attention), which beat random on trained ViTs where Grad-CAM did not "
                "reliably; name method='gradcam' for Grad-CAM.",
            )
    return MethodChoice("gradcam", "default: Grad-CAM.")


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
        compiled_step: one batch's work is a few compiled kernels (no Python loop over images
            or masks), so a front end may compile a whole step around `attribute`.
        reference: the paper.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    # Why a map can come out all zero, for the warning `explain` gives.
    zero_map_cause: ClassVar[str] = "the gradients or scores were constant or non-finite"
    # For CAM variants: how the method relates to Grad-CAM where the gradient is the same at
    # every position of the layer (e.g. "equals gradcam"); "" when it does not coincide.
    same_when_pooled: ClassVar[str] = ""
    # Completeness, checked on every call (one extra forward pass of the baselines): the
    # input attributions must sum to f(x) - f(baseline) of the explained logit within this
    # relative tolerance, else `explain` warns with the figures. 0 for methods without it.
    completeness_tolerance: ClassVar[float] = 0.0
    uses_layer: ClassVar[bool] = False
    signed: ClassVar[bool] = False
    compiled_step: ClassVar[bool] = False
    reference: ClassVar[str] = ""

    def __init__(self, session: Session, layer: Any = None):
        self.session, self.model = session, session.model
        self.layer_path, self.layer, self.layer_reason = None, None, ""
        if self.uses_layer and layer is None and is_graph_model(self.model):
            choice = session.default_layer()
            self.layer_path, self.layer = choice.path, choice.layer
            self.layer_reason = choice.reason
        elif self.uses_layer:
            any_tokens = session.head.reshape is not None
            self.layer_path, self.layer = find_layer(self.model, layer, any_tokens)
            self.layer_reason = f"given: layer={self.layer_path!r}."
        self.runner = session.runner_for(self.layer)

    def completeness_baseline(self, x: tf.Tensor) -> tf.Tensor:
        """The baseline images whose score the attributions' sum is measured from (methods
        with a completeness identity override it)."""
        raise NotImplementedError

    def expected_total(self, x: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """(B,) f(x) - f(baseline) of the explained logits: what complete attributions sum
        to."""
        fx = self.runner.forward_fn(x)
        fb = self.runner.forward_fn(self.completeness_baseline(x))
        return tf.gather(fx - fb, targets, batch_dims=1)

    def zero_map_reason(self) -> str:
        """Why a map came out all zero: the method's usual cause or, at a token layer whose
        patch tokens the score does not depend on (a head reading only the class token after
        it), that."""
        tokens = self.layer is not None and len(layer_shape(self.model, self.layer) or ()) == 3
        if (
            tokens
            and is_graph_model(self.model)
            and not self.session.patch_gradients([self.layer])[0]
        ):
            return (
                f"the explained score does not depend on the patch tokens of {self.layer_path!r}:"
                " the head reads only the prefix token(s) after it, so their gradient is zero; "
                f"explain an earlier layer, e.g. the default {self.session.default_layer().path!r}"
            )
        return self.zero_map_cause

    @classmethod
    def unsupported(cls, model: keras.Model) -> str:
        """Why this method cannot explain `model` at all, or "" (front ends that run every
        method, such as the benchmark's default list, leave such methods out)."""
        return ""

    @classmethod
    def options(cls) -> list[str]:
        """The keyword options this method accepts beyond session and layer."""
        params = inspect.signature(cls.__init__).parameters
        return [p for p in params if p not in ("self", "session", "layer")]

    @classmethod
    def create(cls, model: keras.Model | Session, layer: Any = None, **options: Any) -> Method:
        """Build the method for a model or a `Session` (a model gets a default session),
        rejecting options it does not know."""
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
        return cls(Session.of(model), layer, **options)

    def attribute(self, x: tf.Tensor, targets: tf.Tensor) -> BatchResult:
        """Explain one batch. `targets` < 0 means "the top class"."""
        raise NotImplementedError
