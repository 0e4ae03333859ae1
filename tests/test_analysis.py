"""Layer analysis: GCMI against closed forms, then what a trained shapes model's layers carry."""

from __future__ import annotations

import numpy as np
import pytest

from xai_keras.analysis import copnorm, mutual_information, unit_information
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
