"""The PyTorch side of `compare_metrics.py`: Quantus' and Captum's values on a twin of its
Keras model, with its maps and random draws. Run with .torchvenv's interpreter (never in a
process that has imported TensorFlow):

    python _metrics_torch_oracle.py keras_side.npz torch_side.npz
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

if not hasattr(np, "trapz"):  # Quantus 0.6 calls np.trapz, gone from numpy 2.4
    np.trapz = np.trapezoid

import quantus  # noqa: E402
import quantus.helpers.utils as qutils  # noqa: E402
import torch  # noqa: E402
from captum.metrics import infidelity, sensitivity_max  # noqa: E402
from torch import nn  # noqa: E402

warnings.filterwarnings("ignore")


class FlattenNHWC(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


def twin(d) -> nn.Module:
    def conv(name, cin):
        k = torch.from_numpy(d[f"w/{name}/0"])
        layer = nn.Conv2d(cin, k.shape[-1], 3, padding=1)
        layer.weight.data = k.permute(3, 2, 0, 1).contiguous()
        layer.bias.data = torch.from_numpy(d[f"w/{name}/1"])
        return layer

    dense = nn.Linear(*d["w/d/0"].shape)
    dense.weight.data = torch.from_numpy(d["w/d/0"]).T.contiguous()
    dense.bias.data = torch.from_numpy(d["w/d/1"])
    return nn.Sequential(
        conv("c1", 1), nn.ReLU(), conv("c2", 6), nn.ReLU(), FlattenNHWC(), dense
    ).eval()  # fmt: skip  (logits: the Keras side strips its softmax)


def saliency(model, inputs, target):
    """xai_keras' saliency: max over channels of |d logit / d x|, divided by each map's peak."""
    with torch.enable_grad():  # Captum calls it under no_grad
        inputs = inputs.detach().clone().requires_grad_(True)
        out = model(inputs)
        picked = out.gather(1, torch.as_tensor(target).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(picked, inputs)
    m = grad.abs().amax(dim=1, keepdim=True)
    peak = m.flatten(1).amax(1).view(-1, 1, 1, 1)
    return m / torch.where(peak > 0, peak, torch.ones_like(peak))


def main(src: str, dst: str) -> None:
    d = dict(np.load(src))
    model = twin(d)
    x = np.moveaxis(d["x"], -1, 1).astype(np.float32)  # (N, 1, H, W)
    y = d["targets"].astype(int)
    n = len(x)
    out = {}
    s = d["masks"][:, None].astype(float)
    common = dict(disable_warnings=True, return_aggregate=False, display_progressbar=False)

    def q(metric, a, **kw):
        return np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu",
                                 batch_size=n, **kw), np.float64)  # fmt: skip

    for kind in ("saliency", "signed"):
        a = d[f"maps_{kind}"][:, None].astype(np.float32)
        out[f"{kind}/sparseness"] = q(quantus.Sparseness(**common), a)
        out[f"{kind}/complexity"] = q(quantus.Complexity(**common), a)
        # Faithfulness Correlation: our subsets, in Quantus' call order (run, then image).
        calls = iter([d["subsets"][i, r] for r in range(d["subsets"].shape[1]) for i in range(n)])
        choice = np.random.choice
        np.random.choice = lambda *args, calls=calls, **kw: next(calls)
        try:
            out[f"{kind}/faithfulness_correlation"] = q(quantus.FaithfulnessCorrelation(
                nr_runs=d["subsets"].shape[1], subset_size=d["subsets"].shape[2],
                perturb_baseline=0.0, **common), a, softmax=False)  # fmt: skip
        finally:
            np.random.choice = choice
        out[f"{kind}/faithfulness_estimate"] = q(quantus.FaithfulnessEstimate(
            features_in_step=4, perturb_baseline=0.0, **common), a, softmax=False)  # fmt: skip
        out[f"{kind}/pixel_flipping_curve"] = q(quantus.PixelFlipping(
            features_in_step=8, perturb_baseline=0.0, **common), a, softmax=True)  # fmt: skip
        out[f"{kind}/region_perturbation_curve"] = q(quantus.RegionPerturbation(
            patch_size=4, regions_evaluation=16, perturb_baseline=0.0, **common), a,
            softmax=False)  # fmt: skip
        segs = iter(list(d["segments"]))
        seg_fn = qutils.get_superpixel_segments
        qutils.get_superpixel_segments = lambda img, segmentation_method, segs=segs: next(segs)
        try:
            out[f"{kind}/irof_quantus_aoc"] = q(quantus.IROF(perturb_baseline=0.0, **common), a,
                                                softmax=True)  # fmt: skip
        finally:
            qutils.get_superpixel_segments = seg_fn
        # Captum infidelity with our noise: perturbation I, perturbed input x - I.
        noise = torch.from_numpy(d["noise"].astype(np.float32))  # (N, S, H, W)
        samples = noise.shape[1]
        flat = noise.reshape(-1, 1, *noise.shape[2:])

        def perturb(inputs, flat=flat):
            return flat, inputs - flat

        out[f"{kind}/infidelity"] = infidelity(
            model, perturb, torch.from_numpy(x), torch.from_numpy(a), target=torch.from_numpy(y),
            n_perturb_samples=samples, normalize=True).double().numpy()  # fmt: skip
    a = d["maps_saliency"][:, None].astype(np.float32)
    out["saliency/top_k_intersection"] = q(quantus.TopKIntersection(k=20, **common), a, s_batch=s)
    out["saliency/relevance_rank_accuracy"] = q(quantus.RelevanceRankAccuracy(**common), a,
                                                s_batch=s)  # fmt: skip
    out["saliency/relevance_mass_accuracy"] = q(quantus.RelevanceMassAccuracy(**common), a,
                                                s_batch=s)  # fmt: skip
    out["saliency/localisation_auc"] = q(quantus.AUC(**common), a, s_batch=s)
    # Captum sensitivity_max on our perturbed images, with the twin's saliency.
    pert = torch.from_numpy(np.moveaxis(d["perturbed"], -1, 2).astype(np.float32))  # N,S,1,H,W
    samples = pert.shape[1]
    out["saliency/maps_of_perturbed"] = np.stack([
        saliency(model, pert[:, j], torch.from_numpy(y)).detach().numpy()[:, 0]
        for j in range(samples)], 1)  # fmt: skip
    out["saliency/max_sensitivity_relative"] = sensitivity_max(
        lambda inputs, target: (
            (saliency(model, inputs[0], target),) if isinstance(inputs, tuple)
            else saliency(model, inputs, target)),
        torch.from_numpy(x),
        perturb_func=lambda inputs, radius: pert.reshape(-1, *pert.shape[2:]),
        n_perturb_samples=samples, target=torch.from_numpy(y)).double().numpy()  # fmt: skip

    # Quantus' robustness metrics: our perturbed images (one batch per sample, in order) and
    # the twin's saliency as `explain_func`.
    def explain_func(model, inputs, targets, **kw):
        return saliency(model, torch.from_numpy(np.asarray(inputs, np.float32)),
                        torch.from_numpy(np.asarray(targets))).detach().numpy()  # fmt: skip

    def fixed(perturbed):
        batches = iter(np.moveaxis(perturbed, -1, 2).transpose(1, 0, 2, 3, 4))  # S, N, 1, H, W

        def perturb_func(arr, indices=None, indexed_axes=None, **kw):
            return next(batches).reshape(arr.shape).astype(arr.dtype)

        return perturb_func

    robust = dict(nr_samples=samples, **common)
    out["saliency/avg_sensitivity_relative"] = q(
        quantus.AvgSensitivity(perturb_func=fixed(d["perturbed"]), **robust), a,
        explain_func=explain_func)  # fmt: skip
    out["saliency/local_lipschitz"] = q(
        quantus.LocalLipschitzEstimate(perturb_func=fixed(d["perturbed_lipschitz"]), **robust),
        a, explain_func=explain_func)  # fmt: skip
    out["saliency/relative_input_stability"] = q(
        quantus.RelativeInputStability(perturb_func=fixed(d["perturbed_ris"]), **robust), a,
        explain_func=explain_func)  # fmt: skip
    out["_logits"] = model(torch.from_numpy(x)).detach().numpy()
    np.savez(dst, **out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
