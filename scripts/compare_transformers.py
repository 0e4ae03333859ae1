"""Attention rollout, Chefer and AttnLRP against PyTorch references on a twin ViT.

TensorFlow and torch never share a process: this script builds the KerasHub ViT of
`scripts/zoo/kerashub.py` (class token, 8x8 patches, 2 blocks with keras MultiHeadAttention),
gives it random weights large enough for peaked attention, explains random images with every
transformer method, and runs `_transformers_torch_oracle.py` in the torch venv, which copies the
weights into torchvision's `VisionTransformer` and computes the references: jacobgil/vit-explain's
rollout, the authors' Chefer relevance (ICCV 2021) and combination (CVPR 2021, with LXT's
relevance of the attention), and LXT 2.1 (the AttnLRP authors' library) for AttnLRP.
Printed: the Pearson correlation per image (worst and mean) and the worst relative difference.

    bash scripts/torch_env.sh                    # once: .torchvenv with torch, lxt, ...
    python -m scripts.compare_transformers [--torch-python .torchvenv/bin/python]

The exit status is 0 when every compared row reaches a worst correlation of 0.999. Rows marked
"convention" differ on purpose and are not held to it: vit-explain's `a / a.sum(dim=-1)`
divides column j by row j's sum (it only matters where the fused rows do not sum to 1: "max" or
"min" head fusion, or entries discarded), where ours renormalises rows, as the method states;
the rows "vit-explain rows" are vit-explain with that one line keepdim'd.
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

from scripts.common import parse_oracle_args  # noqa: E402
from xai_keras import explain  # noqa: E402
from xai_keras.explainers import Session  # noqa: E402

ORACLE = Path(__file__).with_name("_transformers_torch_oracle.py")
ROOT = Path(__file__).resolve().parents[1]
FUSIONS, RATIOS = ("mean", "max", "min"), (0.0, 0.9)


def build_vit(seed: int = 0) -> keras.Model:
    """The zoo's KerasHub ViT with weights drawn so that attention is far from uniform."""
    from scripts.zoo import kerashub

    model = kerashub.build("vit")
    rng = np.random.default_rng(seed)
    for var in model.weights:
        shape = tuple(var.shape)
        if var.path.endswith("gamma"):
            value = 1 + rng.normal(0, 0.2, shape)
        elif var.path.endswith(("beta", "bias")):
            value = rng.normal(0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            scale = 3.0 if "/query/" in var.path or "/key/" in var.path else 1.0
            value = rng.normal(0, scale / np.sqrt(max(fan_in, 1)), shape)
        var.assign(value.astype(np.float32))
    return model


def weights(model: keras.Model) -> tuple[dict[str, np.ndarray], list[int]]:
    """The twin's weights by role, and (layers, heads, hidden, mlp, classes, size, patch)."""
    values = {v.path: v.numpy() for v in model.weights}
    w = {
        "patch.kernel": values["vit_patching_and_embedding/patch_embedding/kernel"],
        "patch.bias": values["vit_patching_and_embedding/patch_embedding/bias"],
        "class_token": values["vit_patching_and_embedding/class_token"],
        "position": values["vit_patching_and_embedding/position_embedding/embeddings"],
        "ln.gamma": values["vit_encoder/ln/gamma"],
        "ln.beta": values["vit_encoder/ln/beta"],
        "head.kernel": values["predictions/kernel"],
        "head.bias": values["predictions/bias"],
    }
    names = {
        "query": "mha/query",
        "key": "mha/key",
        "value": "mha/value",
        "out": "mha/attention_output",
        "mlp1": "mlp/dense_1",
        "mlp2": "mlp/dense_2",
    }
    layers = 0
    while f"vit_encoder/transformer_block_{layers + 1}/ln_1/gamma" in values:
        p = f"vit_encoder/transformer_block_{layers + 1}/"
        for ln in ("ln_1", "ln_2"):
            w[f"b{layers}.{ln}.gamma"] = values[p + ln + "/gamma"]
            w[f"b{layers}.{ln}.beta"] = values[p + ln + "/beta"]
        for role, path in names.items():
            w[f"b{layers}.{role}.kernel"] = values[p + path + "/kernel"]
            w[f"b{layers}.{role}.bias"] = values[p + path + "/bias"]
        layers += 1
    heads, head_dim = w["b0.query.bias"].shape
    hidden, mlp = w["b0.mlp1.kernel"].shape
    size, patch = int(model.input_shape[1]), int(w["patch.kernel"].shape[0])
    config = [layers, heads, hidden, mlp, int(w["head.bias"].shape[0]), size, patch]
    return w, config


def ours(model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    session = Session(model, preprocessor=False)
    out = {"targets": explain(session, x, "saliency").targets}
    t = out["targets"]
    for fusion in FUSIONS:
        for ratio in RATIOS:
            exp = explain(session, x, "attention_rollout", head_fusion=fusion, discard_ratio=ratio)
            out[f"rollout.{fusion}.{ratio}"] = exp.raw
    out["chefer"] = explain(session, x, "chefer", targets=t).raw
    exp = explain(session, x, "transformer_attribution", targets=t, epsilon=0.0)
    out["transformer_attribution"] = exp.raw
    for rule in ("cp", "attnlrp"):
        exp = explain(session, x, "attnlrp", targets=t, attention_rule=rule, epsilon=0.0)
        out[f"attnlrp.{rule}"] = exp.attributions
    out["logits"] = exp.logits
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def compare(mine: dict, theirs: dict) -> list[tuple[str, float, float, float, bool]]:
    """(row, worst corr, mean corr, max |diff| / max |theirs|, held to 0.999)."""
    pairs = [("logits", "logits", "logits", True), ("chefer", "chefer", "chefer", True)]
    pairs.append(("transformer_attribution", *["transformer_attribution"] * 2, True))
    for fusion in FUSIONS:
        for ratio in RATIOS:
            ours_key = f"rollout.{fusion}.{ratio}"
            pairs.append((f"{ours_key} vs vit-explain rows", ours_key, ours_key + ".rows", True))
            # vit-explain's column division only matters where fused rows do not sum to 1
            # (max/min fusion, or entries discarded)
            held = fusion == "mean" and ratio == 0.0
            label = f"{ours_key} vs vit-explain literal" + ("" if held else " (convention)")
            pairs.append((label, ours_key, ours_key + ".literal", held))
    for rule in ("cp", "attnlrp"):
        pairs.append((f"attnlrp {rule} vs LXT", f"attnlrp.{rule}", f"attnlrp.{rule}", True))
    rows = []
    for label, a_key, b_key, held in pairs:
        a, b = np.asarray(mine[a_key], np.float64), np.asarray(theirs[b_key], np.float64)
        corrs = [_corr(a[i], b[i]) for i in range(len(a))]
        rel = float(np.abs(a - b).max() / np.abs(b).max())
        rows.append((label, min(corrs), float(np.mean(corrs)), rel, held))
    return rows


def run(torch_python: str, images: int = 8, seed: int = 0) -> list[tuple]:
    """Build the twin, explain, run the oracle, compare: the table's rows."""
    model = build_vit(seed)
    x = np.random.default_rng(seed + 1).uniform(-1, 1, (images, *model.input_shape[1:]))
    x = x.astype(np.float32)
    mine = ours(model, x)
    w, config = weights(model)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.npz"), Path(tmp, "out.npz")
        np.savez(src, x=x, targets=mine["targets"], config=np.array(config),
                 **{f"w.{k}": v for k, v in w.items()})  # fmt: skip
        subprocess.run([torch_python, "-W", "ignore", str(ORACLE), str(src), str(dst)], check=True)
        with np.load(dst) as theirs:
            return compare(mine, dict(theirs))


def main() -> int:
    args = parse_oracle_args(__doc__)
    if args is None:
        return 2
    rows = run(args.torch_python, args.images)
    print(f"{'row':52s} {'min corr':>9s} {'mean corr':>9s} {'max|diff|/max':>13s}")
    for label, worst, mean, rel, _ in rows:
        print(f"{label:52s} {worst:9.6f} {mean:9.6f} {rel:13.2e}")
    return 0 if all(r[1] >= 0.999 for r in rows if r[4]) else 1


if __name__ == "__main__":
    sys.exit(main())
