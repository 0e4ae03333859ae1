"""Layer analysis: GCMI against closed forms, then what a trained shapes model's layers carry."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras.analysis import (
    analyze,
    analyze_layers,
    collect_activations,
    copnorm,
    default_layers,
    factor_sensitivity,
    mutual_information,
    shapes_factors,
    unit_information,
)
from xai_keras.config import DataConfig
from xai_keras.data import generate_shapes
from xai_keras.errors import InputError


def _correlated(rho: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    z = np.random.default_rng(seed).standard_normal((n, 2))
    return z[:, 0], rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1]


# --- GCMI ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("rho", [0.1, 0.3, 0.6, 0.9, 0.99])
def test_gcmi_matches_the_bivariate_gaussian_closed_form(rho):
    x, y = _correlated(rho, 50_000, seed=int(rho * 100))
    assert mutual_information(x, y) == pytest.approx(-0.5 * np.log2(1 - rho**2), abs=0.02)


def test_gcmi_is_near_zero_for_independent_variables():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(10_000), rng.uniform(size=10_000)
    assert abs(mutual_information(x, y)) < 0.005
    assert abs(mutual_information(x, rng.integers(0, 4, 10_000))) < 0.005


def test_gcmi_is_invariant_to_monotonic_transforms():
    x, y = _correlated(0.7, 5_000, seed=2)
    base = mutual_information(x, y)
    assert mutual_information(np.exp(x), y**3) == pytest.approx(base, abs=1e-12)
    assert mutual_information(-x, np.arctan(y)) == pytest.approx(base, abs=1e-12)


def test_gcmi_multivariate_matches_the_gaussian_closed_form():
    cov = np.array([[1, 0.3, 0.5, 0.1], [0.3, 1, 0.2, 0.4], [0.5, 0.2, 1, 0.3], [0.1, 0.4, 0.3, 1]])
    z = np.random.default_rng(3).multivariate_normal(np.zeros(4), cov, 50_000)
    det = np.linalg.det
    expected = 0.5 * np.log2(det(cov[:2, :2]) * det(cov[2:, 2:]) / det(cov))
    assert mutual_information(z[:, :2], z[:, 2:]) == pytest.approx(expected, abs=0.02)


def test_gcmi_discrete_continuous_known_case():
    """x uniform on [0, 2], y = [x > 1]. After the copula x is N(0, 1) and each class a half
    normal with variance 1 - 2/pi, so the Gaussian model gives 0.5 log2(pi / (pi - 2)) bits:
    a lower bound on the true 1 bit, as GCMI always is."""
    x = np.random.default_rng(4).uniform(0, 2, 50_000)
    y = (x > 1).astype(np.int32)
    mi = mutual_information(x, y)
    assert mi == pytest.approx(0.5 * np.log2(np.pi / (np.pi - 2)), abs=0.01)
    assert mi < 1.0
    assert mutual_information(y, x) == pytest.approx(mi, abs=1e-12)  # symmetric
    assert mutual_information(x, y.astype(float), discrete=True) == pytest.approx(mi, abs=1e-12)


def test_gcmi_of_a_gaussian_class_mixture_is_close_below_the_true_value():
    """Three classes at means -1, 0, 1 with unit variance; true MI by numerical integration."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 50_000)
    x = (y - 1.0) + rng.standard_normal(50_000)
    grid = np.linspace(-9, 9, 20_001)
    dens = np.exp(-0.5 * (grid[None] - np.array([-1.0, 0.0, 1.0])[:, None]) ** 2) / np.sqrt(
        2 * np.pi
    )
    mix = dens.mean(0)
    true = np.trapezoid((dens * np.log2(dens / mix)).mean(0), grid)
    mi = mutual_information(x, y)
    assert true - 0.03 < mi < true + 0.01


def test_discrete_discrete_mi_of_a_copy_is_its_entropy():
    y = np.random.default_rng(6).integers(0, 4, 20_000)
    assert mutual_information(y, y) == pytest.approx(2.0, abs=0.01)


def test_unit_information_equals_per_unit_mutual_information():
    rng = np.random.default_rng(7)
    factor = rng.standard_normal(3_000)
    units = np.stack([factor * w + rng.standard_normal(3_000) for w in (0, 0.5, 2)], 1)
    vectorised = unit_information(units, factor)
    one_by_one = [mutual_information(units[:, i], factor) for i in range(3)]
    np.testing.assert_allclose(vectorised, one_by_one, atol=1e-10)
    assert vectorised[0] < 0.01 < vectorised[1] < vectorised[2]
    labels = rng.integers(0, 3, 3_000)
    np.testing.assert_allclose(
        unit_information(units, labels),
        [mutual_information(units[:, i], labels) for i in range(3)],
        atol=1e-10,
    )
    angle = rng.uniform(0, 2 * np.pi, 3_000)
    circular = np.stack([np.cos(angle), np.sin(angle)], 1)
    np.testing.assert_allclose(
        unit_information(units, circular),
        [mutual_information(units[:, i], circular) for i in range(3)],
        atol=1e-10,
    )


def test_dead_units_carry_no_information():
    rng = np.random.default_rng(8)
    units = np.column_stack([np.zeros(500), rng.standard_normal(500)])
    assert unit_information(units, rng.standard_normal(500))[0] == 0.0


def test_copnorm_gives_standard_normal_marginals_and_keeps_order():
    x = np.random.default_rng(9).exponential(size=(10_000, 2))
    c = copnorm(x)
    assert abs(c.mean()) < 1e-9 and c.std() == pytest.approx(1, abs=0.01)
    np.testing.assert_array_equal(np.argsort(c[:, 0]), np.argsort(x[:, 0]))


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((10, 2, 2)), np.zeros(10), r"\(n,\) or \(n, d\)"),
        (np.zeros(10), np.zeros(9), "same number of samples"),
        (np.array(["a"] * 10), np.zeros(10), "numeric"),
        (np.random.rand(10), np.array([0] * 9 + [1]), "more than 2 samples"),
    ],
)
def test_mutual_information_rejects_bad_input(x, y, match):
    with pytest.raises(InputError, match=match):
        mutual_information(x, y)


# --- layer analysis -----------------------------------------------------------------------------
def test_default_layers_are_the_block_outputs_and_the_dense_head(gap_model):
    assert default_layers(gap_model) == ["block1_relu1", "block2_relu1", "block3_relu1", "logits"]


def test_default_layers_follow_nested_models(gap_model):
    inp = keras.Input((32, 32, 3))
    outer = keras.Model(inp, gap_model(keras.layers.Rescaling(1.0)(inp)))
    assert default_layers(outer) == [
        f"{gap_model.name}/{p}" for p in ("block1_relu1", "block2_relu1", "block3_relu1", "logits")
    ]


def test_collect_activations_pools_like_the_layer_output(gap_model, images32):
    probe = keras.Model(gap_model.inputs, gap_model.get_layer("block2_relu1").output)
    full = probe(images32).numpy()  # (5, 16, 16, 16)
    acts, logits = collect_activations(gap_model, images32, ["block2_relu1"], progress=False)
    np.testing.assert_allclose(acts["block2_relu1"], full.mean((1, 2)), rtol=1e-5, atol=1e-6)
    cells, _ = collect_activations(gap_model, images32, ["block2_relu1"], grid=2, progress=False)
    quads = full.reshape(5, 2, 8, 2, 8, 16).mean((2, 4)).reshape(5, -1)
    np.testing.assert_allclose(cells["block2_relu1"], quads, rtol=1e-5, atol=1e-6)
    every, _ = collect_activations(
        gap_model, images32, ["block2_relu1"], grid=None, max_units=100, progress=False
    )
    assert every["block2_relu1"].shape == (5, 100)
    assert np.isin(every["block2_relu1"], full.reshape(5, -1)).all()
    head = keras.Model(gap_model.inputs, gap_model.get_layer("logits").output)
    np.testing.assert_allclose(logits, head(images32).numpy(), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def shapes_analysis(trained_shapes):
    sample = generate_shapes(1200, 64, seed=11)
    factors = shapes_factors(sample)
    model = trained_shapes.model
    channels = analyze_layers(model, sample.images, factors, progress=False)
    cells = analyze_layers(model, sample.images, factors, grid=4, progress=False)
    return channels, cells


def test_shape_information_rises_and_nuisance_information_falls_with_depth(shapes_analysis):
    channels, cells = shapes_analysis
    shape = channels.layer_mi[:, channels.column("shape")]
    assert shape[-1] > shape[0] + 1.0
    assert shape[-1] > 0.85 * np.log2(5)  # the trained model reads out almost every class
    assert shape.max() <= np.log2(5) + 0.05  # never more than the labels' entropy
    hue = channels.layer_mi[:, channels.column("hue")]
    assert hue[0] > 1.0 and hue[-1] < 0.2  # colour is seen early and discarded at the output
    position = cells.layer_mi[:, cells.column("position")]
    assert position[:-1].max() > 1.5 and position[-1] < 0.1  # kept by the convs, lost at GAP


def test_early_class_codes_do_not_transfer_across_nuisance_values_late_ones_do(shapes_analysis):
    channels, _ = shapes_analysis
    inv = channels.invariance
    assert np.nanmin(inv[0]) < 0.5  # early shape codes are tied to colour, size, texture
    assert np.nanmin(inv[-1]) > 0.8  # late ones read the shape whatever the nuisance
    assert np.nanmin(inv[-1]) > np.nanmin(inv[0]) + 0.4


def test_per_layer_summaries_are_consistent(shapes_analysis):
    channels, _ = shapes_analysis
    assert channels.mean_mi.shape == channels.max_mi.shape == channels.layer_mi.shape
    assert (channels.max_mi >= channels.mean_mi - 1e-12).all()
    assert (channels.tuned_share.sum(1) <= 1 + 1e-9).all()
    # The logits are five units, each the evidence for one shape: all tuned to the shape.
    assert channels.tuned_share[-1, channels.column("shape")] == 1.0
    d = channels.to_dict()
    assert set(d["layer_mi_bits"]) == set(channels.layers)
    assert "| block1_relu1 |" in channels.to_markdown()


def test_sensitivity_names_the_shape_for_a_good_model_and_the_marker_for_a_shortcut(
    trained_shapes, shortcut_shapes
):
    base = generate_shapes(100, 64, seed=12, spurious_cue=True, cue_strength=0.0)
    good = factor_sensitivity(trained_shapes.model, base, variations=2)
    flips = dict(zip(good.factors, good.flip_rate, strict=True))
    assert flips["shape"] > 0.8
    assert max(v for k, v in flips.items() if k != "shape") < 0.2
    bad = factor_sensitivity(shortcut_shapes.model, base, variations=2)
    flips = dict(zip(bad.factors, bad.flip_rate, strict=True))
    assert flips["cue"] > 0.5 and flips["cue"] > flips["shape"]


def test_analyze_writes_report_figures_and_tensorboard(trained_shapes, tmp_path):
    report = analyze(
        trained_shapes.model,
        tmp_path / "out",
        n=600,
        cells=2,
        sensitivity_samples=40,
        log_dir=tmp_path / "tb",
        progress=False,
    )
    names = {"information", "depth", "invariance", "tuning", "sensitivity", "markdown", "json"}
    assert set(report.files) == names
    assert all(p.exists() and p.stat().st_size > 0 for p in report.files.values())
    assert not list((tmp_path / "out").glob("*.tmp*"))
    text = report.files["markdown"].read_text()
    assert "**shape** rises with depth" in text and "![depth](depth.png)" in text
    tags = set()
    for event in (tmp_path / "tb").glob("events.out.tfevents.*"):
        for e in tf.compat.v1.train.summary_iterator(str(event)):
            tags |= {v.tag for v in e.summary.value}
    assert {"analysis/information", "analysis/depth", "analysis/report"} <= tags


def test_analysis_input_errors(gap_model, images32):
    with pytest.raises(InputError, match="factor 'class' is not among"):
        analyze_layers(gap_model, images32, [], target="class")
    with pytest.raises(InputError, match="grid"):
        collect_activations(gap_model, images32, grid=0)
    flat = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)])
    with pytest.raises(InputError, match=r"\(N, S, S, 1\|3\)"):
        analyze(flat)
    with pytest.raises(InputError, match="dataset 'shapes'"):
        analyze(gap_model, data=DataConfig(name="digits"))


def test_cli_analyze_uses_the_runs_config_and_prints_findings(trained_shapes, tmp_path, capsys):
    from xai_keras.cli import main

    out = tmp_path / "analysis"
    argv = ["analyze", "--model", str(trained_shapes.model_path), "--out", str(out)]
    code = main([*argv, "--n", "400", "--cells", "0", "--sensitivity", "30", "--quiet"])
    assert code == 0
    assert (out / "analysis.md").exists() and (out / "information.png").exists()
    assert (trained_shapes.model_path.parent / "config.yaml").exists()  # read beside the model
    assert main(["analyze", "--model", str(trained_shapes.model_path), "--dataset", "digits"]) == 2
    assert "only such dataset is 'shapes'" in capsys.readouterr().err


def test_findings_tell_a_noisy_plateau_from_a_real_fall():
    from xai_keras.analysis.report import trend

    layers = ["b1", "b2", "b3", "logits"]
    assert "rises with depth" in trend("shape", np.array([0.2, 1.1, 2.22, 2.14]), layers)
    assert "peaks at b2" in trend("hue", np.array([2.0, 2.1, 1.0, 0.01]), layers)
    assert "no layer carries it" in trend("position", np.array([0.0, 0.01, 0.0, 0.0]), layers)
