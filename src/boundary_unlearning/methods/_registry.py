"""The method registry: ``@register_method(name, cost=...)``, ``unlearn(name, ...)``."""

from __future__ import annotations

import functools
import inspect
import typing
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from torch import nn

from ..data.split import UnlearningData
from ..errors import HyperparameterError, unknown_name
from ..recipe import OPTION_FIELDS, RECIPE_FIELDS, Recipe, RunOptions
from ..stopping import FitResult, collect_fits
from ._common import check_inputs, require_retain
from ._validate import check_hyperparameters

__all__ = [
    "Cost",
    "ForgettingWarning",
    "MethodSpec",
    "fit_stats",
    "get_method",
    "list_methods",
    "register_method",
    "set_unlearning_stats",
    "unlearn",
    "unlearning_stats",
    "validate_hyperparameters",
    "warn_not_forgotten",
]

Cost = Literal["forget", "retain", "record", "reference"]
MethodFn = Callable[..., nn.Module]
F = TypeVar("F", bound=MethodFn)

# Positional parameters every method takes; everything after them is a hyperparameter.
_POSITIONAL = ("model", "data")
# Keyword parameters of a method's function that the registry fills in (not hyperparameters).
_INJECTED = ("recipe", "options")
_stats: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()
_RECIPE_HINTS = typing.get_type_hints(Recipe)


class ForgettingWarning(UserWarning):
    """A method's step budget ran out before it reached its forgetting target.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", ForgettingWarning)  # silence just this kind
        ...     warn_not_forgotten("neg_grad", {"steps": 10})
        >>> issubclass(ForgettingWarning, UserWarning)
        True
    """


@dataclass(frozen=True)
class MethodSpec:
    """A registered unlearning method.

    ``fn(model, data, *, <its own hyperparameters>, [recipe], options)`` is the method's idea;
    the registry builds its public entry point, which takes every hyperparameter as a keyword
    (the method's own, the :class:`~boundary_unlearning.recipe.Recipe` fields when the method
    trains with one, ``preset`` when it has presets) plus the
    :class:`~boundary_unlearning.recipe.RunOptions` fields, validates them once, checks the
    inputs once and records what the training did (see :func:`unlearning_stats`).

    Registered by :func:`register_method`; look one up with :func:`get_method`.

    Example:
        >>> spec = get_method("ssd")
        >>> spec.name, spec.cost, spec.recipe is None, sorted(spec.presets)
        ('ssd', 'retain', True, [])
    """

    name: str
    fn: MethodFn
    cost: Cost
    recipe: Recipe | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The first line of the method's docstring.

        Example:
            >>> get_method("retrain").summary
            'Retrain: re-initialise the architecture and train from scratch on D_r only.'
        """
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""

    @functools.cached_property
    def _own(self) -> dict[str, inspect.Parameter]:
        return {
            name: p
            for name, p in inspect.signature(self.fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _INJECTED
        }

    @functools.cached_property
    def _takes_options(self) -> bool:
        return "options" in inspect.signature(self.fn).parameters

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """Every hyperparameter and its default (the library's default preset).

        Returns:
            Name -> default: ``preset`` first when the method has presets, then the
            method's own, then the :class:`~boundary_unlearning.recipe.Recipe` fields.

        Example:
            >>> get_method("ssd").hyperparameters
            {'selection_weight': 10.0, 'dampening_constant': 1.0, 'batch_size': 64, 'seed': 0}
        """
        out: dict[str, Any] = {}
        if self.presets:
            out["preset"] = "default"
        out.update({name: p.default for name, p in self._own.items()})
        if self.recipe is not None:
            out.update({k: getattr(self.recipe, k) for k in RECIPE_FIELDS})
        return out

    @functools.cached_property
    def hints(self) -> dict[str, Any]:
        """The annotated type of every hyperparameter.

        Returns:
            Name -> type (the function's own hints, the Recipe fields', ``preset``'s
            ``Literal`` of the preset names).

        Example:
            >>> get_method("ssd").hints["selection_weight"]
            <class 'float'>
            >>> get_method("neg_grad").hints["preset"]
            typing.Literal['default', 'paper']
        """
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception:  # an annotation that cannot be resolved: fall back to the defaults
            hints = {}
        for name, p in self._own.items():  # synthesised signatures carry real types
            annotation = p.annotation
            if name not in hints and not isinstance(annotation, str) and annotation is not p.empty:
                hints[name] = annotation
        if self.recipe is not None:
            hints.update(_RECIPE_HINTS)
        if self.presets:
            hints["preset"] = Literal[("default", *self.presets)]
        return hints

    def resolve(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Every hyperparameter's value for a call with ``hparams`` (already validated):
        the defaults, then the chosen preset's values, then ``hparams``.

        Args:
            hparams: the caller's hyperparameters, as
                :func:`validate_hyperparameters` returns them.

        Returns:
            Every hyperparameter's value.

        Example:
            >>> get_method("ssd").resolve({"seed": 3})["seed"]
            3
            >>> get_method("neg_grad").resolve({"preset": "paper"})["lr"]
            0.0001
        """
        values = self.hyperparameters
        preset = hparams.get("preset", "default")
        values.update(self.presets.get(preset, {}))
        values.update(hparams)
        return values

    def __call__(self, model: nn.Module, data: UnlearningData, **kwargs: Any) -> nn.Module:
        """Run the method: validate, check the inputs, run, record the stats.

        Warns with :class:`ForgettingWarning` when a forgetting target was missed.

        Args:
            model: the trained classifier; never modified.
            data: the class split.
            **kwargs: hyperparameters and run options, as for :func:`unlearn`.

        Returns:
            A new model in eval mode.

        Raises:
            HyperparameterError: an unknown, mistyped or out-of-range hyperparameter, or a
                run option that is not a bool.
            ModelError: a model that cannot classify ``data``.
            DataError: an empty forget set, or an empty retain set for a method that trains
                on it.

        Example:
            >>> from boundary_unlearning.data import toy_problem
            >>> data, net = toy_problem()
            >>> new = get_method("finetune")(net, data, epochs=1)
            >>> new is net, unlearning_stats(new)
            (False, {'steps': 1})
        """
        options = RunOptions(**{k: kwargs.pop(k) for k in OPTION_FIELDS if k in kwargs})
        for key in OPTION_FIELDS:
            if not isinstance(getattr(options, key), bool):
                raise HyperparameterError(f"{self.name}: {key} must be True or False")
        values = self.resolve(validate_hyperparameters(self.name, kwargs))
        own = {k: v for k, v in values.items() if k in self._own}
        if self.recipe is not None:
            own["recipe"] = self.recipe.replace(**{k: values[k] for k in RECIPE_FIELDS})
        if self._takes_options:
            own["options"] = options
        check_inputs(model, data, self.name)
        if self.cost in ("retain", "reference"):
            require_retain(data, self.name)
        with collect_fits() as fits:
            out = self.fn(model, data, **own)
        # the method's own values, then what all of its training did (a combination's stage
        # recorded its own steps on its output; the combination's are both stages')
        stats = {**_stats.get(out, {}), **fit_stats(fits)}
        set_unlearning_stats(out, stats)
        if stats.get("reached_target") is False:
            warn_not_forgotten(self.name, stats)
        return out


def fit_stats(fits: Sequence[FitResult]) -> dict[str, Any]:
    """``steps`` (all fits), and for monitored runs ``reached_target``, ``target_forget_acc``
    and ``forget_acc_trace`` (``[step, share of D_f still in its class]`` pairs).

    Args:
        fits: what each call of ``fit`` in the method did, in order.

    Returns:
        The stats; empty when nothing was fitted.

    Example:
        >>> from boundary_unlearning.stopping import FitResult
        >>> fit_stats([FitResult("repair", 3)])
        {'steps': 3}
        >>> run = FitResult("forget", 4, target=0.05, reached_target=True,
        ...                 forget_trace=[(0, 1.0), (4, 0.0)])
        >>> fit_stats([FitResult("repair", 3), run])["forget_acc_trace"]
        [[3, 1.0], [7, 0.0]]
    """
    if not fits:
        return {}
    stats: dict[str, Any] = {"steps": sum(f.steps for f in fits)}
    monitored = [f for f in fits if f.target is not None]
    if monitored:
        offset, trace = 0, []
        for f in fits:
            trace += [[offset + step, acc] for step, acc in f.forget_trace]
            offset += f.steps
        stats.update(
            reached_target=monitored[-1].reached_target,
            target_forget_acc=monitored[-1].target,
            forget_acc_trace=trace,
        )
    return stats


def warn_not_forgotten(method: str, stats: Mapping[str, Any]) -> None:
    """Warn that ``method`` ran out of budget with D_f above its target.

    Args:
        method: the method's name.
        stats: its stats (``steps``, ``forget_acc_trace``, ``target_forget_acc``).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_not_forgotten("neg_grad", {"steps": 10, "forget_acc_trace": [[10, 0.5]]})
        >>> print(caught[0].message)  # doctest: +ELLIPSIS
        neg_grad did not reach its forgetting target: 50.0% of the forget set is still ...
    """
    trace = stats.get("forget_acc_trace") or [[0, float("nan")]]
    warnings.warn(
        f"{method} did not reach its forgetting target: {trace[-1][1]:.1%} of the forget set "
        f"is still in its class after {stats.get('steps')} steps (target "
        f"{stats.get('target_forget_acc', 0):.0%}); try a larger max_steps or lr, or (Boundary "
        "Shrink) a larger eps",
        ForgettingWarning,
        stacklevel=3,
    )


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    *,
    cost: Cost,
    recipe: Recipe | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[F], F]:
    """Register ``fn(model, data, *, <hyperparameters>, [recipe], options)`` as ``name``.

    Args:
        name: the method's registry name.
        cost: what data the method touches (``forget``, ``retain``, ``record``,
            ``reference``).
        recipe: the method's default training recipe; its fields become hyperparameters and
            ``fn`` receives the resolved :class:`Recipe` as ``recipe=``.
        presets: named sets of hyperparameter values (e.g. ``"paper"``) that replace the
            defaults when the caller passes ``preset=NAME``.

    Returns:
        A decorator that returns the public entry point (a keyword-only function with the
        full signature, which validates, runs and records the method).

    Raises:
        ValueError: ``name`` is already registered (raised by the decorator).
        TypeError: ``fn`` does not take ``(model, data, *, ...)`` (raised by the decorator).

    Example:
        >>> import copy
        >>> @register_method("demo_copy", cost="forget")
        ... def demo_copy(model, data, *, scale: float = 1.0):
        ...     '''Return an unchanged copy.'''
        ...     return copy.deepcopy(model)
        >>> get_method("demo_copy").hyperparameters, get_method("demo_copy").summary
        ({'scale': 1.0}, 'Return an unchanged copy.')
        >>> del _REGISTRY["demo_copy"]  # leave the registry as it was
    """

    def wrap(fn: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"method '{name}' is already registered")
        params = list(inspect.signature(fn).parameters)
        if tuple(params[:2]) != _POSITIONAL:
            raise TypeError(f"method '{name}' must take (model, data, *, ...)")
        spec = MethodSpec(name, fn, cost, recipe, dict(presets or {}))
        _REGISTRY[name] = spec

        @functools.wraps(fn)
        def entry(model: nn.Module, data: UnlearningData, **kwargs: Any) -> nn.Module:
            return spec(model, data, **kwargs)

        keyword = inspect.Parameter.KEYWORD_ONLY
        entry.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                *list(inspect.signature(fn).parameters.values())[:2],
                *(
                    inspect.Parameter(k, keyword, default=v, annotation=spec.hints.get(k, Any))
                    for k, v in spec.hyperparameters.items()
                ),
                *(
                    inspect.Parameter(k, keyword, default=False, annotation=bool)
                    for k in OPTION_FIELDS
                ),
            ],
            return_annotation=nn.Module,
        )
        del entry.__wrapped__
        return entry  # type: ignore[return-value]

    return wrap


def list_methods() -> list[str]:
    """Names of all registered methods, ``retrain`` (the reference) included.

    Returns:
        The names, sorted.

    Example:
        >>> "boundary_shrink" in list_methods()
        True
    """
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``; an unknown name raises one line listing the valid ones.

    Args:
        name: the method's registry name.

    Returns:
        Its :class:`MethodSpec`.

    Raises:
        UnknownNameError: no method has that name.

    Example:
        >>> get_method("boundary_expanding").cost
        'forget'
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise unknown_name("method", str(name), _REGISTRY)
    return _REGISTRY[name]


def validate_hyperparameters(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Check names, types and obvious ranges of ``hparams`` for method ``name`` (epochs >= 0,
    lr / eps > 0, batch_size >= 1, ...); return them normalised. Raises
    :class:`HyperparameterError` with one line naming the problem and the valid values.

    Args:
        name: the method's registry name.
        hparams: hyperparameters as the caller gives them.

    Returns:
        The same keys with normalised values (ints as floats where a float is expected,
        lists as tuples where a tuple is).

    Raises:
        UnknownNameError: an unknown method.
        HyperparameterError: an unknown name, a wrong type or a value out of range.

    Example:
        >>> validate_hyperparameters("finetune", {"epochs": 2, "lr": 1})
        {'epochs': 2, 'lr': 1.0}
        >>> validate_hyperparameters("finetune", {"lr": -1})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.HyperparameterError: finetune: lr=-1.0 must be a positive ...
    """
    spec = get_method(name)
    return check_hyperparameters(name, spec.hyperparameters, spec.hints, hparams)


def unlearn(name: str, model: nn.Module, data: UnlearningData, **hparams: Any) -> nn.Module:
    """Run method ``name`` on ``model`` and return the new, unlearned model (eval mode).

    Args:
        name: a registered method (see :func:`list_methods`).
        model: the trained classifier; never modified.
        data: the class split (see :func:`~boundary_unlearning.class_split`).
        **hparams: the method's hyperparameters (see ``get_method(name).hyperparameters``)
            and run options (``progress``, ``amp``, ``channels_last``, ``compile_model``).

    Returns:
        A new model in eval mode; :func:`unlearning_stats` tells what the method did.

    Raises:
        HyperparameterError: an unknown, mistyped or out-of-range hyperparameter (one line
            listing the valid ones).
        ModelError: a model that cannot classify ``data``.
        DataError: an empty forget set, or an empty retain set for a method that trains on it.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem()
        >>> new = unlearn("boundary_expanding", net, data, max_steps=5)
        >>> new is net, unlearning_stats(new)["steps"] <= 5
        (False, True)
    """
    return get_method(name)(model, data, **hparams)


def set_unlearning_stats(model: nn.Module, stats: dict[str, Any]) -> None:
    """Record ``stats`` for ``model`` (read back with :func:`unlearning_stats`).

    Held in a weak mapping: the stats go when the model does.

    Args:
        model: the model a method returns.
        stats: what the method did (copied).

    Example:
        >>> model = nn.Linear(1, 1)
        >>> set_unlearning_stats(model, {"steps": 3})
        >>> unlearning_stats(model)
        {'steps': 3}
    """
    _stats[model] = dict(stats)


def unlearning_stats(model: nn.Module) -> dict[str, Any]:
    """What a method recorded for the model it returned: ``steps`` (optimiser steps taken),
    for methods with a forgetting target ``reached_target``, ``target_forget_acc`` and
    ``forget_acc_trace`` (``[step, share of D_f still in its class]`` at each check), and
    method-specific values (e.g. Boundary Shrink's ``attack_success_ratio``); empty for a
    model no method returned.

    Args:
        model: a model.

    Returns:
        A copy of the stats.

    Example:
        >>> unlearning_stats(nn.Linear(1, 1))
        {}
    """
    return dict(_stats.get(model, {}))
