"""RISE and LIME against their peers, and all three sampling methods against `random`.

Run (from the repository root; needs xplique and the `lime` package, not in the default deps):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.compare_perturbation              # trains the shapes CNN first
    .venv/bin/python -m scripts.compare_perturbation --model run/model.keras --images 16

1. Agreement. On the trained shapes CNN (the test suite's `trained_shapes` recipe), for each
   image: RISE (ours, seeds 0 and 1) and xplique's `Rise` (two successive draws) with the same
   masks count, grid, keep probability and black fill, both explaining the target
   probability; LIME (ours, seeds 0 and 1) and the `lime` package (random_state 0 and 1) on
   the same SLIC superpixels, the same samples count, the same fill (the image's mean colour)
   and the same score (the logit). A library's *floor* is the mean over images of the Pearson
   correlation between its two seeds; *cross* is the mean over images and the four seed
   pairs of the correlation between ours and the peer. If each map is the true map plus
   independent sampling noise, corr(a, b) = sqrt(r_a r_b) with r a library's floor (its
   reliability), so cross lies between the two floors when the libraries estimate the same
   map with different noise, and cross / sqrt(floor_ours * floor_peer) (Spearman's correction
   for attenuation) is the correlation of the maps they estimate. The peers agree with us
   when cross >= min(floors) - 0.02 and the corrected correlation is >= 0.95.
2. Against `random` (a smooth random map): deletion AUC (lower is better) and insertion AUC
   (higher is better), blur baseline, paired by image, one-sided Wilcoxon signed-rank test.

Nothing is written but what is printed (and the trained model in a temporary folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from scripts.common import corr, train_small_shapes
from xai_keras import explain
from xai_keras.evaluate import deletion, insertion
from xai_keras.evaluate.significance import beats_random
from xai_keras.explainers.base import runner_for
from xai_keras.explainers.perturbation import superpixels


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _agreement(ours: list[np.ndarray], theirs: list[np.ndarray]) -> dict[str, float]:
    """Per-image correlations averaged: each library's seed floor and the cross agreement."""
    n = len(ours[0])
    floor_ours = np.mean([corr(ours[0][i], ours[1][i]) for i in range(n)])
    floor_theirs = np.mean([corr(theirs[0][i], theirs[1][i]) for i in range(n)])
    cross = np.mean([corr(o[i], t[i]) for o in ours for t in theirs for i in range(n)])
    return {"floor_ours": floor_ours, "floor_peer": floor_theirs, "cross": cross}


def _xplique_rise(model, x, targets, masks, cells, p_keep) -> np.ndarray:
    """One draw of xplique's Rise. Its masks come from stateful TF random ops inside a traced
    function: `tf.random.set_seed(s)` gives the same masks for every s, so the two draws are
    two successive calls after one `set_seed(0)`."""
    from xplique.attributions import Rise

    explainer = Rise(
        model,
        batch_size=64,
        nb_samples=masks,
        grid_size=cells,
        preservation_probability=p_keep,
        mask_value=0.0,
    )
    onehot = tf.one_hot(targets, model.outputs[0].shape[-1])
    return np.asarray(explainer.explain(x, onehot))[..., 0]


def _lime_package(model, x, targets, samples, segments, seed) -> np.ndarray:
    from lime.lime_image import LimeImageExplainer

    runner = runner_for(model)

    def logits(batch: np.ndarray) -> np.ndarray:
        return runner.forward_fn(tf.constant(batch, tf.float32)).numpy()

    maps = []
    for image, target in zip(x, targets):
        labels = superpixels(image, segments, "slic")
        exp = LimeImageExplainer(random_state=seed).explain_instance(
            image.astype(np.float64),
            logits,
            labels=(int(target),),
            top_labels=None,
            hide_color=image.mean(axis=(0, 1)),
            num_samples=samples,
            batch_size=64,
            segmentation_fn=lambda _image, labels=labels: labels,
        )
        coef = np.zeros(labels.max() + 1)
        for j, value in exp.local_exp[int(target)]:
            coef[j] = value
        maps.append(coef[labels])
    return np.stack(maps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a saved .keras model (default: train the shapes CNN)")
    parser.add_argument("--images", type=int, default=16, help="test images (default 16)")
    parser.add_argument("--masks", type=int, default=2000, help="RISE masks (default 2000)")
    parser.add_argument("--samples", type=int, default=1000, help="LIME samples (default 1000)")
    parser.add_argument("--segments", type=int, default=50, help="SLIC segments (default 50)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model = keras.models.load_model(args.model)
            x = None
        else:
            start = time.perf_counter()
            run = train_small_shapes(Path(tmp))
            _log(f"trained the shapes CNN in {time.perf_counter() - start:.0f}s")
            model = run.model
            x = run.splits.test_arrays.images
        if x is None:
            from xai_keras.config import load_config
            from xai_keras.data import load_dataset

            x = load_dataset(load_config(None, ["data.n_test=300"]).data).test_arrays.images
        x = np.asarray(x[: args.images], np.float32)
        targets = explain(model, x, "random").targets
        _log(f"{len(x)} images {x.shape[1:]}, value range [{x.min():.2f}, {x.max():.2f}]")

        rise = dict(masks=args.masks, cells=7, p_keep=0.5)
        ours = [explain(model, x, "rise", seed=s, batch_size=64, **rise).raw for s in (0, 1)]
        tf.random.set_seed(0)
        theirs = [_xplique_rise(model, x, targets, **rise) for _ in (0, 1)]
        rise_row = _agreement(ours, theirs)
        _log("RISE agreement done")

        lime = dict(samples=args.samples, segments=args.segments)
        ours = [explain(model, x, "lime", seed=s, batch_size=64, **lime).raw for s in (0, 1)]
        theirs = [_lime_package(model, x, targets, **lime, seed=s) for s in (0, 1)]
        lime_row = _agreement(ours, theirs)
        _log("LIME agreement done")

        print("## Agreement with peers (mean Pearson correlation over images)\n")
        print(
            "| method | peer | our seed floor | peer seed floor | ours vs peer "
            "| corrected for attenuation | verdict |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, peer, row in (
            ("rise", "xplique Rise", rise_row),
            ("lime", "lime 0.2.0.1", lime_row),
        ):
            floor = min(row["floor_ours"], row["floor_peer"])
            corrected = row["cross"] / np.sqrt(row["floor_ours"] * row["floor_peer"])
            agrees = row["cross"] >= floor - 0.02 and corrected >= 0.95
            print(
                f"| {name} | {peer} | {row['floor_ours']:.3f} | {row['floor_peer']:.3f} | "
                f"{row['cross']:.3f} ({row['cross'] - floor:+.3f} vs the lower floor) | "
                f"{corrected:.3f} | {'agrees' if agrees else 'DISAGREES'} |"
            )

        print("\n## Against `random` (blur baseline, 20 steps, one-sided Wilcoxon by image)\n")
        print("| method | deletion AUC | random | p | insertion AUC | random | p |")
        print("|---|---|---|---|---|---|---|")
        maps = {
            "random": explain(model, x, "random").maps,
            "rise": explain(model, x, "rise", batch_size=64).maps,
            "lime": explain(model, x, "lime", batch_size=64).maps,
            "kernelshap": explain(model, x, "kernelshap", batch_size=64).maps,
        }
        scores = {
            name: (
                deletion(model, x, m, targets=targets).auc,
                insertion(model, x, m, targets=targets).auc,
            )
            for name, m in maps.items()
        }
        rand_del, rand_ins = scores["random"]
        for name in ("rise", "lime", "kernelshap"):
            d, i = scores[name]
            pd_ = beats_random(d, rand_del, higher_is_better=False)
            pi = beats_random(i, rand_ins, higher_is_better=True)
            print(
                f"| {name} | {d.mean():.3f} | {rand_del.mean():.3f} | {pd_['p']:.1e} "
                f"({pd_['wins']}/{pd_['n']}) | {i.mean():.3f} | {rand_ins.mean():.3f} | "
                f"{pi['p']:.1e} ({pi['wins']}/{pi['n']}) |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
