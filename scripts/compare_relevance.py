"""LRP and DeepLIFT against zennit and Captum on a twin PyTorch model with the same weights.

TensorFlow and torch never share a process: this script builds a small Keras CNN (conv-BN-ReLU,
max pooling, conv-ReLU, average pooling, flatten, dense-ReLU, dense), explains random images
with every LRP rule and DeepLIFT, saves weights, images and our attributions to an .npz, and
runs `_relevance_torch_oracle.py` in the torch venv, which rebuilds the twin, computes zennit's
(LRP) and Captum's (DeepLift) attributions and writes them back. Printed: the Pearson
correlation per image (worst and mean) and the worst relative difference, per rule.

    python -m scripts.compare_relevance [--torch-python PATH]  # default: .torchvenv/
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from scripts.common import corr, parse_oracle_args  # noqa: E402
from xai_keras import explain  # noqa: E402

L = keras.layers
RULES = ["0", "epsilon", "gamma", "zplus", "alpha2beta1", "composite", "flat", "wsquare"]
ORACLE = Path(__file__).with_name("_relevance_torch_oracle.py")


def build(pool: str, seed: int = 0) -> keras.Model:
    """The Keras side of the twin (same layer order as the torch nn.Sequential)."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", bias_initializer="random_normal", name="c1")(x)
    bn = L.BatchNormalization(epsilon=1e-3, name="bn1")
    x = bn(x)
    for var, value in (
        (bn.gamma, rng.uniform(0.5, 1.5, 8)),
        (bn.beta, rng.normal(0, 0.1, 8)),
        (bn.moving_mean, rng.normal(0, 0.1, 8)),
        (bn.moving_variance, rng.uniform(0.5, 2, 8)),
    ):
        var.assign(value)
    x = L.ReLU()(x)
    x = L.MaxPooling2D(2)(x) if pool == "max" else L.AveragePooling2D(2)(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = L.AveragePooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(32, activation="relu", bias_initializer="random_normal", name="d1")(x)
    return keras.Model(inputs, L.Dense(5, bias_initializer="random_normal", name="d2")(x))


def weights(model: keras.Model) -> dict[str, np.ndarray]:
    out = {}
    for name in ("c1", "c2", "d1", "d2"):
        layer = model.get_layer(name)
        out[f"{name}.kernel"], out[f"{name}.bias"] = (w.numpy() for w in layer.weights)
    bn = model.get_layer("bn1")
    for key in ("gamma", "beta", "moving_mean", "moving_variance"):
        out[f"bn1.{key}"] = getattr(bn, key).numpy()
    return out


def ours(pool: str, x: np.ndarray) -> dict[str, np.ndarray]:
    model = build(pool)
    data = {f"w.{k}": v for k, v in weights(model).items()}
    targets = explain(model, x, method="saliency").targets
    data["targets"] = targets
    for rule in RULES:
        exp = explain(model, x, method="lrp", rule=rule, targets=targets, value_range=(0, 1))
        data[f"lrp.{rule}"] = exp.attributions
    for name, base in (("black", 0.0), ("half", 0.5)):
        exp = explain(model, x, method="deeplift", baseline=base, targets=targets)
        data[f"deeplift.{name}"] = exp.attributions
        data[f"baseline.{name}"] = np.full_like(x, base)
    return data


def report(data: dict, theirs: dict, pool: str) -> list[tuple[str, float, float, float]]:
    rows = []
    for key in sorted(k for k in theirs if k.startswith(("lrp.", "deeplift."))):
        a, b = data[key], theirs[key]
        corrs = [corr(a[i], b[i]) for i in range(len(a))]
        rel = float(np.abs(a - b).max() / np.abs(b).max())
        rows.append((f"{key} ({pool} pool)", min(corrs), float(np.mean(corrs)), rel))
    return rows


def main() -> int:
    args = parse_oracle_args(__doc__)
    if args is None:
        return 2
    x = np.random.default_rng(1).uniform(0, 1, (args.images, 16, 16, 3)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pool in ("max", "avg"):
            data = ours(pool, x)
            src, dst = Path(tmp, f"in_{pool}.npz"), Path(tmp, f"out_{pool}.npz")
            np.savez(src, x=x, pool=pool, **data)
            command = [args.torch_python, "-W", "ignore", str(ORACLE), str(src), str(dst)]
            subprocess.run(command, check=True)
            with np.load(dst) as theirs:
                rows += report(data, dict(theirs), pool)
    print(f"{'rule':34s} {'min corr':>10s} {'mean corr':>10s} {'max |diff| / max':>17s}")
    for name, worst, mean, rel in rows:
        print(f"{name:34s} {worst:10.6f} {mean:10.6f} {rel:17.2e}")
    return 0 if all(r[1] >= 0.99 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
