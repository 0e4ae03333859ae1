"""The torch side of `compare_relevance.py` (runs in a venv with torch, zennit and captum;
never imported with TensorFlow): rebuild the twin from the .npz, attribute with zennit
(LRP rules) and Captum (DeepLift), save the attributions in NHWC.

    python _relevance_torch_oracle.py IN.npz OUT.npz
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from captum.attr import DeepLift
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonGammaBox,
    LayerMapComposite,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZPlus
from zennit.types import Convolution


def twin(w: dict, pool: str) -> nn.Sequential:
    """nn.Sequential with the Keras model's weights (NHWC flatten order kept by permuting)."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8, eps=1e-3),
        nn.ReLU(),
        nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 5),
    ).eval()
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        for idx, name in ((0, "c1"), (4, "c2")):
            model[idx].weight.copy_(t(w[f"{name}.kernel"].transpose(3, 2, 0, 1)))
            model[idx].bias.copy_(t(w[f"{name}.bias"]))
        bn = model[1]
        bn.weight.copy_(t(w["bn1.gamma"]))
        bn.bias.copy_(t(w["bn1.beta"]))
        bn.running_mean.copy_(t(w["bn1.moving_mean"]))
        bn.running_var.copy_(t(w["bn1.moving_variance"]))
        k = w["d1.kernel"].reshape(4, 4, 16, 32).transpose(2, 0, 1, 3).reshape(256, 32)
        model[8].weight.copy_(t(k.T))
        model[8].bias.copy_(t(w["d1.bias"]))
        model[10].weight.copy_(t(w["d2.kernel"].T))
        model[10].bias.copy_(t(w["d2.bias"]))
    return model


def composites(x: torch.Tensor) -> dict:
    base = layer_map_base()
    merge = [SequentialMergeBatchNorm()]
    linear = (Convolution, torch.nn.Linear)
    everywhere = {
        "0": Epsilon(epsilon=1e-12),
        "epsilon": Epsilon(epsilon=1e-6),
        "gamma": Gamma(gamma=0.25),
        "zplus": ZPlus(),
        "alpha2beta1": AlphaBeta(alpha=2.0, beta=1.0),
    }
    out = {
        name: LayerMapComposite(base + [(linear, rule)], canonizers=merge)
        for name, rule in everywhere.items()
    }
    out["composite"] = EpsilonGammaBox(
        low=torch.zeros_like(x[:1]), high=torch.ones_like(x[:1]), canonizers=merge
    )
    body = base + [(Convolution, Gamma(gamma=0.25)), (torch.nn.Linear, Epsilon(epsilon=1e-6))]
    out["flat"] = SpecialFirstLayerMapComposite(body, [(Convolution, Flat())], canonizers=merge)
    # zennit's WSquare squares the bias too; Montavon et al.'s w^2 rule (and ours) has none
    wsq = WSquare(zero_params=["bias"])
    out["wsquare"] = SpecialFirstLayerMapComposite(body, [(Convolution, wsq)], canonizers=merge)
    return out


def main(src: str, dst: str) -> None:
    data = dict(np.load(src))
    pool = str(data["pool"])
    w = {k[2:]: v for k, v in data.items() if k.startswith("w.")}
    model = twin(w, pool)
    x = torch.tensor(data["x"].transpose(0, 3, 1, 2))
    targets = torch.tensor(data["targets"], dtype=torch.long)
    out = {}
    for name, composite in composites(x).items():
        with Gradient(model=model, composite=composite) as attributor:
            logits = model(x)
            # start from R = the target logit (ours), not zennit's one-hot convention of 1
            start = torch.zeros_like(logits)
            start[torch.arange(len(x)), targets] = logits[torch.arange(len(x)), targets].detach()
            _, relevance = attributor(x, start)
        out[f"lrp.{name}"] = relevance.detach().numpy().transpose(0, 2, 3, 1)
    for name in ("black", "half"):
        base = torch.tensor(data[f"baseline.{name}"].transpose(0, 3, 1, 2))
        attr = DeepLift(model).attribute(x, baselines=base, target=targets)
        out[f"deeplift.{name}"] = attr.detach().numpy().transpose(0, 2, 3, 1)
    np.savez(dst, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
