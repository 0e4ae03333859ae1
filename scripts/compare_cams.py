"""Compare the newer CAMs (HiResCAM, Finer-CAM, ShapleyCAM, KPCA-CAM) with pytorch-grad-cam.

Builds two small Keras CNNs (conv/BN/ReLU/max-pool blocks; one with a GAP + dense head, one
with a Flatten + dense head, both ending in a softmax), gives their batch normalisations
random statistics, explains random images with xai_keras, and writes the weights, images,
targets and our raw maps to an .npz. A PyTorch twin with the same weights (NCHW transposes)
is then built in a separate process (`scripts/_cams_torch_oracle.py`, run with the
interpreter of a venv that has torch and grad-cam; TensorFlow and torch must not share a
process), which computes pytorch-grad-cam's maps for the same targets and layers. Its
resizing and min-max scaling are switched off, so both sides are the raw ReLU'd CAM at the
layer's resolution, and the correlation of each image's map is reported (the minimum over
images, per method, model and layer).

Run (from the repository root; the oracle venv: `python3 -m venv .torchvenv &&
.torchvenv/bin/pip install torch grad-cam==1.5.7 numpy`; `.torchvenv/` is git-ignored):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python scripts/compare_cams.py                      # uses .torchvenv/
    .venv/bin/python scripts/compare_cams.py --torch-python PATH --keep out/

Exits with 1 when a correlation is below `--threshold` (0.99) or the twins' logits differ.
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

from xai_keras import explain  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_TORCH_PYTHON = str(HERE.parent / ".torchvenv" / "bin" / "python")
CLASSES = 6
SIZE = 32

# The twins' layers, in order; both sides build their model from this list. Each ReLU is its
# own layer, so the captured activation is the same tensor in both frameworks.
ARCHS = {
    "gap": [
        ("conv", 8, "b1_conv"),
        ("bn", None, "b1_bn"),
        ("relu", None, "b1_relu"),
        ("pool", None, "b1_pool"),
        ("conv", 16, "b2_conv"),
        ("bn", None, "b2_bn"),
        ("relu", None, "b2_relu"),
        ("pool", None, "b2_pool"),
        ("conv", 16, "b3_conv"),
        ("bn", None, "b3_bn"),
        ("relu", None, "b3_relu"),
        ("gap", None, "gap"),
        ("dense", CLASSES, "logits"),
    ],
    "flatten": [
        ("conv", 8, "b1_conv"),
        ("bn", None, "b1_bn"),
        ("relu", None, "b1_relu"),
        ("pool", None, "b1_pool"),
        ("conv", 16, "b2_conv"),
        ("bn", None, "b2_bn"),
        ("relu", None, "b2_relu"),
        ("pool", None, "b2_pool"),
        ("conv", 16, "b3_conv"),
        ("relu", None, "b3_relu"),
        ("flatten", None, "flatten"),
        ("dense", 32, "fc"),
        ("relu", None, "fc_relu"),
        ("dense", CLASSES, "logits"),
    ],
}
LAYERS = ["b2_relu", "b3_relu"]

# (label, method, options, which pytorch-grad-cam computation the oracle runs)
CASES = [
    ("hirescam", "hirescam", {}, {"cam": "HiResCAM"}),
    ("finercam", "finercam", {}, {"cam": "FinerCAM", "alpha": 1.0, "comparisons": 3}),
    (
        "finercam a=0.6 k=2",
        "finercam",
        {"alpha": 0.6, "comparisons": 2},
        {"cam": "FinerCAM", "alpha": 0.6, "comparisons": 2},
    ),
    ("shapleycam (rest)", "shapleycam", {}, {"cam": "ShapleyCAM", "target": "rest"}),
    (
        "shapleycam logit",
        "shapleycam",
        {"utility": "logit"},
        {"cam": "ShapleyCAM", "target": "logit"},
    ),
    ("kpcacam (sigmoid)", "kpcacam", {}, {"cam": "KPCA_CAM", "kernel": "sigmoid"}),
    ("kpcacam rbf", "kpcacam", {"kernel": "rbf"}, {"cam": "KPCA_CAM", "kernel": "rbf"}),
    (
        "kpcacam poly g=0.01",
        "kpcacam",
        {"kernel": "poly", "gamma": 0.01},
        {"cam": "KPCA_CAM", "kernel": "poly", "gamma": 0.01},
    ),
    ("kpcacam linear", "kpcacam", {"kernel": "linear"}, {"cam": "KPCA_CAM", "kernel": "linear"}),
    ("kpcacam cosine", "kpcacam", {"kernel": "cosine"}, {"cam": "KPCA_CAM", "kernel": "cosine"}),
]


def build(arch: list, seed: int) -> keras.Model:
    """The Keras side of a twin, with random BN statistics so BN is not the identity."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = inputs = keras.Input((SIZE, SIZE, 3))
    for kind, width, name in arch:
        if kind == "conv":
            x = keras.layers.Conv2D(width, 3, padding="same", name=name)(x)
        elif kind == "bn":
            x = keras.layers.BatchNormalization(epsilon=1e-3, name=name)(x)
        elif kind == "relu":
            x = keras.layers.ReLU(name=name)(x)
        elif kind == "pool":
            x = keras.layers.MaxPooling2D(2, name=name)(x)
        elif kind == "gap":
            x = keras.layers.GlobalAveragePooling2D(name=name)(x)
        elif kind == "flatten":
            x = keras.layers.Flatten(name=name)(x)
        elif kind == "dense":
            last = name == "logits"
            x = keras.layers.Dense(width, activation="softmax" if last else None, name=name)(x)
    model = keras.Model(inputs, x)
    for kind, _, name in arch:
        layer = model.get_layer(name)
        if kind == "bn":
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.2, c),
                    rng.normal(0, 0.2, c),
                    rng.uniform(0.5, 2.0, c),
                ]
            )
        elif kind in ("conv", "dense"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.05, bias.shape)])
    return model


def weights_of(model: keras.Model, arch: list) -> dict[str, np.ndarray]:
    """Each layer's weights under "<layer>/<i>" (Keras layouts; the oracle transposes)."""
    out = {}
    for kind, _, name in arch:
        if kind in ("conv", "bn", "dense"):
            for i, w in enumerate(model.get_layer(name).get_weights()):
                out[f"w/{name}/{i}"] = w.astype(np.float32)
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.std() == 0 or b.std() == 0:  # e.g. an all-zero map on both sides
        return 1.0 if np.allclose(a, b, atol=1e-6 * max(1e-12, np.abs(b).max())) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--keep", help="folder to keep the exchanged .npz files in")
    args = parser.parse_args(argv)
    if not Path(args.torch_python).exists():
        print(f"no oracle interpreter at {args.torch_python} (see --help)", file=sys.stderr)
        return 2

    images = np.random.default_rng(7).uniform(0, 1, (args.images, SIZE, SIZE, 3))
    images = images.astype(np.float32)
    payload: dict[str, np.ndarray] = {"images": images}
    runs = []
    for m, (arch_name, arch) in enumerate(ARCHS.items()):
        model = build(arch, seed=11 + m)
        payload.update({f"{arch_name}/{k}": v for k, v in weights_of(model, arch).items()})
        payload[f"{arch_name}/keras_logits"] = explain(model, images, method="gradcam").logits
        for layer in LAYERS:
            for t_mode in ("top", "fixed"):
                targets = None if t_mode == "top" else [i % CLASSES for i in range(len(images))]
                for label, method, options, oracle in CASES:
                    with_targets = targets if method != "kpcacam" else None
                    if method == "kpcacam" and t_mode == "fixed":
                        continue  # class-agnostic: one run per layer is enough
                    exp = explain(
                        model, images, method=method, layer=layer, targets=with_targets, **options
                    )
                    key = f"run{len(runs)}"
                    payload[f"{key}/ours"] = exp.raw
                    payload[f"{key}/targets"] = exp.targets.astype(np.int64)
                    runs.append(
                        {
                            "key": key,
                            "arch": arch_name,
                            "layer": layer,
                            "targets": t_mode,
                            "label": label,
                            "oracle": oracle,
                        }
                    )
    payload["spec"] = np.array(json.dumps({"archs": ARCHS, "runs": runs}))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ours, theirs = folder / "keras_side.npz", folder / "torch_side.npz"
        np.savez(ours, **payload)
        oracle = [args.torch_python, str(HERE / "_cams_torch_oracle.py"), str(ours), str(theirs)]
        done = subprocess.run(oracle, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
            return 2
        result = dict(np.load(theirs))

    failed = False
    for arch_name in ARCHS:
        diff = np.abs(result[f"{arch_name}/torch_logits"] - payload[f"{arch_name}/keras_logits"])
        print(f"twin {arch_name}: max |logit difference| {diff.max():.2e}")
        failed |= bool(diff.max() > 1e-3)
    print(
        f"{'method':22s} {'model':8s} {'layer':8s} {'targets':7s} {'min corr':>10s} "
        f"{'max rel err':>11s} {'zero maps':>9s}"
    )
    worst: dict[str, float] = {}
    for run in runs:
        key = run["key"]
        a, b = payload[f"{key}/ours"], result[f"{key}/theirs"]
        corr = min(_corr(a[i], b[i]) for i in range(len(a)))
        scale = np.abs(b).max(axis=(1, 2))
        err = (np.abs(a - b).max(axis=(1, 2)) / np.where(scale > 0, scale, 1)).max()
        zeros = int((scale == 0).sum())
        worst[run["label"]] = min(worst.get(run["label"], 1.0), corr)
        print(
            f"{run['label']:22s} {run['arch']:8s} {run['layer']:8s} {run['targets']:7s} "
            f"{corr:10.8f} {err:11.2e} {zeros:9d}"
        )
    print("\nworst correlation per method (over models, layers, targets and images):")
    for label, corr in worst.items():
        verdict = "ok" if corr >= args.threshold else "BELOW THRESHOLD"
        print(f"  {label:22s} {corr:.8f}  {verdict}")
        failed |= corr < args.threshold
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
