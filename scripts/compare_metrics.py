"""Compare the metric families (`xai_keras.evaluate`) with Quantus 0.6 and Captum on a PyTorch
twin of a small Keras CNN, with identical maps and identical random draws.

The Keras side builds the twin's weights, images (16 x 16 grey: one channel, so Quantus'
features, which are single channel values, are pixels as here), maps (our saliency maps and
smooth signed random maps), object masks, the random subsets of Faithfulness Correlation,
the SLIC segments of IROF, the noise of Infidelity and the perturbed images of Max-Sensitivity,
and computes our metrics. `scripts/_metrics_torch_oracle.py` (run with .torchvenv's Python:
torch and TensorFlow must not share a process) computes Quantus' and Captum's values on the
same inputs: Quantus' `np.random.choice` (Faithfulness Correlation's subsets) and
`get_superpixel_segments` (IROF) are replaced by functions returning ours; Captum's
`perturb_func`s return our noise. Baselines are the number 0 on both sides (Quantus' "black"
is the batch's minimum).

    bash scripts/torch_env.sh                  # once: .torchvenv with torch, captum, quantus
    .venv/bin/python -m scripts.compare_metrics [--keep DIR]

Measured (12 images, two map kinds: our saliency maps and smooth signed random maps), the
largest absolute difference over images and curve points: Sparseness 3e-7, Complexity 7e-7,
Faithfulness Correlation 5e-7, Faithfulness Estimate 8e-7, Pixel Flipping curves 6e-8, Region
Perturbation curves 3e-7, IROF (Quantus' AOC) 4e-6, Infidelity (Captum) 3e-9, Top-K 0, Relevance
Rank Accuracy 0, Relevance Mass Accuracy 2e-8, AUC 1e-16, Max-Sensitivity (Captum) 7e-8,
Avg-Sensitivity 5e-8, Local Lipschitz 2e-6 and RIS 2e-4 (ratios of ~1e2-1e3) relative to
Quantus: every correlation 1.00000. Conventions that differ and are compared after conversion
(documented in each docstring): Quantus' Pixel Flipping and IROF curves omit step 0 and
integrate with unit spacing (its IROF adds half of the last value for images with fewer
segments than the batch's most), its Region Perturbation averages over steps 1..L, and
Quantus and Captum divide the sensitivities by ||phi(x)|| (ours: the paper's unnormalised
change, divided here). Not compared: Effective Complexity (relative threshold and share here),
Random Logit, Smooth MPRT, Completeness and Input Invariance (known answers in
tests/test_metric_families.py instead).

Prints, per metric, the largest absolute difference over images (and curve points) and the
worst per-image correlation (for curves) or the correlation over images (for scalars), and
exits 1 when a deterministic metric differs by more than 1e-4 (relative) where no convention
difference is documented.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.ndimage  # noqa: E402

from scripts.common import torch_python
from xai_keras import explain  # noqa: E402
from xai_keras.evaluate import (  # noqa: E402
    avg_sensitivity,
    complexity,
    faithfulness_correlation,
    faithfulness_estimate,
    infidelity,
    irof,
    local_lipschitz,
    localisation_auc,
    max_sensitivity,
    pixel_flipping,
    region_perturbation,
    relative_input_stability,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    sparseness,
    top_k_intersection,
)
from xai_keras.evaluate.faithfulness import _random_subset, superpixels  # noqa: E402
from xai_keras.evaluate.robustness import perturbed_explanations  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIDE, N, CLASSES = 16, 12, 5
RUNS, SUBSET, SAMPLES = 20, 26, 8


def build(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIDE, SIDE, 1))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(CLASSES, activation="softmax", name="d")(x)
    return keras.Model(inp, out)


def ours(model, x, maps_by_kind, masks) -> tuple[dict, dict]:
    """Our values, and the draws the oracle must reuse."""
    res, draws = {}, {}
    h = w = SIDE
    tgt = model.predict(x, verbose=0).argmax(1).astype(np.int32)
    draws["targets"] = tgt
    subsets = np.stack([
        np.stack([np.flatnonzero(_random_subset((h, w), SUBSET, (0, i, r))) for r in range(RUNS)])
        for i in range(N)
    ])  # fmt: skip
    draws["subsets"] = subsets  # (N, RUNS, SUBSET) flat pixel indices
    segments = superpixels(x, 30)
    draws["segments"] = segments
    rng = np.random.default_rng(5)
    noise = 0.1 * rng.standard_normal((N, SAMPLES, h, w))
    draws["noise"] = noise
    for kind, maps in maps_by_kind.items():
        res[f"{kind}/sparseness"] = sparseness(maps)
        res[f"{kind}/complexity"] = complexity(maps)
        res[f"{kind}/faithfulness_correlation"] = faithfulness_correlation(
            model, x, maps, tgt, runs=RUNS, subset_size=SUBSET, baseline=0.0
        )
        res[f"{kind}/faithfulness_estimate"] = faithfulness_estimate(
            model, x, maps, tgt, features_in_step=4, baseline=0.0
        )
        pf = pixel_flipping(model, x, maps, tgt, features_in_step=8, baseline=0.0)
        res[f"{kind}/pixel_flipping_curve"] = pf.scores[:, 1:]  # Quantus omits step 0
        rp = region_perturbation(model, x, maps, tgt, patch_size=4, regions=16, baseline=0.0)
        res[f"{kind}/region_perturbation_curve"] = rp.scores[:, :1] - rp.scores[:, 1:]
        ir = irof(model, x, maps, tgt, segments=segments, baseline=0.0)
        # Quantus' IROF: K_i minus np.trapz (unit spacing) of the relative curve over steps
        # 1..K_max, zero past an image's own K_i (ours repeats the last step there).
        k = segments.reshape(N, -1).max(1) + 1
        rel = ir.scores[:, 1:] / ir.scores[:, :1]
        rel = np.where(np.arange(rel.shape[1])[None] < k[:, None], rel, 0.0)
        res[f"{kind}/irof_quantus_aoc"] = k - np.trapezoid(rel, axis=1)
        res[f"{kind}/infidelity"] = _infidelity_with(model, x, maps, tgt, noise)
    sal = maps_by_kind["saliency"]
    res["saliency/top_k_intersection"] = top_k_intersection(sal, masks, k=20)
    res["saliency/relevance_rank_accuracy"] = relevance_rank_accuracy(sal, masks)
    res["saliency/relevance_mass_accuracy"] = relevance_mass_accuracy(sal, masks)
    res["saliency/localisation_auc"] = localisation_auc(sal, masks)
    # Max-Sensitivity: our perturbed images, explained by the oracle with its own saliency.
    original, xs, pmaps, _ = perturbed_explanations(
        model, x, "saliency", tgt, SAMPLES, 0.02, "uniform", 0, {}
    )
    draws["perturbed"] = np.moveaxis(xs, 0, 1)  # (N, S, H, W, 1)
    norm = np.sqrt((original.maps.reshape(N, -1) ** 2).sum(1))
    res["saliency/max_sensitivity_relative"] = (
        max_sensitivity(model, x, "saliency", tgt, samples=SAMPLES) / norm
    )
    res["saliency/maps_of_perturbed"] = np.moveaxis(pmaps, 0, 1)
    res["saliency/avg_sensitivity_relative"] = (
        avg_sensitivity(model, x, "saliency", tgt, samples=SAMPLES) / norm
    )
    # Local Lipschitz (Gaussian) and RIS (uniform): their perturbed images go to Quantus.
    _, xs, _, pred = perturbed_explanations(
        model, x, "saliency", tgt, SAMPLES, 0.05, "normal", 0, {}
    )
    draws["perturbed_lipschitz"] = np.moveaxis(xs, 0, 1)
    draws["lipschitz_kept"] = (pred == original.logits.argmax(1)[None]).all(axis=0)
    res["saliency/local_lipschitz"] = local_lipschitz(model, x, "saliency", tgt, samples=SAMPLES)
    _, xs, _, _ = perturbed_explanations(model, x, "saliency", tgt, SAMPLES, 0.02, "uniform", 0, {})
    draws["perturbed_ris"] = np.moveaxis(xs, 0, 1)
    res["saliency/relative_input_stability"] = relative_input_stability(
        model, x, "saliency", tgt, samples=SAMPLES
    )
    return res, draws


def _infidelity_with(model, x, maps, tgt, noise):
    return infidelity(model, x, maps, tgt, perturbations=noise, normalize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch-python", default=torch_python())
    parser.add_argument("--keep", default=None)
    args = parser.parse_args(argv)
    model = build()
    rng = np.random.default_rng(0)
    x = np.stack([scipy.ndimage.gaussian_filter(rng.random((SIDE, SIDE)), 1.5) for _ in range(N)])
    x = ((x - x.min()) / (x.max() - x.min()))[..., None].astype(np.float32)
    sal = explain(model, x, "saliency").maps
    signed = np.stack([scipy.ndimage.gaussian_filter(rng.standard_normal((SIDE, SIDE)), 1.0)
                       for _ in range(N)])  # fmt: skip
    masks = np.zeros((N, SIDE, SIDE), bool)
    for i in range(N):
        r, c = rng.integers(0, SIDE - 6, 2)
        masks[i, r : r + 6, c : c + 6] = True
    res, draws = ours(model, x, {"saliency": sal, "signed": signed}, masks)
    weights = {f"w/{layer.name}/{j}": v for layer in model.layers
               for j, v in enumerate(layer.get_weights())}  # fmt: skip
    work = Path(args.keep or tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "keras_side.npz", x=x, maps_saliency=sal, maps_signed=signed, masks=masks,
             **weights, **draws)  # fmt: skip
    run = subprocess.run([args.torch_python, str(ROOT / "scripts/_metrics_torch_oracle.py"),
                          str(work / "keras_side.npz"), str(work / "torch_side.npz")],
                         capture_output=True, text=True)  # fmt: skip
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-4000:])
        return 2
    theirs = dict(np.load(work / "torch_side.npz"))
    failed = []
    print(f"{'metric':45s} {'max |diff|':>11s} {'worst r':>8s}  oracle")
    for key, value in theirs.items():
        if key.startswith("_"):
            continue
        mine = np.asarray(res[key], np.float64)
        other = np.asarray(value, np.float64)
        diff = np.nanmax(np.abs(mine - other))
        if mine.ndim == 2:  # curves: the worst per-image correlation
            rs = [np.corrcoef(a, b)[0, 1] if np.ptp(a) > 0 and np.ptp(b) > 0 else 1.0
                  for a, b in zip(mine, other)]  # fmt: skip
            r = float(np.min(rs))
        else:
            keep = ~(np.isnan(mine) | np.isnan(other))
            a, b = mine[keep], other[keep]
            r = float(np.corrcoef(a, b)[0, 1]) if np.ptp(b) > 0 else 1.0
        scale = max(1.0, float(np.nanmax(np.abs(other))))
        ok = diff <= 1e-4 * scale
        failed += [] if ok else [key]
        print(f"{key:45s} {diff:11.2e} {r:8.5f}  {theirs.get('_oracle_' + key, '')}")
    print("differ:", failed or "none")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
