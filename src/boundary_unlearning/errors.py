"""Typed errors: every user mistake raises a subclass of :class:`UnlearningError`.

Each message names the problem *and* the fix in one line; the CLI prints it and exits 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergenceError",
    "HyperparameterError",
    "ModelError",
    "OutputError",
    "UnknownNameError",
    "UnlearningError",
    "did_you_mean",
]


class UnlearningError(Exception):
    """Base class of every error this library raises on bad input."""


class UnknownNameError(UnlearningError, KeyError):
    """An unknown dataset, model or method name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(UnlearningError, ValueError):
    """Missing or malformed data, or a forget/retain split that cannot work."""


class ModelError(UnlearningError, ValueError):
    """A model that does not fit the data or the method."""


class HyperparameterError(UnlearningError, ValueError):
    """An unknown, mistyped or meaningless hyperparameter."""


class CheckpointError(UnlearningError, ValueError):
    """A missing, corrupt, unsafe or mismatched checkpoint."""


class ConfigError(UnlearningError, ValueError):
    """A configuration file with unknown keys or wrong types."""


class OutputError(UnlearningError, OSError):
    """An output location that cannot be written or would be overwritten."""


class DivergenceError(UnlearningError, FloatingPointError):
    """The loss became NaN or infinite during training."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    known = sorted(known)
    return UnknownNameError(
        f"unknown {kind} '{name}'{did_you_mean(name, known)}; known {kind}s: {', '.join(known)}"
    )
