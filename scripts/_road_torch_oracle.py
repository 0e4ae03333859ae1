"""The PyTorch side of `compare_road.py`: pytorch-grad-cam's ROAD on the twin of its Keras model.

Run by `compare_road.py` with the interpreter of a venv holding torch and grad-cam (never in a
process that has imported TensorFlow):

    python _road_torch_oracle.py keras_side.npz torch_side.npz

For every map kind it computes, on the twin (built by `_cams_torch_oracle.twin`):

- "<kind>/impute": `NoisyLinearImputer(noise=0)` on *our* removal masks (N, P, order), so the
  imputers are compared on identical inputs;
- "<kind>/same_masks/<order>": the softmax target probability of those imputed images;
- "<kind>/masks/<order>": the removal masks pytorch-grad-cam's own `RemoveMostRelevantFirst`
  / `RemoveLeastRelevantFirst` build at its percentile q = 100 - p;
- "<kind>/theirs/<order>": its own pipeline end to end without noise (`PerturbationConfidence
  Metric` with `return_diff=False`), and "<kind>/theirs_noisy/<order>" with the default
  `ROADMostRelevantFirst` / `ROADLeastRelevantFirst` (noise 0.01, torch's generator).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from _cams_torch_oracle import twin
from pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADLeastRelevantFirst,
    ROADMostRelevantFirst,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

REMOVERS = {"morf": RemoveMostRelevantFirst, "lerf": RemoveLeastRelevantFirst}
ROAD = {"morf": ROADMostRelevantFirst, "lerf": ROADLeastRelevantFirst}


def softmax_of(model, images: torch.Tensor, targets) -> np.ndarray:
    with torch.no_grad():
        probs = torch.softmax(model(images), dim=1).numpy()
    return probs[np.arange(len(targets)), targets]


def main(source: str, out: str) -> None:
    data = dict(np.load(source))
    spec = json.loads(str(data["spec"]))
    model = twin(spec["arch"], data, "model")
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous()
    targets = data["targets"]
    wanted = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    result = {"torch_logits": model(images).detach().numpy()}
    torch.manual_seed(0)
    for kind in spec["kinds"]:
        maps = data[f"{kind}/maps"].astype(np.float32)
        for order in ("morf", "lerf"):
            removed = data[f"{kind}/removed/{order}"]  # (N, P, H, W) bool, ours
            filled = np.empty(removed.shape[:2] + images.shape[1:], np.float32)
            for i in range(len(images)):
                for j in range(removed.shape[1]):
                    keep = torch.from_numpy((~removed[i, j]).astype(np.float32))
                    filled[i, j] = NoisyLinearImputer(noise=0.0)(images[i], keep).numpy()
            result[f"{kind}/impute/{order}"] = filled.transpose(0, 1, 3, 4, 2)  # NHWC
            flat = torch.from_numpy(filled.reshape((-1,) + filled.shape[2:]))
            rows = np.repeat(targets, removed.shape[1])
            result[f"{kind}/same_masks/{order}"] = softmax_of(model, flat, rows).reshape(
                removed.shape[:2]
            )
            masks, theirs, noisy = [], [], []
            for p in spec["percentiles"]:
                q = 100 - p  # their percentile: the share of pixels kept
                remover = REMOVERS[order](q, NoisyLinearImputer(noise=0.0))
                record = _Recorder()
                for i in range(len(maps)):
                    REMOVERS[order](q, record)(images[i], torch.from_numpy(maps[i]))
                masks.append(record.removed)
                metric = PerturbationConfidenceMetric(remover)
                theirs.append(metric(images, maps, wanted, model, return_diff=False))
                noisy_metric = ROAD[order](q)
                noisy.append(noisy_metric(images, maps, wanted, model, return_diff=False))
            result[f"{kind}/masks/{order}"] = np.array(masks).transpose(1, 0, 2, 3)
            result[f"{kind}/theirs/{order}"] = np.array(theirs, np.float64).T
            result[f"{kind}/theirs_noisy/{order}"] = np.array(noisy, np.float64).T
    np.savez(out, **result)


class _Recorder:
    """An imputer that only records the keep mask it is handed (1 = kept) as removed pixels."""

    def __init__(self):
        self.removed = []

    def __call__(self, image, keep):
        self.removed.append(keep.numpy() < 0.5)
        return image


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
