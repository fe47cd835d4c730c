"""The method registry: ``@register_method(name, cost=...)``, ``unlearn(name, ...)``."""

from __future__ import annotations

import collections.abc
import inspect
import math
import re
import reprlib
import types
import typing
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

from torch import nn

from ..data.split import UnlearningData
from ..errors import HyperparameterError, did_you_mean, unknown_name
from ._common import check_inputs

__all__ = [
    "Cost",
    "MethodSpec",
    "get_method",
    "list_methods",
    "register_method",
    "unlearn",
    "unlearning_stats",
]

Cost = Literal["forget", "retain", "record", "reference"]
COST_TEXT: dict[str, str] = {
    "forget": "touches D_f only",
    "retain": "needs D_r too",
    "record": "needs a training-time record",
    "reference": "trains from scratch on D_r",
}
MethodFn = Callable[..., nn.Module]
F = TypeVar("F", bound=MethodFn)

# Positional parameters every method takes; everything after them is a hyperparameter.
_POSITIONAL = ("model", "data")
_stats: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class MethodSpec:
    """A registered unlearning method."""

    name: str
    fn: MethodFn
    cost: Cost

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """Keyword-only hyperparameters and their defaults."""
        return {
            name: p.default
            for name, p in inspect.signature(self.fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(name: str, *, cost: Cost) -> Callable[[F], F]:
    """Register ``fn(model, data, *, **hparams) -> nn.Module`` as method ``name``."""

    def wrap(fn: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"method '{name}' is already registered")
        params = list(inspect.signature(fn).parameters)
        if tuple(params[:2]) != _POSITIONAL:
            raise TypeError(f"method '{name}' must take (model, data, *, ...)")
        _REGISTRY[name] = MethodSpec(name, fn, cost)
        return fn

    return wrap


def list_methods() -> list[str]:
    """Names of all registered methods, ``retrain`` (the reference) included."""
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise unknown_name("method", str(name), _REGISTRY)
    return _REGISTRY[name]


def _fits(value: Any, tp: Any, depth: int = 0) -> tuple[bool, Any]:
    """``(ok, value)``: whether ``value`` fits the annotation ``tp`` (ints pass as floats,
    lists as tuples); annotations this check does not understand accept anything."""
    if depth > 20:  # a self-referencing list (YAML ``&a [*a]``) fits nothing
        return False, value
    if tp is Any or tp is inspect.Parameter.empty:
        return True, value
    if tp is None or tp is type(None):
        return value is None, value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args), value
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, out = _fits(value, arg, depth + 1)
            if ok:
                return True, out
        return False, value
    if origin in (list, tuple, Sequence, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False, value
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False, value
            items = [_fits(v, a, depth + 1) for v, a in zip(value, args, strict=True)]
        else:
            items = [_fits(v, args[0] if args else Any, depth + 1) for v in value]
        if not all(ok for ok, _ in items):
            return False, value
        values = [v for _, v in items]
        return True, values if origin is list else tuple(values)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict), value
    if origin is not None:
        return True, value  # Callable[...] and other generics: not checked
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return not math.isnan(value), float(value)
        return False, value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


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


def _annotations(spec: MethodSpec) -> dict[str, Any]:
    try:
        return typing.get_type_hints(spec.fn)
    except Exception:  # an annotation that cannot be resolved: fall back to the defaults
        return {}


# Generic ranges by hyperparameter name, checked for every method: (pattern, test, text).
_RANGES: list[tuple[re.Pattern[str], Callable[[float], bool], str]] = [
    (re.compile(r"(.+_)?epochs"), lambda v: v >= 0, "a whole number >= 0"),
    (re.compile(r"(.+_)?(batch|chunk)_size"), lambda v: v >= 1, "a whole number >= 1"),
    (re.compile(r"(.+_)?steps"), lambda v: v >= 1, "a whole number >= 1"),
    (re.compile(r"seed"), lambda v: 0 <= v < 2**63, "a whole number in 0 .. 2**63-1"),
    (
        re.compile(r"(.+_)?(lr|eps|step_size|temperature|variance|constant)|max_(loss|kl)"),
        lambda v: math.isfinite(v) and v > 0,
        "a positive number",
    ),
    (
        re.compile(r"momentum|weight_decay|(.+_)?weight|(.+_)?scale"),
        lambda v: math.isfinite(v) and v >= 0,
        "a number >= 0",
    ),
    (re.compile(r"(.+_)?fraction"), lambda v: 0 < v <= 1, "a number in (0, 1]"),
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


def validate_hyperparameters(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Check names, types and obvious ranges of ``hparams`` for method ``name`` (epochs >= 0,
    lr / eps > 0, batch_size >= 1, ...); return them normalised. Raises
    :class:`HyperparameterError` with one line naming the problem and the valid values."""
    spec = get_method(name)
    known = spec.hyperparameters
    hints = _annotations(spec)
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if key not in known:
            raise HyperparameterError(
                f"{name} has no hyperparameter '{key}'{did_you_mean(key, known)}; "
                f"valid ones: {', '.join(known)}"
            )
        default = known[key]
        tp = hints.get(key)
        if tp is None and default is not None and default is not inspect.Parameter.empty:
            tp = type(default)
        ok, value = _fits(value, tp if tp is not None else Any)
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


def unlearn(name: str, model: nn.Module, data: UnlearningData, **hparams: Any) -> nn.Module:
    """Run method ``name`` on ``model`` and return the new, unlearned model (eval mode).

    The input model is never modified. Unknown or mistyped hyperparameters raise
    :class:`~boundary_unlearning.errors.HyperparameterError` listing the valid ones; a model
    that cannot classify ``data`` (wrong output size or input shape) or an empty forget set
    raise before any work is done.
    """
    checked = validate_hyperparameters(name, hparams)
    check_inputs(model, data, name)
    return get_method(name).fn(model, data, **checked)


def set_unlearning_stats(model: nn.Module, stats: dict[str, Any]) -> None:
    _stats[model] = dict(stats)


def unlearning_stats(model: nn.Module) -> dict[str, Any]:
    """Diagnostics a method recorded for the model it returned (e.g. the attack success
    ratio of Boundary Shrink); empty when there are none."""
    return dict(_stats.get(model, {}))
