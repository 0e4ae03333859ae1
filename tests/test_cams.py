"""The newer CAMs (HiResCAM, Finer-CAM, ShapleyCAM, KPCA-CAM): identities and hand-computed
cases on tiny models, option checks, and (marked `torch`) pytorch-grad-cam on twins."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from xai_keras import explain
from xai_keras.errors import InputError
from xai_keras.explainers.base import get_method
from xai_keras.explainers.cam import shares_pass

ROOT = Path(__file__).resolve().parents[1]
TORCH_PYTHON = ROOT / ".torchvenv" / "bin" / "python"  # bash scripts/torch_env.sh


def _quiet_explain(*args, **kwargs):
    """`explain` without the "variants coincide at this layer" warning (expected here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return explain(*args, **kwargs)


def _feature_model(shape: tuple, dense: np.ndarray, bias: np.ndarray | None = None, head="gap"):
    """Input -> ReLU "feat" (the explained layer: A = the non-negative input) -> GAP or Flatten
    -> Dense(softmax) with the given kernel."""
    inputs = keras.Input(shape)
    feat = keras.layers.ReLU(name="feat")(inputs)
    pooled = (
        keras.layers.GlobalAveragePooling2D()(feat)
        if head == "gap"
        else keras.layers.Flatten()(feat)
    )
    out = keras.layers.Dense(dense.shape[1], activation="softmax", name="dense")(pooled)
    model = keras.Model(inputs, out)
    bias = np.zeros(dense.shape[1]) if bias is None else bias
    model.get_layer("dense").set_weights([dense.astype(np.float32), bias.astype(np.float32)])
    return model


# -- HiResCAM -------------------------------------------------------------------------------
def test_hirescam_equals_gradcam_on_gap_dense_head(gap_model, images32):
    """Behind GAP + dense the gradient is w_kc / hw at every position, so
    sum_k g_k A_k = sum_k mean(g_k) A_k: HiResCAM = Grad-CAM exactly."""
    for targets in (None, [0, 1, 2, 3, 0]):
        g = explain(gap_model, images32, method="gradcam", targets=targets)
        with pytest.warns(UserWarning, match="hirescam equals gradcam"):
            h = explain(gap_model, images32, method="hirescam", targets=targets)
        np.testing.assert_allclose(h.raw, g.raw, rtol=1e-5, atol=1e-8)


def test_hirescam_is_gradient_times_activation_by_hand():
    """Flatten head: each position has its own gradient (the dense row of that position), so
    HiResCAM = relu(sum_k W[(i,j,k), c] A[i,j,k]) while Grad-CAM averages the rows."""
    rng = np.random.default_rng(0)
    dense = rng.normal(0, 1, (2 * 2 * 3, 2))
    model = _feature_model((2, 2, 3), dense, head="flatten")
    x = rng.uniform(0, 1, (1, 2, 2, 3)).astype(np.float32)
    exp = explain(model, x, method="hirescam", layer="feat", targets=1)
    g = dense[:, 1].reshape(2, 2, 3)
    np.testing.assert_allclose(exp.raw[0], np.maximum((g * x[0]).sum(-1), 0), rtol=1e-5)
    gradcam = explain(model, x, method="gradcam", layer="feat", targets=1).raw[0]
    np.testing.assert_allclose(
        gradcam, np.maximum((g.mean((0, 1)) * x[0]).sum(-1), 0), rtol=1e-5, atol=1e-7
    )
    assert not np.allclose(exp.raw[0], gradcam)


# -- Finer-CAM ------------------------------------------------------------------------------
def _finer_model():
    """4 classes on GAP of 2 channels (means 2 and 1 in the test image): logits
    [3.5, 1, 2.75, -2], so the class closest to the top class 0 is 2, not the next index."""
    dense = np.array([[1.0, 0.0, 1.0, -1.0], [0.5, 1.0, -0.5, 0.0]])
    model = _feature_model((2, 2, 2), dense, np.array([1.0, 0.0, 1.25, 0.0]))
    x = np.zeros((1, 2, 2, 2), np.float32)
    x[0, :, :, 0] = [[1.0, 3.0], [2.0, 2.0]]
    x[0, :, :, 1] = [[1.0, 0.5], [1.5, 1.0]]
    return model, x, dense


def test_finercam_by_hand_against_its_closest_class():
    """One comparison class: the explained score is y_c - alpha y_d (the probability weight
    cancels), so the channel weights are (W_c - alpha W_d) / hw."""
    model, x, dense = _finer_model()
    np.testing.assert_allclose(explain(model, x).logits[0], [3.5, 1.0, 2.75, -2.0], rtol=1e-6)
    for alpha in (1.0, 0.5):
        exp = explain(model, x, method="finercam", layer="feat", comparisons=1, alpha=alpha)
        assert exp.targets[0] == 0
        w = (dense[:, 0] - alpha * dense[:, 2]) / 4
        np.testing.assert_allclose(exp.raw[0], np.maximum(x[0] @ w, 0), rtol=1e-5, atol=1e-7)
    # Class 1 (logit 1) is 2.5 from class 0, 1.75 from class 2 and 3 from class 3: d = 2.
    exp = explain(model, x, method="finercam", layer="feat", comparisons=1, targets=1)
    w = (dense[:, 1] - dense[:, 2]) / 4
    np.testing.assert_allclose(exp.raw[0], np.maximum(x[0] @ w, 0), rtol=1e-5, atol=1e-7)


def test_finercam_alpha_zero_is_gradcam_and_comparisons_clamp(gap_model, images32):
    """alpha = 0: S = sum_d p_d y_c / sum_d p_d = y_c, Grad-CAM. More comparisons than other
    classes are clamped to the classes there are."""
    g = explain(gap_model, images32, method="gradcam")
    f = explain(gap_model, images32, method="finercam", alpha=0.0)
    np.testing.assert_allclose(f.raw, g.raw, rtol=1e-4, atol=1e-8)
    all3 = explain(gap_model, images32, method="finercam", comparisons=3)  # 4 classes
    many = explain(gap_model, images32, method="finercam", comparisons=50)
    np.testing.assert_allclose(many.raw, all3.raw, rtol=1e-5, atol=1e-9)


# -- ShapleyCAM -----------------------------------------------------------------------------
def test_shapleycam_by_hand_on_gap_dense():
    """GAP + dense, A = x, m = mean(A), y = W^T m + b. ReST: y_c + log p_c = 2 y_c - LSE(y),
    g = (2 W_c - W p) / hw at every position, and H A = -(W S W^T m) / hw per position with
    S = diag(p) - p p^T, so w = (2 W_c - W p + W S W^T m / 2) / hw."""
    rng = np.random.default_rng(3)
    dense = rng.normal(0, 1, (3, 4))
    bias = rng.normal(0, 0.5, 4)
    model = _feature_model((3, 3, 3), dense, bias)
    x = rng.uniform(0, 2, (2, 3, 3, 3)).astype(np.float32)
    exp = explain(model, x, method="shapleycam", layer="feat", targets=[1, 2])
    logit = explain(model, x, method="shapleycam", layer="feat", targets=[1, 2], utility="logit")
    gradcam = explain(model, x, method="gradcam", layer="feat", targets=[1, 2])
    for i, c in enumerate([1, 2]):
        m = x[i].mean((0, 1)).astype(np.float64)
        y = m @ dense + bias
        p = np.exp(y - y.max()) / np.exp(y - y.max()).sum()
        s = np.diag(p) - np.outer(p, p)
        w = (2 * dense[:, c] - dense @ p + 0.5 * dense @ s @ dense.T @ m) / 9
        np.testing.assert_allclose(exp.raw[i], np.maximum(x[i] @ w, 0), rtol=1e-4, atol=1e-6)
    # The logit is linear in A here: no second-order term, Grad-CAM exactly.
    np.testing.assert_allclose(logit.raw, gradcam.raw, rtol=1e-5, atol=1e-8)


# -- KPCA-CAM -------------------------------------------------------------------------------
def _kpca_model(x_shape):
    return _feature_model(x_shape, np.ones((x_shape[-1], 2)))


def test_kpcacam_linear_kernel_is_pca_by_hand():
    """Linear kernel = PCA: positions on the line (t, t) at t = 0, 1, 2, 5 have centred
    scores sqrt(2) * (t - 2), and the largest magnitude (t = 5) is made positive."""
    x = np.zeros((1, 2, 2, 2), np.float32)
    t = np.array([[0.0, 1.0], [2.0, 5.0]])
    x[0, ..., 0] = x[0, ..., 1] = t
    raw = explain(_kpca_model((2, 2, 2)), x, method="kpcacam", layer="feat", kernel="linear").raw
    np.testing.assert_allclose(raw[0], np.maximum(np.sqrt(2) * (t - 2), 0), rtol=1e-5, atol=1e-6)
    # Reversed, the largest magnitude is at t = 0 (score -2 sqrt 2 before the flip).
    x2 = np.zeros_like(x)
    x2[0, ..., 0] = x2[0, ..., 1] = 5 - t
    raw2 = explain(_kpca_model((2, 2, 2)), x2, method="kpcacam", layer="feat", kernel="linear")
    np.testing.assert_allclose(raw2.raw[0], raw[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf", "poly", "cosine"])
def test_kpcacam_kernels_match_a_numpy_kernel_pca(kernel):
    """Each kernel against a direct numpy kernel PCA (scikit-learn's definitions: centred
    kernel matrix, eigenvector * sqrt(eigenvalue), largest magnitude positive)."""
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (2, 3, 3, 4)).astype(np.float32)
    raw = explain(_kpca_model((3, 3, 4)), x, method="kpcacam", layer="feat", kernel=kernel).raw
    for i in range(2):
        a = x[i].reshape(9, 4).astype(np.float64)
        a = a - a.mean(0)
        dot, gamma = a @ a.T, 1 / 4
        k = {
            "sigmoid": np.tanh(gamma * dot + 1),
            "poly": (gamma * dot + 1) ** 3,
            "rbf": np.exp(-gamma * (np.diag(dot)[:, None] + np.diag(dot)[None] - 2 * dot)),
            "cosine": dot / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(a, axis=1)),
        }[kernel]
        n = np.full((9, 9), 1 / 9)
        kc = k - n @ k - k @ n + n @ k @ n
        values, vectors = np.linalg.eigh(kc)
        v = vectors[:, -1] * np.sqrt(values[-1])
        v = v * np.sign(v[np.argmax(np.abs(v))])
        np.testing.assert_allclose(raw[i], np.maximum(v, 0).reshape(3, 3), rtol=1e-4, atol=1e-6)


def test_kpcacam_options_are_not_mixed_up_between_calls(gap_model, images32):
    """Compiled kernels are keyed by the options they trace: a second call with another
    kernel must not reuse the first one's graph, alone or in a shared pass."""
    sigmoid = explain(gap_model, images32, method="kpcacam").raw
    rbf = explain(gap_model, images32, method="kpcacam", kernel="rbf", gamma=0.5).raw
    assert not np.allclose(sigmoid, rbf)
    together = _quiet_explain(gap_model, images32, method=["gradcam", "kpcacam"], kernel="rbf")
    np.testing.assert_allclose(
        together[1].raw,
        explain(gap_model, images32, method="kpcacam", kernel="rbf").raw,
        rtol=1e-5,
        atol=1e-7,
    )


# -- passes, options ----------------------------------------------------------------------
def test_which_new_cams_share_the_gradcam_pass(gap_model, images32):
    """HiResCAM and KPCA-CAM come from the shared (activation, gradient) pass; Finer-CAM
    (another score) and ShapleyCAM (a second backward pass) run their own kernels, and a
    list of methods gives each the same maps as a call of its own."""
    made = {n: get_method(n).create(gap_model) for n in ("hirescam", "kpcacam", "finercam")}
    made["shapleycam"] = get_method("shapleycam").create(gap_model)
    assert shares_pass(made["hirescam"]) and shares_pass(made["kpcacam"])
    assert not shares_pass(made["finercam"]) and not shares_pass(made["shapleycam"])
    names = ["gradcam", "hirescam", "kpcacam", "finercam", "shapleycam"]
    together = _quiet_explain(gap_model, images32, method=names)
    for name, exp in zip(names, together):
        alone = _quiet_explain(gap_model, images32, method=name)
        np.testing.assert_allclose(exp.raw, alone.raw, rtol=1e-5, atol=1e-8, err_msg=name)


def test_aliases():
    assert get_method("HiRes-CAM").name == "hirescam"
    assert get_method("kpca_cam").name == "kpcacam"
    assert get_method("Finer-CAM").name == "finercam"
    assert get_method("shapley-cam").name == "shapleycam"


@pytest.mark.parametrize(
    "method,options,message",
    [
        ("finercam", {"comparisons": 0}, "an int >= 1"),
        ("finercam", {"comparisons": 2.0}, "an int >= 1"),
        ("finercam", {"alpha": -1}, "a finite number >= 0"),
        ("finercam", {"alpha": float("nan")}, "a finite number >= 0"),
        ("shapleycam", {"utility": "softmax"}, "one of 'rest', 'logit'"),
        ("kpcacam", {"kernel": "laplacian"}, "one of 'sigmoid'"),
        ("kpcacam", {"gamma": 0}, "None or a finite number > 0"),
    ],
)
def test_bad_options_are_refused(gap_model, images32, method, options, message):
    with pytest.raises(InputError, match=message):
        explain(gap_model, images32, method=method, **options)


def test_shapleycam_rest_needs_probabilities(images32):
    """A linear head (regression values) has no class probabilities for ReST."""
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c")(inputs)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, out)
    with pytest.raises(InputError, match="utility='logit'"):
        explain(model, images32, method="shapleycam", head="linear")
    exp = explain(model, images32, method="shapleycam", head="linear", utility="logit")
    assert exp.raw.shape == (5, 30, 30)


def test_finercam_needs_two_classes(images32):
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(h)))
    with pytest.raises(InputError, match="compares the target with other classes"):
        explain(model, images32, method="finercam")


# -- the oracle ---------------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.skipif(not TORCH_PYTHON.exists(), reason=f"no PyTorch oracle venv at {TORCH_PYTHON}")
def test_new_cams_equal_pytorch_grad_cam_on_twins():
    """scripts/compare_cams.py: pytorch-grad-cam 1.5.7 on PyTorch twins, correlation >= 0.99
    per method, model, layer and image (it measures 1.00000000 to 8 decimals)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.compare_cams",
            "--threshold",
            "0.99",
            "--torch-python",
            str(TORCH_PYTHON),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BELOW THRESHOLD" not in done.stdout
