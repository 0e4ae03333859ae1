"""The PyTorch side of `compare_cams.py`: pytorch-grad-cam's maps on twins of its Keras models.

Run by `compare_cams.py` with the interpreter of a venv holding torch and grad-cam (never in a
process that has imported TensorFlow):

    python _cams_torch_oracle.py keras_side.npz torch_side.npz

Reads the layer list, the Keras weights (transposed here to NCHW layouts), the images and
the runs to compute, and writes each run's raw maps ("<run>/theirs") and each twin's logits.
pytorch-grad-cam's `scale_cam_image` (min-max scaling and resizing) is replaced by the
identity, so its maps are the ReLU'd CAM at the layer's resolution, as xai_keras' `raw`.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytorch_grad_cam.base_cam as base_cam
import torch
from pytorch_grad_cam import KPCA_CAM, FinerCAM, HiResCAM, ShapleyCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget
from torch import nn

base_cam.scale_cam_image = lambda cam, target_size=None: np.float32(cam)


class FlattenNHWC(nn.Module):
    """Keras' Flatten order: channels last."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


def twin(arch: list, weights: dict, prefix: str) -> nn.Sequential:
    layers, channels = [], 3
    for kind, width, name in arch:

        def w(i, name=name):
            return torch.from_numpy(weights[f"{prefix}/w/{name}/{i}"])

        if kind == "conv":
            layer = nn.Conv2d(channels, width, 3, padding=1)
            layer.weight.data = w(0).permute(3, 2, 0, 1).contiguous()
            layer.bias.data = w(1)
            channels = width
        elif kind == "bn":
            layer = nn.BatchNorm2d(channels, eps=1e-3)
            layer.weight.data, layer.bias.data = w(0), w(1)
            layer.running_mean.data, layer.running_var.data = w(2), w(3)
        elif kind == "relu":
            layer = nn.ReLU()
        elif kind == "pool":
            layer = nn.MaxPool2d(2)
        elif kind == "gap":
            layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        elif kind == "flatten":
            layer = FlattenNHWC()
        elif kind == "dense":
            kernel = w(0)
            layer = nn.Linear(kernel.shape[0], kernel.shape[1])
            layer.weight.data = kernel.T.contiguous()
            layer.bias.data = w(1)
        layers.append((name, layer))
    model = nn.Sequential()
    for name, layer in layers:
        model.add_module(name, layer)
    return model.eval()  # logits: the Keras side explains the logits under its softmax


def _once(cam, *args, **kwargs) -> np.ndarray:
    """One call of `cam`, then its hooks removed. Not `with cam:`: its exit detaches the kept
    gradients in place, which fails for ShapleyCAM's (views kept in the graph)."""
    hooks = getattr(cam, "base_cam", cam).activations_and_grads
    try:
        return cam(*args, **kwargs)
    finally:
        hooks.activations, hooks.gradients = [], []
        for handle in hooks.handles:
            handle.remove()
        hooks.handles = []


def oracle_maps(model, layer, images, targets, oracle) -> np.ndarray:
    target_layers = [getattr(model, layer)]
    kind = oracle["cam"]
    if kind == "HiResCAM":
        cam = HiResCAM(model, target_layers)
        return _once(cam, images, [ClassifierOutputTarget(int(t)) for t in targets])
    if kind == "ShapleyCAM":
        make = ClassifierOutputReST if oracle["target"] == "rest" else ClassifierOutputTarget
        return _once(ShapleyCAM(model, target_layers), images, [make(int(t)) for t in targets])
    if kind == "KPCA_CAM":
        cam = KPCA_CAM(model, target_layers, kernel=oracle["kernel"], gamma=oracle.get("gamma"))
        return _once(cam, images, None)
    if kind == "FinerCAM":
        # Its similar classes are found for one target index per call: one image at a time.
        comparisons = list(range(1, oracle["comparisons"] + 1))
        maps = [
            _once(
                FinerCAM(model, target_layers),
                images[i : i + 1],
                None,
                alpha=oracle["alpha"],
                comparison_categories=comparisons,
                target_idx=int(t),
            )[0]
            for i, t in enumerate(targets)
        ]
        return np.stack(maps)
    raise ValueError(kind)


def main(source: str, out: str) -> None:
    data = dict(np.load(source))
    spec = json.loads(str(data["spec"]))
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous()
    result = {}
    models = {}
    for name, arch in spec["archs"].items():
        models[name] = twin(arch, data, name)
        with torch.no_grad():
            result[f"{name}/torch_logits"] = models[name](images).numpy()
    for run in spec["runs"]:
        targets = data[f"{run['key']}/targets"]
        maps = oracle_maps(models[run["arch"]], run["layer"], images, targets, run["oracle"])
        result[f"{run['key']}/theirs"] = np.asarray(maps, np.float32)
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
