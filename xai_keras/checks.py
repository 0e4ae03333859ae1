"""Checks that validate one value and return it clean (the scikit-learn `check_array` habit).

Each raises `InputError` with one message template, naming the value, what it belongs to,
what is allowed and what was received:

    The `steps` option of method 'integrated_gradients' must be an int >= 1. Received: steps=-3.

`where` names the owner ("method 'integrated_gradients'"); without it the subject is just
the name in backquotes.

Example:
    >>> steps = check_int(steps, "steps", low=1, where="method 'integrated_gradients'")
    >>> noise = check_number(noise, "noise", low=0.0, where="method 'smoothgrad'")
    >>> kind = check_choice(kind, "head", ("softmax", "sigmoid"))
    >>> maps = check_maps(maps, non_negative=True)              # (N, H, W) float64
    >>> masks = check_masks(masks, maps.shape)                 # (N, H, W) bool

`check_maps` and `check_masks` name the argument: "The `maps` argument must be ...".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from xai_keras.errors import InputError

__all__ = [
    "INT32_MAX",
    "check_choice",
    "check_int",
    "check_maps",
    "check_masks",
    "check_number",
    "check_positive_int",
    "describe_sizes",
]

INT32_MAX = 2**31 - 1


def _fail(name: str, where: str | None, requirement: str, value: Any) -> InputError:
    subject = f"The `{name}` option of {where}" if where else f"`{name}`"
    return InputError(f"{subject} must be {requirement}. Received: {name}={value!r}.")


def _bounds(low: Any, high: Any, low_open: bool = False, high_open: bool = False) -> str:
    """' >= 1', ' in [0, 10]', ' > 0', ... or '' without bounds."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def check_int(
    value: Any,
    name: str,
    *,
    low: int | None = None,
    high: int | None = None,
    where: str | None = None,
    allow_none: bool = False,
) -> int | None:
    """`value` as a Python int in [low, high] (None allowed with `allow_none`).

    Ints and numpy integers pass; bools, floats (also 3.0) and strings do not.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        requirement = f"an int{_bounds(low, high)}"
        raise _fail(name, where, f"None or {requirement}" if allow_none else requirement, value)
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    where: str | None = None,
    allow_none: bool = False,
) -> float | None:
    """`value` as a finite Python float in the range (`low_open`/`high_open` exclude the
    bound); None allowed with `allow_none`. NaN, infinities, bools and strings are refused."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        number = float(value)
        ok = math.isfinite(number)
        if ok and low is not None:
            ok = number > low if low_open else number >= low
        if ok and high is not None:
            ok = number < high if high_open else number <= high
    if not ok:
        requirement = f"a finite number{_bounds(low, high, low_open, high_open)}"
        raise _fail(name, where, f"None or {requirement}" if allow_none else requirement, value)
    return float(value)


def check_choice(value: Any, name: str, choices: Iterable[Any], *, where: str | None = None) -> Any:
    """`value` if it is one of `choices` (compared with ==), else an error listing them."""
    choices = list(choices)
    try:
        ok = any(isinstance(value, type(c)) and bool(value == c) for c in choices)
    except (TypeError, ValueError):  # e.g. an array compared with a string
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise _fail(name, where, f"one of {listed}", value)
    return value


def check_maps(maps: Any, name: str = "maps", non_negative: bool = False) -> np.ndarray:
    """Maps as a finite float64 (N, H, W) array; a single (H, W) map becomes (1, H, W)."""
    try:
        m = np.asarray(maps, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"The `{name}` argument must be an array of numbers (N, H, W). "
            f"Received: {name}={type(maps).__name__}."
        ) from None
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.size == 0:
        raise InputError(
            f"The `{name}` argument must be a non-empty array of shape (N, H, W) or (H, W). "
            f"Received: {name}.shape={m.shape}."
        )
    if not np.all(np.isfinite(m)):
        raise InputError(f"The `{name}` argument must be finite. Received NaN or infinite values.")
    if non_negative and m.min() < 0:
        raise InputError(
            f"The `{name}` argument must be non-negative (take abs() or relu of signed maps). "
            f"Received: {name}.min()={m.min():.4g}."
        )
    return m


def check_masks(masks: Any, shape: tuple[int, ...], name: str = "masks") -> np.ndarray:
    """Masks as a bool array of `shape` (N, H, W); 0/1 numbers are accepted too."""
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.shape != shape:
        raise InputError(
            f"The `{name}` argument must be boolean masks with the maps' shape {shape}. "
            f"Received: {name}.shape={m.shape}."
        )
    if m.dtype != bool:
        if not (np.issubdtype(m.dtype, np.number) and np.isin(m, (0, 1)).all()):
            raise InputError(
                f"The `{name}` argument must be boolean (or hold only 0 and 1). "
                f"Received: {name}.dtype={m.dtype}."
            )
        m = m.astype(bool)
    return m


def check_positive_int(value: Any, name: str) -> int:
    """`value` as an int >= 1, else a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(
            f"The `{name}` argument must be a positive int. Received: {name}={value!r}."
        )
    return int(value)


def describe_sizes(shapes: Iterable[tuple[int, ...]], names: Iterable[str] | None = None) -> str:
    """The image sizes found, most common first, for an error about a batch of mixed sizes:
    "2 of 32x32, 1 of 40x30 (b.png)". Shapes are (H, W[, C]); the channels are named only
    where they differ. Up to 3 names are given per size when `names` are."""
    shapes = [tuple(int(d) for d in s) for s in shapes]
    names = list(names) if names is not None else [None] * len(shapes)
    same_channels = len({s[2:] for s in shapes}) == 1

    def size(s: tuple[int, ...]) -> str:
        return "x".join(map(str, s[:2] if same_channels else s))

    groups: dict[str, list] = {}
    for shape, name in zip(shapes, names):
        groups.setdefault(size(shape), []).append(name)
    parts = []
    for key, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        named = [m for m in members if m is not None]
        shown = f" ({', '.join(named[:3])}{', ...' if len(named) > 3 else ''})" if named else ""
        parts.append(f"{len(members)} of {key}{shown}")
    return ", ".join(parts)
