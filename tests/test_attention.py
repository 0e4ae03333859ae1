"""Transformer methods: attention rollout, Chefer (ICCV 2021 and CVPR 2021), AttnLRP
(identities, sanity, the KerasHub zoo, and the PyTorch references under `-m torch`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_vit

from xai_keras import explain, methods
from xai_keras.errors import InputError, LayerError
from xai_keras.explainers import Session
from xai_keras.explainers.attention import chefer_relevance, rollout

ROOT = Path(__file__).resolve().parents[1]
TRANSFORMER = ["attention_rollout", "chefer", "attnlrp", "transformer_attribution"]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)


def _uniform_attention(model):
    """Zero query kernels (no biases): every attention row is 1/T."""
    for layer in model.layers:
        if layer.name.startswith("mha"):
            layer._query_dense.kernel.assign(np.zeros(layer._query_dense.kernel.shape))


def test_registered_as_the_attention_family():
    assert methods("attention") == TRANSFORMER


# -- identities -----------------------------------------------------------------------------
@pytest.mark.parametrize("blocks, expected", [(1, 0.5), (2, 0.75)])
def test_rollout_of_uniform_attention_is_known(images, blocks, expected):
    """With A = U (all 1/T): one block gives 0.5 U + 0.5 I, two give 0.75 U + 0.25 I, so the
    class token's row over the patches is 0.5 / T, then 0.75 / T (T = 17 with the class
    token); without a prefix token the mean of the rows is 1 / T at every patch."""
    model = tiny_vit(blocks=blocks, bias=False, class_token=True)
    _uniform_attention(model)
    exp = explain(model, images, "attention_rollout")
    assert exp.raw.shape == (3, 4, 4)
    np.testing.assert_allclose(exp.raw, expected / 17, rtol=1e-5)
    model = tiny_vit(blocks=blocks, bias=False, class_token=False)
    _uniform_attention(model)
    np.testing.assert_allclose(explain(model, images, "attention_rollout").raw, 1 / 16, rtol=1e-5)


def _recorded(images, targets, seed=0):
    """Attention and d logit / d attention from the twin built with the scores as outputs."""
    model = tiny_vit(scores=True, seed=seed)
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        logits, *attn = model(x, training=False)
        y = tf.gather(logits, targets, batch_dims=1)
    return logits.numpy(), [a.numpy() for a in attn], [g.numpy() for g in tape.gradient(y, attn)]


def test_chefer_and_rollout_equal_a_numpy_reference_on_recorded_attention(images):
    model = tiny_vit()
    exp = explain(model, images, "chefer", targets=[0, 1, 2])
    logits, attn, grads = _recorded(images, np.array([0, 1, 2]))
    np.testing.assert_allclose(exp.logits, logits, rtol=1e-5, atol=1e-6)
    relevance = np.eye(17)[None].repeat(3, 0)
    for a, g in zip(attn, grads):
        relevance = relevance + np.maximum(g * a, 0).mean(1) @ relevance
    np.testing.assert_allclose(exp.raw, relevance[:, 0, 1:].reshape(3, 4, 4), rtol=1e-4)
    roll = np.eye(17)[None].repeat(3, 0)
    for a in attn:
        step = 0.5 * a.max(1) + 0.5 * np.eye(17)
        roll = (step / step.sum(-1, keepdims=True)) @ roll
    got = explain(model, images, "attention_rollout", head_fusion="max").raw
    np.testing.assert_allclose(got, roll[:, 0, 1:].reshape(3, 4, 4), rtol=1e-4)


def test_chefer_with_positive_gradient_equals_rollout_without_renormalising():
    """With dy/dA = 1 everywhere, Chefer's step is R += mean_h(A) R, i.e. R = prod (I + A):
    2^blocks times the rollout of the head-mean (rows of (I + A) / 2 already sum to 1)."""
    rng = np.random.default_rng(0)
    attn = [tf.nn.softmax(rng.normal(0, 2, (2, 3, 5, 5)).astype(np.float32)) for _ in range(3)]
    ones = [tf.ones_like(a) for a in attn]
    np.testing.assert_allclose(
        chefer_relevance(attn, ones).numpy(), 8 * rollout(attn).numpy(), rtol=1e-5
    )


def test_rollout_discard_keeps_the_class_token_self_attention():
    a = tf.constant(np.full((1, 1, 3, 3), 1 / 3, np.float32))
    fused = rollout([a], discard_ratio=0.5)  # 4 of 9 equal entries dropped, [0, 0] kept
    assert fused[0, 0, 0] > 0


def test_attnlrp_conserves_the_logit_on_a_bias_free_twin(images):
    """No biases, no constant tokens: with CP-LRP inside attention (A a constant) every rule
    conserves, so the input relevance sums to the target logit."""
    model = tiny_vit(bias=False, class_token=False)
    exp = explain(model, images, "attnlrp", attention_rule="cp", epsilon=0.0)
    logit = exp.logits[np.arange(3), exp.targets]
    np.testing.assert_allclose(exp.attributions.sum(axis=(1, 2, 3)), logit, rtol=1e-4)
    np.testing.assert_allclose(exp.raw.sum(axis=(1, 2)), logit, rtol=1e-4)


def test_attnlrp_softmax_rule_absorbs_only_attention_relevance(images):
    """With the uniform and softmax rules the softmax absorbs relevance (the paper's bias
    term); with zero value projections the attention carries none, and the sum is the logit
    again."""
    model = tiny_vit(bias=False, class_token=False)
    full = explain(model, images, "attnlrp", epsilon=0.0)
    logit = full.logits[np.arange(3), full.targets]
    assert not np.allclose(full.attributions.sum(axis=(1, 2, 3)), logit, rtol=1e-3)
    for layer in model.layers:
        if layer.name.startswith("mha"):
            layer._value_dense.kernel.assign(np.zeros(layer._value_dense.kernel.shape))
    none = explain(model, images, "attnlrp", epsilon=0.0)
    logit = none.logits[np.arange(3), none.targets]
    np.testing.assert_allclose(none.attributions.sum(axis=(1, 2, 3)), logit, rtol=1e-4)


def test_attnlrp_leaves_the_forward_pass_and_the_model_unchanged(images):
    model = tiny_vit()
    before = model(images).numpy()
    exp = explain(model, images, "attnlrp")
    np.testing.assert_allclose(exp.logits, before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(images).numpy(), before, rtol=1e-6)
    assert all("call" not in layer.__dict__ for layer in model._flatten_layers())


class Wrapper(keras.Model):
    def __init__(self, inner):
        super().__init__(name="wrapper")
        self.inner = inner

    def call(self, x):
        return self.inner(x)


def test_nested_and_subclassed_forms_give_the_same_maps(images):
    """A ViT nested in a model with a final softmax, and one inside a subclassed model: the
    attention layers are found and ruled all the same (the softmax is skipped: logits)."""
    vit = tiny_vit()
    inputs = keras.Input((32, 32, 3))
    nested = keras.Model(inputs, keras.layers.Softmax()(vit(inputs)))
    subclassed = Wrapper(vit)
    subclassed(images[:1])
    for method in ("chefer", "attnlrp"):  # attention read, and layers ruled
        want = explain(vit, images, method, targets=[0, 1, 2]).raw
        for model in (nested, subclassed):
            got = explain(model, images, method, targets=[0, 1, 2]).raw
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_each_kernel_traces_once_per_shape(images):
    model = tiny_vit(seed=3)
    session = Session(model, batch_size=2)
    for method in TRANSFORMER:
        explain(session, images, method)
        explain(session, images[::-1], method, targets=1)
    kernels = session.runner._kernels
    for method in TRANSFORMER:
        (key,) = [k for k in kernels if k.startswith(f"attention:{method}")]
        assert kernels[key].experimental_get_tracing_count() == 1, key


# -- sanity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["chefer", "attnlrp", "transformer_attribution"])
def test_class_sensitive_methods_change_with_the_class(images, method):
    model = tiny_vit(seed=2)
    a = explain(model, images, method, targets=0).raw
    b = explain(model, images, method, targets=1).raw
    assert not np.allclose(a, b, rtol=1e-3)


def test_rollout_is_class_agnostic(images):
    model = tiny_vit()
    a = explain(model, images, "attention_rollout", targets=0).raw
    np.testing.assert_allclose(a, explain(model, images, "attention_rollout", targets=1).raw)


def test_options_are_checked(vit_model, images):
    with pytest.raises(InputError, match="head_fusion"):
        explain(vit_model, images, "attention_rollout", head_fusion="median")
    with pytest.raises(InputError, match="discard_ratio"):
        explain(vit_model, images, "attention_rollout", discard_ratio=1.0)
    with pytest.raises(InputError, match="attention_rule"):
        explain(vit_model, images, "attnlrp", attention_rule="gamma")


@pytest.mark.parametrize("method", TRANSFORMER)
def test_models_without_keras_attention_are_refused_in_one_line(gap_model, method):
    x = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(LayerError, match="needs keras.layers.MultiHeadAttention") as err:
        explain(gap_model, x, method)
    assert "\n" not in str(err.value)
    assert method not in methods(model=gap_model)


# -- the KerasHub zoo -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def kerashub():
    pytest.importorskip("keras_hub")
    from scripts.zoo import kerashub

    return kerashub


@pytest.mark.parametrize("name", ["vit", "deit", "dinov2", "dinov2_registers"])
def test_runs_on_kerashub_vision_transformers(kerashub, name):
    model = kerashub.build(name)
    raw = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3)).astype(np.uint8)
    exps = explain(model, raw, TRANSFORMER)
    grid = 32 // 4
    for exp in exps:
        assert np.isfinite(exp.raw).all() and np.abs(exp.raw).max() > 0, exp.method
        assert exp.maps.shape == (2, 32, 32) and exp.maps.max() == pytest.approx(1)
    assert exps[0].raw.shape == exps[1].raw.shape == exps[3].raw.shape == (2, grid, grid)


def test_kerashub_models_with_custom_attention_are_refused(kerashub):
    model = kerashub.build("swin")
    with pytest.raises(LayerError, match="has none"):
        explain(model, np.zeros((1, 32, 32, 3), np.uint8), "chefer")


# -- the PyTorch references -----------------------------------------------------------------
@pytest.mark.torch
def test_equal_to_pytorch_references():
    """vit-explain's rollout, the authors' Chefer code and LXT 2.1 on a torchvision twin."""
    from scripts.common import torch_python

    if not Path(torch_python()).exists():
        pytest.skip("no .torchvenv: run scripts/torch_env.sh")
    out = subprocess.run(
        [sys.executable, "-m", "scripts.compare_transformers", "--images", "4"],
        cwd=ROOT,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "attnlrp attnlrp vs LXT" in out.stdout and "transformer_attribution" in out.stdout
