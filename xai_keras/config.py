"""Every hyperparameter in one typed place.

A `Config` is built from defaults, then a YAML/JSON file, then `key.path=value` overrides, and is
validated at each step: unknown keys and wrong types raise `ConfigError` naming the key and what
is allowed, so a typo never silently falls back to a default.

Example:
    >>> cfg = load_config("shapes", overrides=["training.epochs=3"])
    >>> cfg.training.epochs
    3

A config is a file path or the name of a built-in one (`builtin_configs()`: "shapes",
"shapes_shortcut"), shipped inside the package in `xai_keras/configs/`, so an installed
package finds them from any folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from xai_keras.errors import ConfigError

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainingConfig",
    "builtin_configs",
    "config_path",
    "load_config",
    "apply_overrides",
    "config_from_dict",
]


@dataclass
class DataConfig:
    """Which dataset, at what size, and how it is generated or read."""

    name: str = "shapes"  # shapes | digits | lfw_faces | folder:<path>
    image_size: int = 64
    channels: int = 3
    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 1000
    spurious_cue: bool = False  # shapes: plant a class-correlated border marker in train/val
    cue_strength: float = 1.0  # shapes: probability that the marker agrees with the class
    clutter: int = 4  # shapes: number of background distractor strokes (at most)
    object_scale: list[float] = field(default_factory=lambda: [0.15, 0.27])  # shapes: radius range
    cache: bool = True


@dataclass
class ModelConfig:
    """The functional-API CNN: conv blocks, then a head."""

    filters: list[int] = field(default_factory=lambda: [32, 64, 96, 128])
    convs_per_block: int = 1
    kernel_size: int = 3
    batch_norm: bool = True
    head: Literal["gap", "flatten"] = "gap"  # "gap" + no dense units = the CAM architecture
    dense_units: int = 0
    dropout: float = 0.2


@dataclass
class TrainingConfig:
    """How the model is fitted."""

    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = 3e-3
    batch_size: int = 64
    epochs: int = 12
    early_stopping_patience: int = 4
    seed: int = 42
    histogram_freq: int = 0


@dataclass
class Config:
    """The whole run: data, model, training and where outputs go."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    out_dir: str = "logs/run"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
    elif tp is float:
        if isinstance(value, str):
            # PyYAML follows YAML 1.1, which reads `1e-3` (no dot) as a string.
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(
        f"The config key `{key}` must be {_type_name(tp)}. "
        f"Received: {key}={value!r} ({type(value).__name__})."
    )


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(
            f"The config section `{prefix or '<root>'}` must be a mapping. Received: {values!r}."
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"Unknown config key `{path}`. Allowed keys in "
                f"`{prefix.rstrip('.') or '<root>'}`: {', '.join(names)}."
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{path}.")
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def _validate(cfg: Config) -> Config:
    """Range checks that types alone cannot express."""
    positive = {
        "data.image_size": cfg.data.image_size,
        "data.n_train": cfg.data.n_train,
        "data.n_val": cfg.data.n_val,
        "data.n_test": cfg.data.n_test,
        "model.convs_per_block": cfg.model.convs_per_block,
        "model.kernel_size": cfg.model.kernel_size,
        "training.batch_size": cfg.training.batch_size,
        "training.epochs": cfg.training.epochs,
        "training.learning_rate": cfg.training.learning_rate,
    }
    for key, value in positive.items():
        if not 0 < value < math.inf:
            raise ConfigError(f"The config key `{key}` must be > 0. Received: {key}={value}.")
    non_negative = {
        "data.clutter": cfg.data.clutter,
        "model.dense_units": cfg.model.dense_units,
        "training.early_stopping_patience": cfg.training.early_stopping_patience,
        "training.histogram_freq": cfg.training.histogram_freq,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"The config key `{key}` must be >= 0. Received: {key}={value}.")
    low_high = cfg.data.object_scale
    if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1] <= 0.36:
        raise ConfigError(
            "The config key `data.object_scale` must be [low, high] with 0 < low <= high <= "
            f"0.36 (object radius as a fraction of the image). Received: {low_high}."
        )
    if cfg.data.name == "shapes" and cfg.data.image_size < 16:
        raise ConfigError(
            "The shapes dataset needs `data.image_size` >= 16. "
            f"Received: data.image_size={cfg.data.image_size}."
        )
    if cfg.data.channels not in (1, 3):
        raise ConfigError(
            f"The config key `data.channels` must be 1 or 3. Received: {cfg.data.channels}."
        )
    if not cfg.model.filters or any(f <= 0 for f in cfg.model.filters):
        raise ConfigError(
            "The config key `model.filters` must be a non-empty list of positive ints. "
            f"Received: {cfg.model.filters}."
        )
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(
            f"The config key `model.dropout` must be in [0, 1). Received: {cfg.model.dropout}."
        )
    if not 0.0 <= cfg.data.cue_strength <= 1.0:
        raise ConfigError(
            "The config key `data.cue_strength` must be in [0, 1]. "
            f"Received: {cfg.data.cue_strength}."
        )
    # The conv stack halves the image after every block but the last.
    final = cfg.data.image_size // 2 ** (len(cfg.model.filters) - 1)
    if final < 2:
        need = 2 ** len(cfg.model.filters)
        raise ConfigError(
            f"`data.image_size`={cfg.data.image_size} is too small for "
            f"{len(cfg.model.filters)} conv blocks: the last block's feature map would be "
            f"{final}x{final}. Use data.image_size >= {need} or fewer `model.filters`."
        )
    return cfg


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a `Config` from a (possibly partial) nested dict."""
    return _validate(_build(Config, values, ""))


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(
            f"An override must look like `section.key=value` (e.g. training.epochs=3). "
            f"Received: {text!r}."
        )
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Return a new config with `section.key=value` overrides applied (values parsed as YAML)."""
    values = cfg.to_dict()
    for text in overrides:
        path, value = _parse_override(text)
        node = values
        for i, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(
                    f"Unknown config section `{'.'.join(path[: i + 1])}` in override {text!r}. "
                    f"Sections: {', '.join(k for k, v in values.items() if isinstance(v, dict))}."
                )
            node = node[part]
        node[path[-1]] = value
    return config_from_dict(values)


def _syntax_error(path: Path, text: str, err: Exception) -> str:
    """One line for a YAML/JSON syntax error: file, line, column, problem and the line itself.

    PyYAML's own message is several lines with a caret diagram; this keeps what it says.
    """
    kind = "JSON" if isinstance(err, json.JSONDecodeError) else "YAML"
    if isinstance(err, json.JSONDecodeError):
        line, column, problem, context = err.lineno, err.colno, err.msg, ""
    else:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context", None) or ""
        context_mark = getattr(err, "context_mark", None)
        if context and context_mark is not None:
            context += f" started at line {context_mark.line + 1}"
    where = f" at line {line}, column {column}" if line else ""
    lines = text.splitlines()
    source = ""
    if 0 < line <= len(lines):
        source = f" (the line reads {lines[line - 1].rstrip()[:80]!r})"
    detail = f"{problem}, {context}" if context else problem
    hint = (
        "double quotes, commas and brackets"
        if kind == "JSON"
        else "indentation (spaces, not tabs), a missing ': ' or a closing bracket"
    )
    return f"Config file {path} is not valid {kind}{where}: {detail}{source}. Check the {hint}."


BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def builtin_configs() -> list[str]:
    """Names of the configs shipped with the package (`load_config(name)`)."""
    return sorted(p.stem for p in BUILTIN_CONFIG_DIR.glob("*.yaml"))


def config_path(path: str | os.PathLike) -> Path:
    """The config file `path` names: an existing file, else a built-in config's name."""
    given = Path(path)
    if given.is_file():
        return given
    if given.suffix == "" and len(given.parts) == 1:
        builtin = BUILTIN_CONFIG_DIR / f"{given.name}.yaml"
        if builtin.is_file():
            return builtin
    raise ConfigError(
        f"Config file not found: {path}. Pass an existing .yaml/.json file or a built-in "
        f"config name ({', '.join(builtin_configs())})."
    )


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> Config:
    """Load a YAML or JSON config (or the defaults when `path` is None) and apply overrides.

    `path` is a file, or the name of a built-in config (`builtin_configs()`), e.g. "shapes".

    Raises:
        ConfigError: the file is missing or unparsable, or a key or value is invalid.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = config_path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"Config file {path} is not UTF-8 text (byte {err.start}: "
                f"{err.object[err.start : err.start + 1]!r}). Save it as UTF-8 YAML or JSON."
            ) from None
        try:
            values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise ConfigError(_syntax_error(path, text, err)) from None
        values = values or {}
    return apply_overrides(config_from_dict(values), overrides or [])
