"""The method registry: ``@register_method(name, cost=...)``, ``unlearn(name, ...)``."""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from torch import nn

from ..data.split import UnlearningData
from ..errors import HyperparameterError, did_you_mean, unknown_name

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
    if name not in _REGISTRY:
        raise unknown_name("method", name, _REGISTRY)
    return _REGISTRY[name]


def _check_type(method: str, key: str, value: Any, default: Any) -> Any:
    """Accept a value of the default's type (ints for floats); refuse anything else."""
    if default is None or default is inspect.Parameter.empty:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if math.isnan(value):
                ok = False
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise HyperparameterError(
            f"{method}: {key}={value!r} has the wrong type; expected "
            f"{type(default).__name__} like the default {default!r}"
        )
    return value


def validate_hyperparameters(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Check names and types of ``hparams`` for method ``name``; return them normalised."""
    spec = get_method(name)
    known = spec.hyperparameters
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if key not in known:
            raise HyperparameterError(
                f"{name} has no hyperparameter '{key}'{did_you_mean(key, known)}; "
                f"valid ones: {', '.join(known)}"
            )
        out[key] = _check_type(name, key, value, known[key])
    return out


def unlearn(name: str, model: nn.Module, data: UnlearningData, **hparams: Any) -> nn.Module:
    """Run method ``name`` on ``model`` and return the new, unlearned model (eval mode).

    The input model is never modified. Unknown or mistyped hyperparameters raise
    :class:`~boundary_unlearning.errors.HyperparameterError` listing the valid ones.
    """
    checked = validate_hyperparameters(name, hparams)
    return get_method(name).fn(model, data, **checked)


def set_unlearning_stats(model: nn.Module, stats: dict[str, Any]) -> None:
    _stats[model] = dict(stats)


def unlearning_stats(model: nn.Module) -> dict[str, Any]:
    """Diagnostics a method recorded for the model it returned (e.g. the attack success
    ratio of Boundary Shrink); empty when there are none."""
    return dict(_stats.get(model, {}))
