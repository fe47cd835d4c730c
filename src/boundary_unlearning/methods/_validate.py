"""Checks of a method's hyperparameters: known names, then each value against its declared
annotation (type and range, :func:`~boundary_unlearning.checks.check_setting`). The registry
runs them once per call; ``bunlearn`` runs them before any training starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..checks import check_setting
from ..errors import HyperparameterError, did_you_mean

__all__ = ["check_hyperparameters"]


def check_hyperparameters(
    name: str, known: Mapping[str, Any], hints: Mapping[str, Any], hparams: Mapping[str, Any]
) -> dict[str, Any]:
    """Check ``hparams`` against a method's hyperparameters; return them normalised.

    Args:
        name: the method's name, for the messages.
        known: the method's hyperparameters and their defaults.
        hints: their annotations (type, and the range where one is declared).
        hparams: what the caller gives.

    Returns:
        The same keys with normalised values (ints as floats where a float is expected,
        lists as tuples where a tuple is).

    Raises:
        HyperparameterError: an unknown name, a wrong type or a value out of range, in one
            line naming the valid names or values.

    Example:
        >>> from boundary_unlearning.checks import Positive
        >>> check_hyperparameters("demo", {"lr": 0.1}, {"lr": Positive}, {"lr": 1})
        {'lr': 1.0}
        >>> check_hyperparameters("demo", {"lr": 0.1}, {"lr": Positive}, {"lr": 0})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.HyperparameterError: demo: lr=0.0 must be a positive number...
    """
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if key == "normalization" and key not in known:
            raise HyperparameterError(
                f"{name}: normalization belongs to the data, not to a method: pass "
                "class_split(train, test, classes, normalization=(mean, std)); every method "
                "and evaluate read it from there"
            )
        if key not in known:
            raise HyperparameterError(
                f"{name} has no hyperparameter '{key}'{did_you_mean(key, known)}; "
                f"valid ones: {', '.join(known)}"
            )
        default = known[key]
        tp = hints.get(key)
        if tp is None:  # not annotated: the default's type, when it has one
            tp = type(default) if default is not None else Any
        out[key] = check_setting(key, value, tp, where=name, default=default)
    return out
