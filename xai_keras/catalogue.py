"""What each explanation method is, in words: family, what it needs, a one-line summary and
what it is best for.

This module imports nothing heavy, so `xai-keras methods` lists the methods without loading
TensorFlow. The method classes (`xai_keras.explain`) stay the registry: `register` looks each
one up here and refuses a class whose family, layer use or baseline option disagree with its
entry, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOGUE", "NEEDS", "MethodInfo", "canonical_name", "check_entry"]

# What a method may need: "layer" (explains an intermediate layer; picked automatically by
# default), "gradients" (a differentiable model), "baseline" (a reference image; a default is
# chosen), "attention" (keras MultiHeadAttention layers, i.e. a transformer).
NEEDS = ("layer", "gradients", "baseline", "attention")


@dataclass(frozen=True)
class MethodInfo:
    """One method's entry: `needs` are names from `NEEDS`."""

    family: str
    needs: tuple[str, ...]
    summary: str
    best_for: str


def _info(family: str, needs: str, summary: str, best_for: str) -> MethodInfo:
    return MethodInfo(family, tuple(needs.split()), summary, best_for)


# In the order `methods()` lists them (the registry's order).
CATALOGUE: dict[str, MethodInfo] = {
    "gradcam": _info(
        "cam", "layer gradients", "channels weighted by their mean gradient",
        "a first look at any CNN",
    ),
    "cam": _info(
        "cam", "layer", "channels weighted by the dense weights of a GAP head",
        "GAP + dense heads, no gradients",
    ),
    "gradcam++": _info(
        "cam", "layer gradients", "positive gradients with higher-order weights",
        "several objects of a class",
    ),
    "xgradcam": _info(
        "cam", "layer gradients", "activation-normalised gradient weights",
        "Grad-CAM with an axiomatic basis",
    ),
    "layercam": _info(
        "cam", "layer gradients", "activation times positive gradient per position",
        "fine maps from early layers",
    ),
    "eigencam": _info(
        "cam", "layer", "first principal component of the activations",
        "class-agnostic saliency",
    ),
    "scorecam": _info(
        "cam", "layer", "channels weighted by the score of the image masked by each",
        "gradient-free CAM, noisy gradients",
    ),
    "hirescam": _info(
        "cam", "layer gradients", "activation times its own gradient",
        "faithful maps on any head",
    ),
    "finercam": _info(
        "cam", "layer gradients", "Grad-CAM of the lead over similar classes",
        "telling similar classes apart",
    ),
    "shapleycam": _info(
        "cam", "layer gradients", "gradient and Hessian terms of a Shapley utility",
        "CAM with second-order detail",
    ),
    "kpcacam": _info(
        "cam", "layer", "first kernel principal component of the activations",
        "class-agnostic, non-linear",
    ),
    "saliency": _info(
        "gradient", "gradients", "absolute input gradient",
        "a fast pixel-level check",
    ),
    "guided_backprop": _info(
        "gradient", "gradients", "input gradient through guided ReLUs",
        "sharp edges (not class-specific)",
    ),
    "guided_gradcam": _info(
        "gradient", "layer gradients", "guided backprop times Grad-CAM",
        "pixel detail inside the CAM region",
    ),
    "smoothgrad": _info(
        "gradient", "gradients", "gradients averaged over noisy copies",
        "less noisy pixel maps",
    ),
    "integrated_gradients": _info(
        "gradient", "gradients baseline", "path integral of gradients from a baseline",
        "signed maps that sum to the score",
    ),
    "occlusion": _info(
        "perturbation", "baseline", "score drop when a sliding patch is hidden",
        "any model, as a black box",
    ),
    "rise": _info(
        "perturbation", "baseline", "class probability over random smooth masks",
        "black boxes; faithful region maps",
    ),
    "lime": _info(
        "perturbation", "baseline", "ridge fit of the score on kept superpixels",
        "black boxes; superpixel answers",
    ),
    "kernelshap": _info(
        "perturbation", "baseline", "Shapley values of superpixels",
        "black boxes; additive superpixels",
    ),
    "random": _info(
        "baseline", "", "random smooth map",
        "the floor a method must beat",
    ),
    "centre": _info(
        "baseline", "", "fixed Gaussian at the image centre",
        "a centre-bias floor",
    ),
    "lrp": _info(
        "gradient", "gradients", "logit redistributed layer by layer by rules",
        "signed pixel maps, conservative",
    ),
    "deeplift": _info(
        "gradient", "gradients baseline", "rescale multipliers times (x - baseline)",
        "signed maps that sum to the score",
    ),
    "attention_rollout": _info(
        "attention", "attention", "attention multiplied through the layers",
        "a quick look at a ViT",
    ),
    "chefer": _info(
        "attention", "attention gradients", "gradient-weighted attention, rolled out",
        "class-specific ViT maps",
    ),
    "attnlrp": _info(
        "attention", "attention gradients", "LRP through attention and softmax",
        "faithful ViT maps",
    ),
    "transformer_attribution": _info(
        "attention", "attention gradients", "LRP relevance times attention gradients",
        "class-specific ViT maps (LRP)",
    ),
}


# Other spellings people type for a method.
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


def canonical_name(name: str) -> str:
    """The registry name `name` stands for (case, '-', spaces and common aliases forgiven);
    an unknown name comes back normalised, for the caller to refuse."""
    key = name.lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key, key)


def check_entry(name: str, family: str, uses_layer: bool, options: list[str]) -> None:
    """Raise if a registered method's class disagrees with its catalogue entry (a method
    added without an entry, or a changed family, layer use or baseline option)."""
    info = CATALOGUE.get(name)
    if info is None:
        raise RuntimeError(f"Method {name!r} has no entry in xai_keras.catalogue.CATALOGUE.")
    wrong = [
        what
        for what, ok in (
            ("family", info.family == family),
            ("layer", ("layer" in info.needs) == uses_layer),
            ("baseline", ("baseline" in info.needs) == ("baseline" in options)),
        )
        if not ok
    ]
    if wrong:
        raise RuntimeError(
            f"Method {name!r} disagrees with its catalogue entry on: {', '.join(wrong)}."
        )
