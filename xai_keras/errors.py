"""One family of exceptions, so callers can catch ours without catching everything."""

from __future__ import annotations

__all__ = [
    "XaiKerasError",
    "ConfigError",
    "DataError",
    "InputError",
    "LayerError",
    "NumericsError",
    "WorkerLostError",
]


class XaiKerasError(ValueError):
    """Base class: bad input that the user can fix; the message says how."""


class ConfigError(XaiKerasError):
    """A configuration file or override is invalid."""


class DataError(XaiKerasError):
    """A dataset cannot be built or read."""


class InputError(XaiKerasError):
    """Images, targets or other arguments handed to a function are invalid."""


class LayerError(XaiKerasError):
    """A layer given by name or object is not in the model or cannot be explained."""


class NumericsError(XaiKerasError):
    """A method's result is not finite (NaN or inf): never drawn, never returned."""


class WorkerLostError(XaiKerasError):
    """A worker of a multi-worker run stopped (killed, preempted, unreachable): the others
    stop too; what was written is kept, and a resume with every worker finishes the run."""
