"""Shared fixtures: tiny models built in the test, and one small model trained on shapes."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from xai_keras.config import ModelConfig, load_config  # noqa: E402
from xai_keras.models import build_cnn  # noqa: E402

# Hypothesis (tests/test_generated_input.py): the same cases every run and no example database
# ("ci", the default), so CI is reproducible; no deadline, as a kernel's first call traces.
# HYPOTHESIS_PROFILE=explore draws new cases each run (bug hunting; a failure prints the case).
settings.register_profile(
    "ci",
    deadline=None,
    database=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile("explore", settings.get_profile("ci"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Method options that keep the contract tests fast (fewer samples, masks, steps).
FAST_OPTIONS = {
    "scorecam": {},
    "smoothgrad": {"samples": 4},
    "integrated_gradients": {"steps": 8},
    "occlusion": {"patch": 8},
    "rise": {"masks": 64},
    "lime": {"samples": 64},
    "kernelshap": {"samples": 64},
}


@pytest.fixture(scope="session")
def gap_model() -> keras.Model:
    """The project's CNN (GAP + dense head, BN, softmax), untrained but with seeded weights."""
    keras.utils.set_random_seed(1)
    return build_cnn(ModelConfig(filters=[8, 16, 16], dropout=0.1), (32, 32, 3), 4)


class ClassToken(keras.layers.Layer):
    """Prepends a learnt class token to (N, T, C) tokens."""

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, shape[-1]), initializer="random_normal")

    def call(self, x):
        token = keras.ops.tile(self.token, (keras.ops.shape(x)[0], 1, 1))
        return keras.ops.concatenate([token, x], axis=1)


class PositionEmbedding(keras.layers.Layer):
    """Adds a learnt embedding per token."""

    def build(self, shape):
        self.table = self.add_weight(shape=(1, *shape[1:]), initializer="random_normal")

    def call(self, x):
        return x + self.table


def tiny_vit(
    blocks: int = 2,
    bias: bool = True,
    class_token: bool = True,
    classes: int = 4,
    scores: bool = False,
    seed: int = 0,
) -> keras.Model:
    """A functional ViT on 32x32 images: 8x8 patches (4x4 grid), width 16, 2 heads, keras
    MultiHeadAttention, GELU MLP, class-token (or mean-token) head, logits out. With `bias`
    False: no biases, no LayerNorm offsets, no position embedding (with `class_token` False
    too, a twin on which relevance is conserved). With `scores`, each block's attention
    probabilities are extra outputs (same weights for the same seed)."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(16, 8, strides=8, use_bias=bias, name="patches")(x)
    x = L.Reshape((16, 16))(x)
    if class_token:
        x = ClassToken(name="cls")(x)
    if bias:
        x = PositionEmbedding(name="pos")(x)
    found = []
    for b in range(blocks):
        h = L.LayerNormalization(center=bias, name=f"ln{b}a")(x)
        mha = L.MultiHeadAttention(2, 8, use_bias=bias, name=f"mha{b}")
        if scores:
            h, a = mha(h, h, return_attention_scores=True)
            found.append(a)
        else:
            h = mha(h, h)
        x = L.Add()([x, h])
        h = L.LayerNormalization(center=bias, name=f"ln{b}b")(x)
        h = L.Dense(32, activation="gelu", use_bias=bias, name=f"mlp{b}a")(h)
        x = L.Add()([x, L.Dense(16, use_bias=bias, name=f"mlp{b}b")(h)])
    x = L.LayerNormalization(center=bias, name="ln")(x)
    x = L.Lambda(lambda t: t[:, 0])(x) if class_token else L.GlobalAveragePooling1D()(x)
    logits = L.Dense(classes, use_bias=bias, name="head")(x)
    return keras.Model(inputs, [logits, *found] if scores else logits, name="tiny_vit")


@pytest.fixture(scope="session")
def vit_model() -> keras.Model:
    """`tiny_vit()`: the model the contract tests explain with the transformer methods."""
    return tiny_vit()


def model_for(method: str, gap_model: keras.Model, vit_model: keras.Model) -> keras.Model:
    """The contract tests' model for `method`: the tiny ViT for transformer methods."""
    from xai_keras.explainers.base import get_method

    return vit_model if get_method(method).unsupported(gap_model) else gap_model


@pytest.fixture(scope="session")
def images32() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (5, 32, 32, 3)).astype(np.float32)


def _train_small(out, *extra: str):
    """The built-in "shapes_small" run (also what the benchmarks train) into `out`."""
    from xai_keras.training import train

    return train(load_config("shapes_small", [f"out_dir={out}", *extra]), verbose=0)


@pytest.fixture(scope="session")
def trained_shapes(tmp_path_factory):
    """A small CNN trained on the shapes dataset through the real `train()` pipeline."""
    return _train_small(tmp_path_factory.mktemp("shapes_run"))


@pytest.fixture(scope="session")
def shortcut_shapes(tmp_path_factory):
    """The same CNN trained with the planted corner marker linked to the class."""
    return _train_small(tmp_path_factory.mktemp("shortcut_run"), "data.spurious_cue=true")


def pytest_collection_modifyitems(config, items):
    """Tests marked `torch` run a PyTorch oracle in another venv (slow, and not part of the
    default run): they are skipped unless the `-m` expression names `torch`."""
    if "torch" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="PyTorch oracle test; select it with -m torch")
    for item in items:
        if item.get_closest_marker("torch") is not None:
            item.add_marker(skip)
