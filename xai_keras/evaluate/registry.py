"""The metric registry: every metric, with what it needs and which way is better, in one place.

A metric module registers its metrics where it defines them, with `register_metric`; the
readers (`evaluate_model` and `run_benchmark` with their tables, `explain_dataset`'s
`metrics=`, its summary's "explained worst" list, the CLI's `--metrics`) ask the registry
instead of keeping their own lists.

    >>> from xai_keras.evaluate import get_metric, metrics
    >>> metrics()                                   # ['deletion', 'insertion', ...]
    >>> get_metric("deletion").higher_is_better     # False

Adding a metric is one file, its test, and its import line in `xai_keras/evaluate/__init__.py`
(importing the module registers its metrics). ROAD, for instance: `xai_keras/evaluate/road.py`
defines `road(model, images, maps, targets=None, order="morf", ..., batch_size=64,
value_range=None)` returning (N,) per-image values, and registers it once per ordering:

    from xai_keras.evaluate.registry import register_metric

    _ROAD = "Rong et al., A Consistent and Efficient Evaluation Strategy for ..., ICML 2022"

    @register_metric("road_lerf", direction="higher", needs=("model",),
                     options={"order": "lerf"}, reference=_ROAD,
                     description="probability as the least relevant pixels are imputed")
    @register_metric("road_morf", direction="lower", needs=("model",),
                     options={"order": "morf"}, reference=_ROAD,
                     description="probability as the most relevant pixels are imputed")
    def road(model, images, maps, targets=None, order="morf", ...): ...

Stacked decorators apply from the bottom up, so `road_morf` registers (and is listed) first.
Then `from xai_keras.evaluate.road import road` goes into `evaluate/__init__.py` (and "road"
into its `__all__`). Nothing else changes: `evaluate_model` and `run_benchmark` compute both
for every method (the mean over images, in columns `road_morf` and `road_lerf`, the best in
bold by `direction`); `explain_dataset(..., metrics=["road_morf"])` and `xai-keras
explain-dataset --metrics road_morf` add it to every image's record (field `road_morf`), and
the dataset summary can rank the worst-explained images by it. A function returning an object
(like `Curves`) says which (N,) array is the metric with `value=lambda result: result.auc`.

How a reader calls a metric (`Metric.__call__`): by keyword, with each of `model`, `images`,
`maps`, `targets`, `masks`, `cue_masks`, `method` and the readers' settings (`batch_size`,
`value_range`, `steps`, `tolerance`) that the function's signature names, then a reader's
`metric_options` for that function (a dict keyed by the function's name, e.g. the benchmark's
quick `{"road": {"percentiles": (20, 50, 80)}}`), then `options`.
`needs` says which inputs beyond the maps a reader must have: "model" (the model, the images and the
explained targets; readers pass a `Session`, so a metric that runs the model takes a model or a
session: `Session.of(model)` gives the session, its `.model` the Keras model), "masks" (object
masks), "cue_masks" (masks of a planted spurious cue), "method" (the method's name: the metric
explains the images itself, with the reader's `method_options` as keywords; the maps are not
passed). A per-image metric returns (N,) values (NaN where it does not apply to an image; the mean
skips those), an aggregate one a number.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xai_keras.checks import check_choice
from xai_keras.errors import InputError

__all__ = ["Metric", "register_metric", "metrics", "get_metric", "compute"]

NEEDS = ("model", "masks", "cue_masks", "method")
DIRECTIONS = ("higher", "lower")
# What the readers pass by keyword, where the metric's function names it.
INPUTS = ("model", "images", "maps", "targets", "masks", "cue_masks", "method")

_METRICS: dict[str, Metric] = {}
# The family of each module's metrics (Quantus' six families, plus the shortcut check).
FAMILIES = {
    "faithfulness": "faithfulness",
    "road": "faithfulness",
    "robustness": "robustness",
    "localisation": "localisation",
    "complexity": "complexity",
    "sanity": "randomisation",
    "axiomatic": "axiomatic",
    "shortcut": "shortcut",
}


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes:
        name: the registry name (`explain_dataset(metrics=[name])`, `--metrics name`).
        function: the public function that computes it.
        direction: "higher" or "lower": which values are better.
        needs: what it needs beyond the maps (see the module docstring).
        per_image: True when `function` returns one value per image, False for one number.
        description: one line: what it measures.
        reference: the paper ("" where there is none).
        key: the column of the benchmark table and the field of `explain_dataset` records
            (default: `name`).
        label: a short name for prose, e.g. "deletion AUC" (default: `key` with spaces).
        options: keyword arguments always passed to `function` (e.g. `{"order": "morf"}`).
        value: turns the function's result into this metric's values (e.g. `Curves` ->
            `.auc`, or one element of a returned tuple); None: the result itself.
        absolute: rank |value| (similarities where 0 is ideal and -0.5 is not).
        default: computed by `evaluate_model` and the benchmark for every method (True), or
            only when asked for by name (False: the metric families of
            `xai_keras.evaluate.robustness`, `complexity`, `axiomatic`, ... which cost more
            passes or answer other questions; `evaluate_model(..., metrics=[...])`).
    """

    name: str
    function: Callable[..., Any]
    direction: str
    needs: tuple[str, ...]
    per_image: bool
    description: str
    reference: str
    key: str = ""
    label: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    value: Callable[[Any], Any] | None = None
    absolute: bool = False
    default: bool = True

    @property
    def family(self) -> str:
        """The metric family: the module that defines it (`FAMILIES`)."""
        module = self.function.__module__.rsplit(".", 1)[-1]
        return FAMILIES.get(module, module)

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    def __call__(self, **available: Any) -> Any:
        """The function's raw result: called by keyword with what its signature names among
        `available` (inputs and settings), then `options`."""
        params = inspect.signature(self.function).parameters
        kwargs = {k: v for k, v in available.items() if k in params}
        if "method" in self.needs:  # it explains the images itself, with the method's options
            kwargs.update(available.get("method_options") or {})
        kwargs.update((available.get("metric_options") or {}).get(self.function.__name__, {}))
        return self.function(**{**kwargs, **self.options})

    def values(self, result: Any) -> Any:
        """This metric's (N,) values (per-image) or number (aggregate) from a raw result."""
        return self.value(result) if self.value is not None else result

    def mean(self, result: Any) -> float | None:
        """The aggregate: the mean over images that are not NaN (None when all are), or the
        aggregate metric's number."""
        v = self.values(result)
        if not self.per_image:
            return float(v)
        v = np.asarray(v, np.float64)
        keep = ~np.isnan(v)
        return float(np.mean(v[keep])) if keep.any() else None


def register_metric(
    name: str,
    *,
    direction: str,
    needs: Iterable[str] = (),
    per_image: bool = True,
    description: str,
    reference: str = "",
    key: str | None = None,
    label: str | None = None,
    options: Mapping[str, Any] | None = None,
    value: Callable[[Any], Any] | None = None,
    absolute: bool = False,
    default: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Function decorator adding a metric to the registry (see `Metric` for the fields); the
    function is returned unchanged, so decorators stack to register one function twice.

    Raises:
        InputError: a name taken by another function, an unknown direction or need, or a
            function whose signature lacks an argument a need requires.
    """
    direction = check_choice(direction, "direction", DIRECTIONS, where=f"metric {name!r}")
    needs = tuple(needs)
    for need in needs:
        check_choice(need, "needs", NEEDS, where=f"metric {name!r}")

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(function).parameters
        required = {"model": ("model", "images"), "method": ("model", "images", "method")}
        missing = [p for need in needs for p in required.get(need, (need,)) if p not in params]
        if "method" not in needs and "maps" not in params:
            missing.append("maps")
        if missing:
            raise InputError(
                f"The function of metric {name!r} must take the argument(s) "
                f"{', '.join(dict.fromkeys(missing))} by name. Received: "
                f"{function.__name__}{inspect.signature(function)}."
            )
        old = _METRICS.get(name)
        if old is not None and old.function.__qualname__ != function.__qualname__:
            raise InputError(
                f"A metric named {name!r} is already registered ({old.function.__module__}."
                f"{old.function.__qualname__}); pick another name."
            )
        column = key or name
        _METRICS[name] = Metric(
            name=name,
            function=function,
            direction=direction,
            needs=needs,
            per_image=per_image,
            description=description,
            reference=reference,
            key=column,
            label=label or column.replace("_", " "),
            options=dict(options or {}),
            value=value,
            absolute=absolute,
            default=bool(default),
        )
        return function

    return wrap


def metrics(
    needs: Iterable[str] | None = None,
    per_image: bool | None = None,
    default: bool | None = None,
    family: str | None = None,
) -> list[str]:
    """Names of the registered metrics in registration order, optionally only those that
    need no more than `needs` (e.g. `("model",)`: computable from the model, images and maps),
    only per-image (or aggregate) ones, only those computed by default (or only the opt-in
    ones), and only one family ("faithfulness", "robustness", "localisation", "complexity",
    "randomisation", "axiomatic", "shortcut")."""
    allowed = None if needs is None else set(needs)
    return [
        n
        for n, m in _METRICS.items()
        if (allowed is None or set(m.needs) <= allowed)
        and (per_image is None or m.per_image == per_image)
        and (default is None or m.default == default)
        and (family is None or m.family == family)
    ]


def get_metric(name: Any) -> Metric:
    """The metric registered under `name`."""
    if not isinstance(name, str) or name not in _METRICS:
        raise InputError(f"Unknown metric {name!r}. Registered metrics: {', '.join(_METRICS)}.")
    return _METRICS[name]


def compute(names: Iterable[str], **available: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run metrics on one set of inputs; a function registered for several metrics with the
    same options (e.g. `average_drop_increase` for "average_drop" and "increase") runs once.

    Returns:
        `(values, results)`: each metric's values (`Metric.values`) and raw result, by name.
    """
    values, results, done = {}, {}, {}
    for name in names:
        m = get_metric(name)
        call = (m.function, repr(sorted(m.options.items())))
        if call not in done:
            done[call] = m(**available)
        results[name] = done[call]
        values[name] = m.values(done[call])
    return values, results
