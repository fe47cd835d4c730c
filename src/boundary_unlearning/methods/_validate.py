"""Checks of a method's hyperparameters: known names, types (against the method's
annotations) and the obvious ranges every method shares by name (epochs >= 0, lr > 0, ...).
The registry runs them once per call; ``bunlearn`` runs them before any training starts.
"""

from __future__ import annotations

import inspect
import math
import re
import reprlib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

from .._typecheck import fits
from ..errors import HyperparameterError, did_you_mean

__all__ = ["check_hyperparameters"]


def _type_text(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "").replace("collections.abc.", "")
    return str(getattr(tp, "__name__", tp))


# Generic ranges by hyperparameter name, checked for every method: (pattern, test, text).
_RANGES: list[tuple[re.Pattern[str], Callable[[float], bool], str]] = [
    (re.compile(r"(.+_)?epochs"), lambda v: v >= 0, "a whole number >= 0"),
    (re.compile(r"(.+_)?(batch|chunk)_size"), lambda v: v >= 1, "a whole number >= 1"),
    (
        re.compile(r"(.+_)?steps|(.+_)?samples|(.+_)?per_class"),
        lambda v: v >= 1,
        "a whole number >= 1",
    ),
    (re.compile(r"seed"), lambda v: 0 <= v < 2**63, "a whole number in 0 .. 2**63-1"),
    (
        re.compile(
            r"(.+_)?(lr|eps|step_size|temperature|variance|constant)|max_(loss|kl)"
            r"|noise_scale|selection_weight"
        ),
        lambda v: math.isfinite(v) and v > 0,
        "a positive number",
    ),
    (
        re.compile(r"momentum|weight_decay|(.+_)?weight|(.+_)?scale"),
        lambda v: math.isfinite(v) and v >= 0,
        "a number >= 0",
    ),
    (re.compile(r"(.+_)?fraction|threshold"), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    (re.compile(r"target_forget_acc"), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    (re.compile(r"(.+_)?lr_growth"), lambda v: math.isfinite(v) and v >= 1, "a number >= 1"),
]


def _check_range(method: str, key: str, value: Any, default: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for pattern, test, text in _RANGES:
        if pattern.fullmatch(key):
            if not test(value):
                hint = "" if default is inspect.Parameter.empty else f"; the default is {default!r}"
                raise HyperparameterError(f"{method}: {key}={value!r} must be {text}{hint}")
            return


def check_hyperparameters(
    name: str, known: Mapping[str, Any], hints: Mapping[str, Any], hparams: Mapping[str, Any]
) -> dict[str, Any]:
    """Check ``hparams`` against a method's hyperparameters; return them normalised.

    Args:
        name: the method's name, for the messages.
        known: the method's hyperparameters and their defaults.
        hints: their type annotations.
        hparams: what the caller gives.

    Returns:
        The same keys with normalised values (ints as floats where a float is expected,
        lists as tuples where a tuple is).

    Raises:
        HyperparameterError: an unknown name, a wrong type or a value out of range, in one
            line naming the valid names or values.

    Example:
        >>> check_hyperparameters("demo", {"lr": 0.1}, {"lr": float}, {"lr": 1})
        {'lr': 1.0}
        >>> check_hyperparameters("demo", {"lr": 0.1}, {"lr": float}, {"lr": 0})
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
        if tp is None and default is not None and default is not inspect.Parameter.empty:
            tp = type(default)
        ok, value = fits(value, tp if tp is not None else Any)
        if not ok and isinstance(value, float) and not math.isfinite(value):
            _check_range(name, key, value, default)  # NaN: the range says it first, as train's
            raise HyperparameterError(f"{name}: {key}={value!r} must be a finite number")
        if not ok:
            literal = typing.get_origin(tp) is Literal
            problem = "is not" if literal else "has the wrong type; expected"
            raise HyperparameterError(
                f"{name}: {key}={reprlib.repr(value)} {problem} {_type_text(tp)}"
                + (f" (the default is {default!r})" if default is not None else "")
            )
        _check_range(name, key, value, default)
        out[key] = value
    return out
