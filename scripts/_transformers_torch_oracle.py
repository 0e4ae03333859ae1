"""PyTorch side of `compare_transformers.py` (runs in .torchvenv, never beside TensorFlow).

    .torchvenv/bin/python scripts/_transformers_torch_oracle.py in.npz out.npz

Rebuilds the KerasHub ViT as torchvision's `VisionTransformer` (the architecture KerasHub's ViT
ports) with the weights from `in.npz`, and computes on the same images and targets:

- `rollout.*`: attention rollout as jacobgil/vit-explain writes it (`rollout` below keeps its
  steps: head fusion, discard of the lowest fused entries except the class token's, (A + I) / 2,
  renormalisation, product; `literal=True` keeps its `a / a.sum(dim=-1)`, which divides column j
  by row j's sum, `literal=False` renormalises rows);
- `chefer`: the authors' ViT relevance (hila-chefer/Transformer-MM-Explainability:
  `avg_heads`, `apply_self_attention_rules`, `generate_relevance`);
- `attnlrp.cp`: LXT 2.1's own patch of torchvision's ViT (`lxt.efficient.monkey_patch`: GELU
  identity rule, LayerNorm identity rule, CP-LRP inside nn.MultiheadAttention), input x grad;
- `transformer_attribution`: the authors' CVPR 2021 combination (hila-chefer/
  Transformer-Explainability: `compute_rollout_attention` of mean_h((grad * cam)^+), no
  renormalisation) with cam = the attention's LRP relevance from LXT's rules (A * its
  gradient / 2, the uniform rule's share of A V) and grad = the plain gradient;
- `attnlrp.attnlrp`: the same, with the attention written out and LXT's uniform rule
  (`divide_gradient`: query and key / 4, value / 2) as LXT's `wrap_attention_forward` does.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import vision_transformer as tv

torch.set_grad_enabled(True)
torch.set_default_dtype(torch.float64)


def build(
    w: dict, layers: int, heads: int, hidden: int, mlp: int, classes: int, size: int, patch: int
) -> tv.VisionTransformer:
    model = tv.VisionTransformer(size, patch, layers, heads, hidden, mlp, num_classes=classes)
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    state = {
        "conv_proj.weight": t(w["patch.kernel"].transpose(3, 2, 0, 1)),
        "conv_proj.bias": t(w["patch.bias"]),
        "class_token": t(w["class_token"]),
        "encoder.pos_embedding": t(w["position"][None]),
        "encoder.ln.weight": t(w["ln.gamma"]),
        "encoder.ln.bias": t(w["ln.beta"]),
        "heads.head.weight": t(w["head.kernel"].T),
        "heads.head.bias": t(w["head.bias"]),
    }
    for i in range(layers):
        p, k = f"encoder.layers.encoder_layer_{i}.", f"b{i}."
        qkv = [w[k + n + ".kernel"].reshape(hidden, -1).T for n in ("query", "key", "value")]
        state.update({
            p + "ln_1.weight": t(w[k + "ln_1.gamma"]), p + "ln_1.bias": t(w[k + "ln_1.beta"]),
            p + "ln_2.weight": t(w[k + "ln_2.gamma"]), p + "ln_2.bias": t(w[k + "ln_2.beta"]),
            p + "self_attention.in_proj_weight": t(np.concatenate(qkv, 0)),
            p + "self_attention.in_proj_bias": t(np.concatenate(
                [w[k + n + ".bias"].reshape(-1) for n in ("query", "key", "value")])),
            p + "self_attention.out_proj.weight": t(w[k + "out.kernel"].reshape(-1, hidden).T),
            p + "self_attention.out_proj.bias": t(w[k + "out.bias"]),
            p + "mlp.0.weight": t(w[k + "mlp1.kernel"].T), p + "mlp.0.bias": t(w[k + "mlp1.bias"]),
            p + "mlp.3.weight": t(w[k + "mlp2.kernel"].T), p + "mlp.3.bias": t(w[k + "mlp2.bias"]),
        })  # fmt: skip
    model.load_state_dict(state)
    return model.eval()


def explicit_attention(mha: torch.nn.MultiheadAttention, found: list, rule=None):
    """`mha.forward` written out (as torch computes it), keeping the probabilities in `found`;
    `rule(q, k, v)` may change the gradients of the projections."""
    heads = mha.num_heads

    def forward(query, key, value, need_weights=False, **kwargs):
        b, n, c = query.shape
        q, k, v = F.linear(query, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        if rule is not None:
            q, k, v = rule(q, k, v)
        split = lambda z: z.reshape(b, n, heads, c // heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        attn = torch.softmax(q @ k.transpose(-2, -1) / (c // heads) ** 0.5, dim=-1)
        attn.retain_grad()
        found.append(attn)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return mha.out_proj(out), None

    return forward


def rollout(attentions, discard_ratio, head_fusion, literal):
    """jacobgil/vit-explain's `rollout`, per image (its batch is one image)."""
    result = torch.eye(attentions[0].size(-1))
    with torch.no_grad():
        for attention in attentions:
            if head_fusion == "mean":
                fused = attention.mean(axis=1)
            elif head_fusion == "max":
                fused = attention.max(axis=1)[0]
            else:
                fused = attention.min(axis=1)[0]
            flat = fused.view(fused.size(0), -1)
            _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
            indices = indices[indices != 0]
            flat[0, indices] = 0
            eye = torch.eye(fused.size(-1))
            a = (fused + 1.0 * eye) / 2
            a = a / a.sum(dim=-1) if literal else a / a.sum(dim=-1, keepdim=True)
            result = torch.matmul(a, result)
    return result[0, 0, 1:]


def avg_heads(cam, grad):  # the authors' helper
    cam = cam.reshape(-1, cam.shape[-2], cam.shape[-1])
    grad = grad.reshape(-1, grad.shape[-2], grad.shape[-1])
    cam = grad * cam
    return cam.clamp(min=0).mean(dim=0)


def chefer(model, x, target):
    found: list = []
    for blk in model.encoder.layers:
        blk.self_attention.forward = explicit_attention(blk.self_attention, found)
    output = model(x)
    one_hot = torch.zeros_like(output)
    one_hot[0, target] = 1
    model.zero_grad()
    torch.sum(one_hot * output).backward(retain_graph=True)
    R = torch.eye(found[0].shape[-1])
    for cam in found:
        R += torch.matmul(avg_heads(cam.detach(), cam.grad), R)
    for blk in model.encoder.layers:
        del blk.self_attention.forward
    return R[0, 1:]


def attentions(model, x):
    found: list = []
    for blk in model.encoder.layers:
        blk.self_attention.forward = explicit_attention(blk.self_attention, found)
    model(x)
    for blk in model.encoder.layers:
        del blk.self_attention.forward
    return [a.detach() for a in found]


def _lxt_efficient() -> None:
    """Make `lxt.efficient`'s modules importable without running its package `__init__`s,
    which import LXT's Hugging Face model patches (lxt 2.1's bert patch fails to import under
    transformers >= 5). The ViT rules used here need only torch and torchvision."""
    import importlib.machinery
    import os
    import types

    import lxt

    for name in ("lxt.efficient", "lxt.efficient.models"):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [os.path.join(os.path.dirname(lxt.__file__), *name.split(".")[1:])]
            pkg.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            sys.modules[name] = pkg


def monkey_patch_vit() -> None:
    """`lxt.efficient.monkey_patch(torchvision.models.vision_transformer)`: LXT's default map
    for torchvision's ViT (`lxt.efficient.models.vit_torch.cp_LRP`), applied as `monkey_patch`
    applies it."""
    _lxt_efficient()
    from lxt.efficient.models.vit_torch import cp_LRP

    for target, patch in cp_LRP.items():
        if not patch(target):
            raise RuntimeError(f"LXT could not patch {target.__name__}")


def relevance(model, x, target, uniform):
    from lxt.efficient.rules import divide_gradient

    found: list = []
    rule = lambda q, k, v: (divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2))  # noqa: E731
    if uniform:  # the instance's forward is used instead of the class's (cp) patch
        for blk in model.encoder.layers:
            blk.self_attention.forward = explicit_attention(blk.self_attention, found, rule)
    x = x.clone().requires_grad_(True)
    model(x)[0, target].backward()
    if uniform:
        for blk in model.encoder.layers:
            del blk.self_attention.forward
    return (x * x.grad).detach()


def compute_rollout_attention(all_layer_matrices, start_layer=0):  # the authors' helper
    num_tokens = all_layer_matrices[0].shape[1]
    batch_size = all_layer_matrices[0].shape[0]
    eye = torch.eye(num_tokens).expand(batch_size, num_tokens, num_tokens)
    all_layer_matrices = [all_layer_matrices[i] + eye for i in range(len(all_layer_matrices))]
    joint_attention = all_layer_matrices[start_layer]
    for i in range(start_layer + 1, len(all_layer_matrices)):
        joint_attention = all_layer_matrices[i].bmm(joint_attention)
    return joint_attention


def transformer_attribution(model, x, target):
    """Needs LXT's patches applied (`monkey_patch_vit`)."""
    from lxt.efficient.rules import divide_gradient

    plain: list = []
    for blk in model.encoder.layers:
        blk.self_attention.forward = explicit_attention(blk.self_attention, plain)
    with _plain_layers():
        model(x)[0, target].backward()
    ruled: list = []
    rule = lambda q, k, v: (divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2))  # noqa: E731
    for blk in model.encoder.layers:
        blk.self_attention.forward = explicit_attention(blk.self_attention, ruled, rule)
    model(x)[0, target].backward()
    cams = []
    for a_plain, a_ruled in zip(plain, ruled):
        cam = (a_ruled * a_ruled.grad / 2).detach()[0]  # the LRP relevance of A
        grad = a_plain.grad[0]
        cam = (grad * cam).clamp(min=0).mean(dim=0)
        cams.append(cam.unsqueeze(0))
    for blk in model.encoder.layers:
        del blk.self_attention.forward
    return compute_rollout_attention(cams)[:, 0, 1:]


class _plain_layers:
    """Within: torch's own LayerNorm and GELU forward (LXT's patches set aside)."""

    def __enter__(self):
        self.saved = {cls: cls.forward for cls in (torch.nn.LayerNorm, torch.nn.GELU)}
        for cls in self.saved:
            cls.forward = getattr(cls, "original_forward", None) or _ORIGINAL[cls]

    def __exit__(self, *exc):
        for cls, fn in self.saved.items():
            cls.forward = fn


_ORIGINAL = {torch.nn.LayerNorm: torch.nn.LayerNorm.forward, torch.nn.GELU: torch.nn.GELU.forward}


def main(src: str, dst: str) -> None:
    data = dict(np.load(src, allow_pickle=False))
    w = {k[2:]: v for k, v in data.items() if k.startswith("w.")}
    cfg = [int(v) for v in data["config"]]
    model = build(w, *cfg)
    x = torch.tensor(data["x"].transpose(0, 3, 1, 2), dtype=torch.float64)
    targets = data["targets"]
    grid = cfg[5] // cfg[6]
    out: dict = {"logits": model(x).detach().numpy()}
    atts = [attentions(model, x[i : i + 1]) for i in range(len(x))]
    for fusion in ("mean", "max", "min"):
        for ratio in (0.0, 0.9):
            for literal in (True, False):
                key = f"rollout.{fusion}.{ratio}.{'literal' if literal else 'rows'}"
                out[key] = np.stack([
                    rollout(a, ratio, fusion, literal).reshape(grid, grid).numpy() for a in atts
                ])  # fmt: skip
    out["chefer"] = np.stack(
        [chefer(model, x[i : i + 1], t).reshape(grid, grid).numpy() for i, t in enumerate(targets)]
    )
    monkey_patch_vit()  # LXT's own rules for torchvision's ViT
    for name, uniform in (("cp", False), ("attnlrp", True)):
        rel = [relevance(model, x[i : i + 1], t, uniform) for i, t in enumerate(targets)]
        out[f"attnlrp.{name}"] = torch.cat(rel).numpy().transpose(0, 2, 3, 1)
    out["transformer_attribution"] = np.stack([
        transformer_attribution(model, x[i : i + 1], t).reshape(grid, grid).numpy()
        for i, t in enumerate(targets)
    ])  # fmt: skip
    np.savez(dst, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
