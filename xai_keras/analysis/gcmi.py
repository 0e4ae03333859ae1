"""Gaussian-copula mutual information (GCMI; Ince et al., 2017), vectorised over units.

Each continuous variable is copula-normalised (its ranks mapped to standard-normal quantiles).
That keeps all the information it shares with anything else, since mutual information does not
change under monotonic transforms, and it makes the marginals exactly Gaussian. The MI of the
Gaussian with those marginals then has a closed form in covariance log-determinants, with an
analytic correction for the bias of finite samples. The result is a lower bound on the true MI,
exact when the dependence (the copula) is Gaussian. All results are in bits.

`unit_information` does this for thousands of units against one factor at once: each unit is
its own one-dimensional variable, and the covariances of every (unit, factor) pair are built
from a few matrix products.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri, psi

from xai_keras.errors import InputError

__all__ = ["copnorm", "mutual_information", "unit_information"]

_LN2 = np.log(2.0)
_CHUNK = 4096  # units per block: bounds memory to about n * _CHUNK floats


def copnorm(x: np.ndarray) -> np.ndarray:
    """Copula-normalise along axis 0: ranks -> standard-normal quantiles (ties by order)."""
    x = np.asarray(x)
    ranks = np.argsort(np.argsort(x, axis=0, kind="stable"), axis=0, kind="stable")
    return ndtri((ranks + 1.0) / (x.shape[0] + 1.0))


def _entropy(cov: np.ndarray, n: int | np.ndarray) -> np.ndarray:
    """Bias-corrected entropy (nats, without the constant that cancels in MI) of Gaussians
    with covariance `cov` (..., d, d) estimated from `n` samples with ddof=1."""
    d = cov.shape[-1]
    n = np.asarray(n, np.float64)[..., None]
    _, logdet = np.linalg.slogdet(cov)
    dterm = (_LN2 - np.log(n[..., 0] - 1.0)) / 2.0
    psiterms = psi((n - np.arange(1, d + 1)) / 2.0).sum(-1) / 2.0
    return 0.5 * logdet - d * dterm - psiterms


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0)


def _mi_cc(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """MI between `x` (n, B, dx) and a shared `y` (n, dy), both copula-normalised: (B,)."""
    n, _, dx = x.shape
    x, y = _centred(x), _centred(y)
    joint = np.empty((x.shape[1], dx + y.shape[1], dx + y.shape[1]))
    joint[:, :dx, :dx] = np.einsum("nbi,nbj->bij", x, x) / (n - 1)
    joint[:, :dx, dx:] = np.einsum("nbi,nj->bij", x, y) / (n - 1)
    joint[:, dx:, :dx] = np.swapaxes(joint[:, :dx, dx:], 1, 2)
    joint[:, dx:, dx:] = y.T @ y / (n - 1)
    cxx, cyy = joint[:, :dx, :dx], joint[:, dx:, dx:]
    mi = _entropy(cxx, n) + _entropy(cyy, n) - _entropy(joint, n)
    return mi / _LN2


def _mi_cd(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """MI between `x` (n, B, dx), copula-normalised, and discrete `labels` (n,): (B,).

    H(X) - sum_k p_k H(X | Y=k), each entropy from a Gaussian fitted to its samples.
    """
    n, _, _ = x.shape
    xc = _centred(x)
    mi = _entropy(np.einsum("nbi,nbj->bij", xc, xc) / (n - 1), n)
    for k in np.unique(labels):
        xk = x[labels == k]
        nk = len(xk)
        xk = _centred(xk)
        mi = mi - nk / n * _entropy(np.einsum("nbi,nbj->bij", xk, xk) / (nk - 1), nk)
    return mi / _LN2


def _mi_dd(x: np.ndarray, y: np.ndarray) -> float:
    """Plug-in MI of two discrete variables with the Miller-Madow bias correction, in bits."""
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(joint, (xi, yi), 1.0)
    n = joint.sum()
    p = joint / n
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    plugin = float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())
    bins = nz.sum() - (px > 0).sum() - (py > 0).sum() + 1
    return (plugin - bins / (2 * n)) / _LN2


def _as_samples(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim not in (1, 2) or a.shape[0] < 3:
        raise InputError(
            f"`{name}` must hold samples along axis 0, shaped (n,) or (n, d) with n >= 3. "
            f"Received shape {a.shape}."
        )
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise InputError(f"`{name}` must be numeric. Received dtype {a.dtype}.")
    return a


def _is_discrete(a: np.ndarray) -> bool:
    """The dtype rule: integer or boolean 1-D arrays are class labels."""
    return a.ndim == 1 and (np.issubdtype(a.dtype, np.integer) or a.dtype == bool)


def _check_classes(labels: np.ndarray, name: str, dims: int) -> None:
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() <= dims + 1:
        raise InputError(
            f"Every class of `{name}` needs more than {dims + 1} samples to fit a Gaussian; "
            f"the smallest has {counts.min()}. Use more samples or merge rare classes."
        )


def _as_2d(a: np.ndarray) -> np.ndarray:
    return a[:, None] if a.ndim == 1 else a


def mutual_information(
    x: np.ndarray,
    y: np.ndarray,
    discrete: bool | None = None,
) -> float:
    """GCMI between `x` and `y` in bits; each is (n,) or (n, d) samples.

    Args:
        x: samples of the first variable.
        y: samples of the second variable.
        discrete: whether `y` holds class labels. None applies the dtype rule to both:
            1-D integer or boolean arrays are discrete, anything else is continuous.

    Continuous-continuous and continuous-discrete pairs use GCMI; two discrete variables
    use the plug-in estimate with the Miller-Madow correction.
    """
    x, y = _as_samples(x, "x"), _as_samples(y, "y")
    if len(x) != len(y):
        raise InputError(f"`x` and `y` need the same number of samples: {len(x)} != {len(y)}.")
    x_discrete = _is_discrete(x)
    y_discrete = _is_discrete(y) if discrete is None else discrete
    if y_discrete and y.ndim != 1:
        raise InputError(f"Discrete `y` must be 1-D class labels. Received shape {y.shape}.")
    if x_discrete and y_discrete:
        return _mi_dd(x, y)
    if x_discrete:  # MI is symmetric: put the labels second
        x, y, y_discrete = y, x, True
    x = copnorm(_as_2d(x).astype(np.float64))[:, None, :]
    if y_discrete:
        _check_classes(y, "y", x.shape[-1])
        return float(_mi_cd(x, y)[0])
    return float(_mi_cc(x, copnorm(_as_2d(y).astype(np.float64)))[0])


def unit_information(
    units: np.ndarray,
    factor: np.ndarray,
    discrete: bool | None = None,
) -> np.ndarray:
    """GCMI in bits between each unit (column of `units`, (n, U)) and `factor`, as (U,).

    `factor` is (n,) or (n, d) (e.g. an angle as its cosine and sine); `discrete` as in
    `mutual_information`. Vectorised: thousands of units take a fraction of a second.
    """
    units = _as_samples(units, "units")
    factor = _as_samples(factor, "factor")
    if units.ndim != 2:
        raise InputError(f"`units` must be (n, U). Received shape {units.shape}.")
    if len(units) != len(factor):
        raise InputError(
            f"`units` and `factor` need the same number of samples: {len(units)} != {len(factor)}."
        )
    is_discrete = _is_discrete(factor) if discrete is None else discrete
    if is_discrete:
        _check_classes(factor, "factor", 1)
    else:
        y = copnorm(_as_2d(factor).astype(np.float64))
    out = []
    for start in range(0, units.shape[1], _CHUNK):
        x = copnorm(units[:, start : start + _CHUNK].astype(np.float64))[..., None]
        out.append(_mi_cd(x, factor) if is_discrete else _mi_cc(x, y))
    mi = np.concatenate(out) if out else np.zeros(0)
    constant = np.ptp(units, axis=0) == 0  # a dead unit: its ranks would only be sample order
    return np.where(constant, 0.0, mi)
