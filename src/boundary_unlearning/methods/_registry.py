"""The method registry: ``@register_method(name, cost=...)``, ``unlearn(name, ...)``.

One convention for methods and models (:func:`~boundary_unlearning.models.register_model`):
the decorator records the function under its name and returns it unchanged. A method's
function says everything it takes in its own signature: its own hyperparameters (with their
declared types and ranges, :mod:`boundary_unlearning.checks`), ``recipe: <Recipe> = <its
default recipe>`` when it trains, and ``options: RunOptions`` for the progress bar and speed
options. :class:`MethodSpec` is the checked entry by name, with every setting a flat keyword
(the function's own, the recipe's fields, ``preset``, the run options): it validates them
once, checks the model and data once, calls the function and records what its training did.
``unlearn(name, ...)`` and the package's ``boundary_shrink``, ``retrain``, ... are that entry.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from torch import nn

from ..checks import StepBudget, marked
from ..data.split import UnlearningData
from ..errors import HyperparameterError, unknown_name
from ..recipe import OPTION_FIELDS, Recipe, RunOptions
from ..stopping import collect_fits
from ._common import check_inputs, require_retain
from ._stats import fit_stats, set_unlearning_stats, unlearning_stats, warn_not_forgotten
from ._validate import check_hyperparameters

__all__ = [
    "Cost",
    "MethodSpec",
    "get_method",
    "list_methods",
    "register_method",
    "unlearn",
    "validate_hyperparameters",
]

# What a method reads besides the model: D_f only; D_f and a bounded sample of D_r (at most a
# fixed number of images, whatever the size of D_r); D_r (or all the training data); a record
# written while the original was trained; or everything (it trains from scratch).
Cost = Literal["forget", "sample", "retain", "record", "reference"]
MethodFn = Callable[..., nn.Module]
F = TypeVar("F", bound=MethodFn)

# Positional parameters every method takes; everything after them is a hyperparameter.
_POSITIONAL = ("model", "data")
# Keyword parameters of a method's function that the registry fills in: the recipe (whose
# fields are flat hyperparameters) and the run options (not hyperparameters).
_INJECTED = ("recipe", "options")


@dataclass(frozen=True, repr=False)
class MethodSpec:
    """A registered unlearning method, and its checked entry point.

    ``fn(model, data, *, <its own hyperparameters>, [recipe], [options])`` is the method as
    its module declares it. Called, the spec takes every setting as a flat keyword (the
    function's own, the fields of its default ``recipe``, ``preset`` when it has presets,
    ``keywords`` a function with ``**settings`` declares, and the
    :class:`~boundary_unlearning.recipe.RunOptions` fields), validates them once, checks the
    inputs once, calls ``fn`` and records what the training did (see
    :func:`unlearning_stats`).

    Registered by :func:`register_method`; look one up with :func:`get_method`.

    Example:
        >>> spec = get_method("ssd")
        >>> spec.name, spec.cost, spec.recipe is None, sorted(spec.presets)
        ('ssd', 'retain', True, [])
    """

    name: str
    fn: MethodFn
    cost: Cost
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    keywords: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)

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
    def _signature(self) -> Mapping[str, inspect.Parameter]:
        return inspect.signature(self.fn).parameters

    @functools.cached_property
    def _own(self) -> dict[str, Any]:
        """The function's own hyperparameters and their defaults (``keywords`` included)."""
        own = {
            name: p.default
            for name, p in self._signature.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _INJECTED
        }
        return {**own, **{name: default for name, (default, _) in self.keywords.items()}}

    @property
    def recipe(self) -> Recipe | None:
        """The method's default training recipe (its ``recipe`` parameter's default), or
        ``None`` for a method that does not train with one.

        Example:
            >>> get_method("finetune").recipe.epochs, get_method("ssd").recipe is None
            (5, True)
        """
        param = self._signature.get("recipe")
        return param.default if param is not None else None

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """Every hyperparameter and its default (the library's default preset).

        Returns:
            Name -> default: ``preset`` first when the method has presets, then the
            method's own, then its recipe's fields.

        Example:
            >>> get_method("ssd").hyperparameters
            {'selection_weight': 10.0, 'dampening_constant': 1.0, 'batch_size': 64, 'seed': 0}
        """
        out: dict[str, Any] = {}
        if self.presets:
            out["preset"] = "default"
        out.update(self._own)
        if self.recipe is not None:
            out.update(dataclasses.asdict(self.recipe))
        return out

    @functools.cached_property
    def hints(self) -> dict[str, Any]:
        """The declared annotation (type, and range where declared) of every hyperparameter.

        Returns:
            Name -> annotation (the function's own, its recipe's fields', ``keywords``',
            ``preset``'s ``Literal`` of the preset names).

        Example:
            >>> get_method("ssd").hints["selection_weight"]
            typing.Annotated[float, Range('a positive number')]
            >>> get_method("neg_grad").hints["preset"]
            typing.Literal['default', 'paper']
        """
        try:
            hints = typing.get_type_hints(self.fn, include_extras=True)
        except Exception:  # an annotation that cannot be resolved: the defaults' types serve
            hints = {}
        hints = {name: hints[name] for name in self._own if name in hints}
        hints.update({name: hint for name, (_, hint) in self.keywords.items()})
        if self.recipe is not None:
            hints.update(typing.get_type_hints(type(self.recipe), include_extras=True))
        if self.presets:
            hints["preset"] = Literal[("default", *self.presets)]
        return hints

    @property
    def step_budgets(self) -> list[str]:
        """The hyperparameters that bound how many steps the method takes (declared with
        :data:`~boundary_unlearning.checks.StepBudget`: the recipe's ``epochs`` and
        ``max_steps``, a combination's stages').

        Example:
            >>> get_method("finetune").step_budgets
            ['epochs', 'max_steps']
        """
        return [name for name, hint in self.hints.items() if marked(hint, StepBudget)]

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

    def arguments(self, values: Mapping[str, Any], options: RunOptions) -> dict[str, Any]:
        """The keyword arguments of ``fn`` for resolved ``values``: its own, its recipe
        (the default recipe with the values of its fields), the run options.

        Args:
            values: every hyperparameter's value (:meth:`resolve`).
            options: the run options.

        Returns:
            ``fn``'s keyword arguments.

        Example:
            >>> spec = get_method("finetune")
            >>> spec.arguments(spec.resolve({"lr": 0.5}), RunOptions())["recipe"].lr
            0.5
        """
        kwargs = {k: v for k, v in values.items() if k in self._own}
        if self.recipe is not None:
            fields = dataclasses.asdict(self.recipe)
            kwargs["recipe"] = self.recipe.replace(**{k: values[k] for k in fields})
        if "options" in self._signature:
            kwargs["options"] = options
        return kwargs

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
        check_inputs(model, data, self.name)
        if self.cost in ("retain", "reference"):
            require_retain(data, self.name)
        with collect_fits() as fits:
            out = self.fn(model, data, **self.arguments(values, options))
        # the method's own values, then what all of its training did (a combination's stage
        # recorded its own steps on its output; the combination's are both stages')
        stats = {**unlearning_stats(out), **fit_stats(fits)}
        set_unlearning_stats(out, stats)
        if stats.get("reached_target") is False:
            warn_not_forgotten(self.name, stats)
        return out

    def __repr__(self) -> str:
        """The method's name and hyperparameters, as a call.

        Example:
            >>> get_method("ssd")
            ssd(selection_weight=10.0, dampening_constant=1.0, batch_size=64, seed=0)
        """
        values = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{self.name}({values})"


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    *,
    cost: Cost,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    keywords: Mapping[str, tuple[Any, Any]] | None = None,
) -> Callable[[F], F]:
    """Register ``fn(model, data, *, <hyperparameters>, [recipe], [options])`` as ``name``.

    Args:
        name: the method's registry name.
        cost: what data the method touches (``forget``, ``retain``, ``record``,
            ``reference``).
        presets: named sets of hyperparameter values (e.g. ``"paper"``) that replace the
            defaults when the caller passes ``preset=NAME``.
        keywords: for a function that takes ``**settings``, the settings it takes:
            name -> ``(default, annotation)`` (a combination's, derived from its stages).

    Returns:
        A decorator that records the method and returns ``fn`` unchanged (as
        :func:`~boundary_unlearning.models.register_model` does); :func:`get_method` and
        :func:`unlearn` give the checked entry.

    Raises:
        ValueError: ``name`` is already registered (raised by the decorator).
        TypeError: ``fn`` does not take ``(model, data, *, ...)`` (raised by the decorator).

    Example:
        >>> import copy
        >>> @register_method("demo_copy", cost="forget")
        ... def demo_copy(model, data, *, scale: float = 1.0):
        ...     '''Return an unchanged copy.'''
        ...     return copy.deepcopy(model)
        >>> demo_copy.__name__, get_method("demo_copy").hyperparameters
        ('demo_copy', {'scale': 1.0})
        >>> del _REGISTRY["demo_copy"]  # leave the registry as it was
    """

    def wrap(fn: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"method '{name}' is already registered")
        params = list(inspect.signature(fn).parameters)
        if tuple(params[:2]) != _POSITIONAL:
            raise TypeError(f"method '{name}' must take (model, data, *, ...)")
        _REGISTRY[name] = MethodSpec(name, fn, cost, dict(presets or {}), dict(keywords or {}))
        return fn

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
        >>> get_method("boundary_expanding").cost  # D_f and a bounded sample of D_r
        'sample'
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
        >>> new = unlearn("boundary_shrink", net, data, feature_steps=5)
        >>> new is net, unlearning_stats(new)["reached_target"]
        (False, True)
    """
    return get_method(name)(model, data, **hparams)
