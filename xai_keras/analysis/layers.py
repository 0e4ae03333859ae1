"""What each layer carries about each generative factor, and how invariant it is.

For every chosen layer the activations of a factor-controlled sample are collected in one
compiled pass per batch (`LayerTaps`) and pooled to units: one per channel by default
(`grid=1`), one per channel and cell of a `grid` x `grid` partition, or every unit
(`grid=None`). Then, in bits:

- unit MI: GCMI between each unit and each factor, (units, factors) per layer;
- layer MI: the MI between each factor and its cross-validated linear read-out from the
  layer's leading principal components. By data processing it is a lower bound on what the
  layer as a whole carries (single units understate distributed codes), and for labels it can
  never exceed their entropy, which multivariate Gaussian models of class-conditional
  activations do (they report 9 bits about 5 classes when the classes are well separated);
- invariance to a nuisance factor: the class information a linear decoder reads at each value
  (bin) of the nuisance when it was trained at the other values, over what a decoder trained at
  the same value reads, with equal training sizes (cross-condition generalisation). A class
  code that does not depend on the nuisance keeps the ratio near 1; a code that changes with it
  (the class is read from different units at different positions) falls below 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers as kl
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold, cross_val_predict
from tqdm import tqdm

from xai_keras.analysis.factors import Factor
from xai_keras.analysis.gcmi import mutual_information, unit_information
from xai_keras.errors import InputError
from xai_keras.explainers.graph import LayerTaps
from xai_keras.explainers.layers import RESAMPLING, conv_candidates, output_shape, walk_layers

__all__ = ["LayerAnalysis", "analyze_layers", "collect_activations", "default_layers"]

_TUNED_BITS = 0.05  # a unit is "tuned" to its most informative factor above this
_FOLDS = 5


def default_layers(model: keras.Model) -> list[str]:
    """The last layer at each spatial resolution (after its conv, norm and activation) and
    every Dense layer, in depth order: one entry per conv block and the dense head."""
    spatial = {
        id(lay): tuple(output_shape(lay)[1:3])
        for _, lay in conv_candidates(model)
        if not isinstance(lay, (*RESAMPLING, kl.InputLayer))
    }
    chosen: list[str] = []
    group: tuple | None = None
    for path, layer in walk_layers(model):
        hw = spatial.get(id(layer))
        if hw is not None:
            if hw == group and chosen:
                chosen[-1] = path  # a later layer at the same resolution
            else:
                chosen.append(path)
            group = hw
        elif isinstance(layer, kl.Dense):
            chosen.append(path)
            group = None
    return chosen


def _unit_picker(shape: tuple, grid: int | None, max_units: int | None, seed: int) -> Any:
    """Indices of the pooled units to keep (None keeps all), fixed before the first batch."""
    if len(shape) == 4 and grid is not None:
        count = grid * grid * shape[-1]
    else:
        count = int(np.prod(shape[1:]))
    if max_units is None or count <= max_units:
        return None
    rng = np.random.default_rng(seed)
    return tf.constant(np.sort(rng.choice(count, max_units, replace=False)), tf.int32)


def _pool(a: tf.Tensor, grid: int | None) -> tf.Tensor:
    if a.shape.rank == 4 and grid == 1:
        return tf.reduce_mean(a, axis=[1, 2])
    if a.shape.rank == 4 and grid is not None:
        a = tf.image.resize(a, (grid, grid), method="area")
    return tf.reshape(a, (tf.shape(a)[0], -1))


def collect_activations(
    model: keras.Model,
    images: np.ndarray,
    layers: list[str] | None = None,
    grid: int | None = 1,
    batch_size: int = 128,
    max_units: int | None = 4096,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pooled unit activations `{layer path: (n, units)}` and the logits `(n, classes)`.

    Pooling runs inside the compiled pass, so only the pooled units leave it; `max_units`
    keeps a fixed random subset of larger layers (e.g. unpooled early layers).
    """
    if grid is not None and grid < 1:
        raise InputError(f"`grid` must be a positive integer or None. Received: grid={grid}.")
    taps = LayerTaps(model, layers or default_layers(model))
    pickers = [
        _unit_picker(tuple(lay.output.shape), grid, max_units, seed + i)
        for i, lay in enumerate(taps.layers)
    ]

    @tf.function
    def pooled(x: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
        acts, logits = taps._tapped(x)
        out = []
        for a, pick in zip(acts, pickers, strict=True):
            a = _pool(tf.cast(a, tf.float32), grid)
            out.append(a if pick is None else tf.gather(a, pick, axis=1))
        return out, logits

    chunks: list[list[np.ndarray]] = [[] for _ in taps.layers]
    logits = []
    bar = tqdm(total=len(images), desc="activations", unit="img", disable=not progress)
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start : start + batch_size], tf.float32)
        acts, lg = pooled(batch)
        for store, a in zip(chunks, acts, strict=True):
            store.append(a.numpy())
        logits.append(lg.numpy())
        bar.update(len(batch))
    bar.close()
    return (
        {p: np.concatenate(c) for p, c in zip(taps.paths, chunks, strict=True)},
        np.concatenate(logits),
    )


def _components(units: np.ndarray, k: int) -> np.ndarray:
    """The `k` leading principal components of the standardised, non-constant units."""
    live = units[:, units.std(0) > 1e-8]
    if live.shape[1] == 0:
        return np.random.default_rng(0).standard_normal((len(units), 1))  # carries nothing
    z = (live - live.mean(0)) / live.std(0)
    k = min(k, z.shape[1], len(z) - 1)
    return PCA(n_components=k, random_state=0).fit_transform(z)


def _decoded(pcs: np.ndarray, factor: Factor, groups: np.ndarray | None = None) -> np.ndarray:
    """Cross-validated linear read-out of `factor` from `pcs`; with `groups`, one decoder
    per group (each fitted and tested inside its group)."""
    if groups is not None:
        out = np.empty(factor.values.shape, factor.values.dtype if factor.discrete else float)
        for g in np.unique(groups):
            sel = groups == g
            out[sel] = _decoded(pcs[sel], replace(factor, values=factor.values[sel]))
        return out
    folds = KFold(_FOLDS, shuffle=True, random_state=0)
    model = LinearDiscriminantAnalysis() if factor.discrete else LinearRegression()
    return cross_val_predict(model, pcs, factor.values, cv=folds)


def _information(decoded: np.ndarray, factor: Factor) -> float:
    """MI (bits) between the true factor and its read-out: a lower bound on what the layer
    carries (data processing), at most the factor's entropy for labels."""
    return mutual_information(factor.values, decoded, discrete=factor.discrete)


def _transferred(pcs: np.ndarray, target: Factor, bins: np.ndarray) -> np.ndarray:
    """Labels of each bin read by a decoder fitted on the other bins, with as many training
    samples as a cross-validation fold inside the bin has (so only transfer differs)."""
    rng = np.random.default_rng(0)
    out = np.empty_like(target.values)
    for b in np.unique(bins):
        inside = bins == b
        others = np.flatnonzero(~inside)
        n_train = int(inside.sum() * (_FOLDS - 1) / _FOLDS)
        train = rng.choice(others, min(n_train, len(others)), replace=False)
        fit = LinearDiscriminantAnalysis().fit(pcs[train], target.values[train])
        out[inside] = fit.predict(pcs[inside])
    return out


def _invariance(pcs: np.ndarray, target: Factor, nuisance: Factor) -> float:
    """Class information read at each nuisance value by a decoder trained at the other values,
    over that read by a decoder trained at the same value (equal training sizes)."""
    bins = nuisance.bins()
    _, counts = np.unique(np.stack([bins, target.values]), axis=1, return_counts=True)
    if len(np.unique(bins)) < 2 or counts.min() < 2 * _FOLDS:
        return float("nan")  # one bin only, or too few samples of some class in some bin
    across = _information(_transferred(pcs, target, bins), target)
    within = _information(_decoded(pcs, target, groups=bins), target)
    return across / within if within > 1e-6 else float("nan")


@dataclass
class LayerAnalysis:
    """MI (bits) between layers and generative factors; see the module docstring.

    Attributes:
        layers: layer paths, input side first.
        factors: factor names (columns of the arrays below).
        units: number of pooled units analysed per layer.
        unit_mi: per layer, (units, factors) MI of each unit about each factor.
        layer_mi: (layers, factors) MI between each factor and its linear read-out.
        invariance: (layers, nuisance factors) class information transferred across nuisance
            values over that read within them.
        nuisance: names of the nuisance factors (columns of `invariance`).
        target: the class factor `invariance` measures.
    """

    layers: list[str]
    factors: list[str]
    units: list[int]
    unit_mi: list[np.ndarray]
    layer_mi: np.ndarray
    invariance: np.ndarray
    nuisance: list[str]
    target: str
    n_samples: int
    grid: int | None
    components: int
    seconds: float = 0.0

    @property
    def mean_mi(self) -> np.ndarray:
        """(layers, factors) mean unit MI."""
        return np.stack([m.mean(0) for m in self.unit_mi])

    @property
    def max_mi(self) -> np.ndarray:
        """(layers, factors) MI of the most informative unit."""
        return np.stack([m.max(0) for m in self.unit_mi])

    @property
    def tuned_share(self) -> np.ndarray:
        """(layers, factors) share of units whose most informative factor is this one
        (with more than 0.05 bits about it)."""
        out = np.zeros((len(self.layers), len(self.factors)))
        for i, m in enumerate(self.unit_mi):
            best = m.argmax(1)
            strong = m.max(1) > _TUNED_BITS
            out[i] = np.bincount(best[strong], minlength=len(self.factors)) / max(len(m), 1)
        return out

    def column(self, name: str) -> int:
        if name not in self.factors:
            raise InputError(f"No factor {name!r}; the factors are {self.factors}.")
        return self.factors.index(name)

    def to_dict(self) -> dict[str, Any]:
        def table(a: np.ndarray) -> dict[str, dict[str, float]]:
            return {
                lay: {f: round(float(v), 4) for f, v in zip(self.factors, row, strict=True)}
                for lay, row in zip(self.layers, a, strict=True)
            }

        return {
            "layers": self.layers,
            "factors": self.factors,
            "units": self.units,
            "n_samples": self.n_samples,
            "grid": self.grid,
            "components": self.components,
            "seconds": round(self.seconds, 2),
            "layer_mi_bits": table(self.layer_mi),
            "mean_unit_mi_bits": table(self.mean_mi),
            "max_unit_mi_bits": table(self.max_mi),
            "tuned_share": table(self.tuned_share),
            "invariance": {
                lay: {f: round(float(v), 4) for f, v in zip(self.nuisance, row, strict=True)}
                for lay, row in zip(self.layers, self.invariance, strict=True)
            },
            "target": self.target,
        }

    def to_markdown(self) -> str:
        def table(title: str, cols: list[str], a: np.ndarray, fmt: str) -> list[str]:
            lines = [f"**{title}**", "", "| layer | " + " | ".join(cols) + " |"]
            lines.append("|---|" + "---:|" * len(cols))
            for lay, row in zip(self.layers, a, strict=True):
                lines.append(f"| {lay} | " + " | ".join(format(v, fmt) for v in row) + " |")
            return [*lines, ""]

        return "\n".join(
            table("Layer information (bits, linear read-out)", self.factors, self.layer_mi, ".3f")
            + table("Mean unit information (bits)", self.factors, self.mean_mi, ".3f")
            + table("Share of units tuned to each factor", self.factors, self.tuned_share, ".2f")
            + table(
                f"Invariance of the {self.target} code (read across / within nuisance values)",
                self.nuisance,
                self.invariance,
                ".2f",
            )
        )


def analyze_layers(
    model: keras.Model,
    images: np.ndarray,
    factors: list[Factor],
    layers: list[str] | None = None,
    grid: int | None = 1,
    components: int = 16,
    target: str = "shape",
    batch_size: int = 128,
    max_units: int | None = 4096,
    progress: bool = True,
    activations: dict[str, np.ndarray] | None = None,
) -> LayerAnalysis:
    """MI between the units of `layers` (default: `default_layers`) and every factor.

    Args:
        model: a Functional or Sequential Keras model.
        images: (n, H, W, C) images the factors describe (n = 2,000 is plenty).
        factors: the `Factor`s of those images, e.g. `shapes_factors(sample)`.
        layers: names or paths of the layers to analyse.
        grid: units per channel: 1 = spatial mean, g = g x g cells, None = every unit.
        components: principal components per layer for the layer-level MI.
        target: the class factor whose invariance is measured.
        activations: pooled activations from `collect_activations`, to skip the forward pass.
    """
    names = [f.name for f in factors]
    if target not in names:
        raise InputError(f"The target factor {target!r} is not among the factors {names}.")
    if any(len(f.values) != len(images) for f in factors):
        raise InputError("Every factor needs one value per image.")
    start = time.perf_counter()
    if activations is None:
        activations, _ = collect_activations(
            model, images, layers, grid, batch_size, max_units, progress=progress
        )
    goal = factors[names.index(target)]
    nuisance = [f for f in factors if f.nuisance]
    unit_mi, layer_mi, invariance = [], [], []
    rows = tqdm(activations.items(), desc="information", unit="layer", disable=not progress)
    for _, units in rows:
        unit_mi.append(
            np.stack([unit_information(units, f.values, discrete=f.discrete) for f in factors], 1)
        )
        pcs = _components(units, components)
        layer_mi.append([_information(_decoded(pcs, f), f) for f in factors])
        invariance.append([_invariance(pcs, goal, f) for f in nuisance])
    return LayerAnalysis(
        layers=list(activations),
        factors=names,
        units=[u.shape[1] for u in activations.values()],
        unit_mi=unit_mi,
        layer_mi=np.array(layer_mi),
        invariance=np.array(invariance),
        nuisance=[f.name for f in nuisance],
        target=target,
        n_samples=len(images),
        grid=grid,
        components=components,
        seconds=time.perf_counter() - start,
    )
