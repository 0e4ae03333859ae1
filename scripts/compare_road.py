"""Compare xai_keras' ROAD (`evaluate.road`) with pytorch-grad-cam's on one twin model.

Trains the small GAP CNN of `compare_cams.py` for a few epochs on 32 x 32 shapes images (so
that removing the object matters), takes two kinds of maps of held-out images (Grad-CAM, with
its ties at zero, and smoothed random noise, without ties), and computes our removal masks,
noise-free imputations and ROAD curves (percentiles 10..90, MoRF and LeRF, softmax of the top
class). A PyTorch twin with the same weights is built in a separate process
(`scripts/_road_torch_oracle.py`, run with the interpreter of a venv holding torch and grad-cam
1.5.7; TensorFlow and torch must not share a process), which computes:

1. `NoisyLinearImputer(noise=0)` on our masks: the imputers compared on identical inputs;
2. the twin's probabilities on those images: the curves with identical masks;
3. the masks its `RemoveMostRelevantFirst` / `RemoveLeastRelevantFirst` build at its
   percentile q = 100 - p (its q is the share *kept*), and its own curves end to end, without
   noise and with its default noise (0.01, torch's generator).

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.compare_road                      # uses .torchvenv/
    .venv/bin/python -m scripts.compare_road --torch-python PATH --keep out/

Measured (16 images, 9 percentiles, both orders, both map kinds): noise-free imputations on
identical masks differ by at most 6e-8 (float32 rounding), and so do the curves (1.3e-6).
The end-to-end curves correlate at 0.995-1.000 (0.994-0.999 with noise); they differ where the
removal masks do: their threshold removes every pixel tied with the q-th percentile (Grad-CAM's
zeros: up to 307 pixels more, and all 1024 pixels in 12 of the 144 MoRF points, at p = 70-90
in 9 of 16 images, which their imputer then fills with zeros), and np.percentile's
interpolation removes one pixel fewer than round(p / 100 * H * W) where the map has no ties.

Exits with 1 when the noise-free imputations on identical masks differ by more than 1e-4 or
the twins' logits by more than 1e-3.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.ndimage  # noqa: E402

from scripts.common import corr, oracle_arguments, oracle_missing  # noqa: E402
from scripts.compare_cams import ARCHS, SIZE, build, weights_of  # noqa: E402
from xai_keras import explain  # noqa: E402
from xai_keras.data.shapes import generate_shapes  # noqa: E402
from xai_keras.evaluate.road import noisy_linear_impute, road  # noqa: E402
from xai_keras.explainers.masking import pixel_ranks  # noqa: E402

HERE = Path(__file__).resolve().parent
PERCENTILES = [10, 20, 30, 40, 50, 60, 70, 80, 90]
ARCH = "gap"


def trained_twin(epochs: int) -> keras.Model:
    """The Keras side, trained briefly on shapes (its BN statistics become real ones)."""
    model = build(ARCHS[ARCH], seed=11)
    data = generate_shapes(3000, image_size=SIZE, seed=0)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(data.images, data.labels, epochs=epochs, batch_size=32, verbose=0)
    return model


def our_masks(maps: np.ndarray, order: str) -> np.ndarray:
    """(N, P, H, W) the pixels `road` imputes: round(p / 100 * H * W) top (MoRF) or bottom
    (LeRF) ranks of a stable sort."""
    ranks = pixel_ranks(maps)[:, None]
    pixels = maps.shape[1] * maps.shape[2]
    ks = np.floor(np.array(PERCENTILES) / 100 * pixels + 0.5).astype(int)[None, :, None, None]
    return ranks < ks if order == "morf" else ranks >= pixels - ks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    oracle_arguments(parser)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    if oracle_missing(args.torch_python):
        return 2

    model = trained_twin(args.epochs)
    test = generate_shapes(args.images, image_size=SIZE, seed=1)
    images = test.images.astype(np.float32)
    exp = explain(model, images, method="gradcam")
    accuracy = float((exp.targets == test.labels).mean())
    noise = np.random.default_rng(3).normal(size=images.shape[:3])
    maps = {
        "gradcam": exp.maps,
        "smooth": np.stack([scipy.ndimage.gaussian_filter(m, 2) for m in noise]),
    }
    payload: dict[str, np.ndarray] = {"images": images, "targets": exp.targets.astype(np.int64)}
    payload.update({f"model/{k}": v for k, v in weights_of(model, ARCHS[ARCH]).items()})
    ours: dict[str, np.ndarray] = {}
    for kind, m in maps.items():
        payload[f"{kind}/maps"] = m.astype(np.float32)
        for order in ("morf", "lerf"):
            removed = our_masks(m, order)
            payload[f"{kind}/removed/{order}"] = removed
            filled = [noisy_linear_impute(images, r, noise=0) for r in removed.swapaxes(0, 1)]
            ours[f"{kind}/impute/{order}"] = np.stack(filled, axis=1)
        for noise_std, label in ((0.0, "exact"), (0.01, "noisy")):
            curves = road(model, images, m, exp.targets, PERCENTILES, noise=noise_std)
            ours[f"{kind}/{label}/morf"], ours[f"{kind}/{label}/lerf"] = curves.morf, curves.lerf
    payload["spec"] = np.array(
        json.dumps({"arch": ARCHS[ARCH], "kinds": list(maps), "percentiles": PERCENTILES})
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ours_file, theirs_file = folder / "keras_side.npz", folder / "torch_side.npz"
        np.savez(ours_file, **payload)
        command = [args.torch_python, str(HERE / "_road_torch_oracle.py"), str(ours_file)]
        done = subprocess.run([*command, str(theirs_file)], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
            return 2
        theirs = dict(np.load(theirs_file))

    logit_diff = float(np.abs(theirs["torch_logits"] - exp.logits).max())
    print(f"twin: max |logit difference| {logit_diff:.2e}; shapes test accuracy {accuracy:.2f}")
    failed = logit_diff > 1e-3
    print(
        f"{'maps':8s} {'order':5s} {'impute max|d|':>13s} {'same-mask max|d|':>16s} "
        f"{'mask px differ':>14s} {'all removed':>11s} {'e2e max|d|':>10s} {'e2e corr':>8s} "
        f"{'noisy max|d|':>12s} {'noisy corr':>10s}"
    )
    for kind in maps:
        for order in ("morf", "lerf"):
            key = f"{kind}/impute/{order}"
            imp = float(np.abs(ours[key] - theirs[key]).max())
            failed |= imp > 1e-4
            exact = ours[f"{kind}/exact/{order}"]
            same = float(np.abs(exact - theirs[f"{kind}/same_masks/{order}"]).max())
            their_masks = theirs[f"{kind}/masks/{order}"]
            differ = (their_masks != payload[f"{kind}/removed/{order}"]).sum(axis=(2, 3))
            everything = int(their_masks.all(axis=(2, 3)).sum())
            e2e = theirs[f"{kind}/theirs/{order}"]
            noisy = ours[f"{kind}/noisy/{order}"]
            their_noisy = theirs[f"{kind}/theirs_noisy/{order}"]
            print(
                f"{kind:8s} {order:5s} {imp:13.2e} {same:16.2e} "
                f"{f'{differ.mean():.1f} (max {differ.max()})':>14s} {everything:11d} "
                f"{np.nanmax(np.abs(exact - e2e)):10.2e} {corr(exact, e2e):8.4f} "
                f"{np.abs(noisy - their_noisy).max():12.2e} {corr(noisy, their_noisy):10.4f}"
            )
        mine = (ours[f"{kind}/noisy/lerf"].mean(1) - ours[f"{kind}/noisy/morf"].mean(1)) / 2
        other = theirs[f"{kind}/theirs_noisy/lerf"].mean(1)
        other = (other - theirs[f"{kind}/theirs_noisy/morf"].mean(1)) / 2
        print(
            f"{kind:8s} score/2 (ROADCombined, noise 0.01): ours {mine.mean():.4f}, "
            f"theirs {other.mean():.4f}, per-image corr {corr(mine, other):.4f}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
