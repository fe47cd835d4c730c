"""Settings declared once, next to what takes them, and one check for all of them.

A setting's type and range are its annotation: ``eps: Positive = 0.1`` on a method,
``seed: Seed = 0`` on a recipe, a split or a config. The aliases below are
``typing.Annotated[T, Range(...)]``; :func:`check_setting` reads the annotation, checks the
value's type (:func:`fits`) and its range, and raises one
:class:`~boundary_unlearning.errors.HyperparameterError` line naming the setting, the value
and what it must be. A setting without a declared range has none: nothing is inferred from a
name.

Type checks read user input (keyword arguments, YAML files) against the annotations of the
code that takes it: ints pass as floats, lists as tuples (and back), ``bool`` is never an
int, and annotations the check does not understand (``Callable[...]``, other generics)
accept anything.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import reprlib
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from .errors import HyperparameterError

__all__ = [
    "AtLeastOne",
    "Growth",
    "NonNegative",
    "Positive",
    "Range",
    "Seed",
    "Share",
    "StepBudget",
    "UnitFraction",
    "Whole",
    "check_setting",
    "fits",
    "marked",
    "range_of",
    "type_text",
]


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take, declared on its annotation
    (``Annotated[float, Range(low=0, low_open=True)]``). A float must also be finite.

    Args:
        low: the smallest value (``None``: no bound).
        high: the largest value (``None``: no bound).
        low_open: ``low`` itself is excluded.
        high_open: ``high`` itself is excluded.
        text: what the message says a value must be.

    Example:
        >>> Range(low=0, low_open=True, text="a positive number").holds(0.0)
        False
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    text: str = ""

    def __repr__(self) -> str:
        return f"Range({self.text!r})"

    def holds(self, value: float) -> bool:
        """Whether ``value`` lies in the range (NaN and infinities never do).

        Args:
            value: a number.

        Returns:
            ``True`` inside the range.

        Example:
            >>> Range(low=1).holds(1), Range(low=1).holds(float("inf"))
            (True, False)
        """
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


class _Marker:
    """A flag on an annotation (``Annotated[int, Range(...), StepBudget]``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# A method's step budget (epochs, max_steps): zero steps return the model unchanged, which
# bunlearn unlearn/run refuse to report as unlearning (the API allows it: an oracle).
StepBudget = _Marker("StepBudget")

Positive = Annotated[float, Range(low=0, low_open=True, text="a positive number")]
NonNegative = Annotated[float, Range(low=0, text="a number >= 0")]
Growth = Annotated[float, Range(low=1, text="a number >= 1")]
UnitFraction = Annotated[float, Range(low=0, high=1, low_open=True, text="a number in (0, 1]")]
Share = Annotated[float, Range(low=0, high=1, high_open=True, text="a number in [0, 1)")]
Whole = Annotated[int, Range(low=0, text="a whole number >= 0")]
AtLeastOne = Annotated[int, Range(low=1, text="a whole number >= 1")]
Seed = Annotated[
    int, Range(low=0, high=2**63, high_open=True, text="a whole number in 0 .. 2**63-1")
]


def fits(value: Any, tp: Any, *, nan_ok: bool = False, depth: int = 0) -> tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``tp``, and the value normalised to it.

    Args:
        value: what the user gave.
        tp: the annotation (``float``, ``int | None``, ``Literal["a", "b"]``,
            ``tuple[float, ...]``, ``list[str]``, ``dict[str, float]``, ...).
        nan_ok: whether a float NaN fits ``float`` (a config lets the range check name it).
        depth: recursion depth (a self-referencing list, YAML ``&a [*a]``, fits nothing).

    Returns:
        ``(ok, value)``: ints become floats where a float is expected, lists become tuples
        where a tuple is (and tuples lists); ``value`` unchanged when it does not fit.

    Example:
        >>> fits(1, float), fits(True, int), fits([1, 2], tuple[float, ...])
        ((True, 1.0), (False, True), (True, (1.0, 2.0)))
        >>> fits("pgd", Literal["fgsm", "pgd"]), fits(float("nan"), float)
        ((True, 'pgd'), (False, nan))
    """
    if depth > 20:
        return False, value
    if tp is Any or tp is inspect.Parameter.empty:
        return True, value
    if tp is None or tp is type(None):
        return value is None, value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return fits(value, args[0], nan_ok=nan_ok, depth=depth + 1)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args), value
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, out = fits(value, arg, nan_ok=nan_ok, depth=depth + 1)
            if ok:
                return True, out
        return False, value
    deeper: dict[str, Any] = {"nan_ok": nan_ok, "depth": depth + 1}
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False, value
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False, value
            items = [fits(v, a, **deeper) for v, a in zip(value, args, strict=True)]
        else:
            item_t = args[0] if args else Any
            items = [fits(v, item_t, **deeper) for v in value]
        if not all(ok for ok, _ in items):
            return False, value
        values = [v for _, v in items]
        return True, values if origin is list else tuple(values)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return False, value
        key_t, val_t = args if args else (Any, Any)
        pairs = [(fits(k, key_t, **deeper), fits(v, val_t, **deeper)) for k, v in value.items()]
        if not all(k[0] and v[0] for k, v in pairs):
            return False, value
        return True, {k[1]: v[1] for k, v in pairs}
    if origin is not None:
        return True, value  # Callable[...] and other generics: not checked
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return nan_ok or not math.isnan(value), float(value)
        return False, value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _members(tp: Any) -> tuple[Any, ...]:
    """The alternatives of a union (``X | None``), else ``(tp,)``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _metadata(tp: Any) -> list[Any]:
    return [
        extra for member in _members(tp) if typing.get_origin(member) is Annotated
        for extra in member.__metadata__
    ]  # fmt: skip


def range_of(tp: Any) -> Range | None:
    """The :class:`Range` an annotation declares (on itself or on a union member).

    Args:
        tp: an annotation.

    Returns:
        The range, or ``None`` when none is declared.

    Example:
        >>> range_of(Positive | None).text, range_of(float)
        ('a positive number', None)
    """
    return next((m for m in _metadata(tp) if isinstance(m, Range)), None)


def marked(tp: Any, marker: Any) -> bool:
    """Whether an annotation carries ``marker`` (e.g. :data:`StepBudget`).

    Args:
        tp: an annotation.
        marker: the flag.

    Returns:
        ``True`` when one of its ``Annotated`` members lists the flag.

    Example:
        >>> marked(Annotated[int, StepBudget] | None, StepBudget), marked(int, StepBudget)
        (True, False)
    """
    return any(m is marker for m in _metadata(tp))


def type_text(tp: Any) -> str:
    """An annotation in words, for messages: ``int or None``, ``one of 'a', 'b'``.

    Args:
        tp: an annotation.

    Returns:
        The words.

    Example:
        >>> type_text(Whole | None), type_text(Literal["sgd", "adam"])
        ('int or None', "one of 'sgd', 'adam'")
    """
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return type_text(typing.get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin is not None:
        return str(tp).replace("typing.", "").replace("collections.abc.", "")
    return str(getattr(tp, "__name__", tp))


_NO_DEFAULT: Any = inspect.Parameter.empty


def check_setting(
    name: str, value: Any, tp: Any, *, where: str = "", default: Any = _NO_DEFAULT
) -> Any:
    """Check ``value`` against the annotation ``tp`` of setting ``name``: its type, then the
    range the annotation declares. Return the value normalised to the type.

    Args:
        name: the setting's name.
        value: what the caller gave.
        tp: the setting's annotation (``Positive``, ``Whole | None``, ``Literal[...]``, ...).
        where: names the method or run in the message (``"boundary_shrink"``, ``"train"``).
        default: the setting's default, named in the message.

    Returns:
        The value, ints as floats where a float is expected, lists as tuples where a tuple
        is.

    Raises:
        HyperparameterError: a wrong type, a choice not offered, or a value out of range.

    Example:
        >>> check_setting("lr", 1, Positive)
        1.0
        >>> check_setting("lr", 0, Positive, where="demo", default=0.1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.HyperparameterError: demo: lr=0.0 must be a positive number; ...
    """
    prefix = f"{where}: " if where else ""
    ok, value = fits(value, tp)
    bounds = range_of(tp)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and not math.isfinite(value):
        if bounds is not None:  # NaN: the range says it first
            _refuse(prefix, name, value, bounds, default)
        raise HyperparameterError(f"{prefix}{name}={value!r} must be a finite number")
    if not ok:
        problem = "is not" if typing.get_origin(tp) is Literal else "has the wrong type; expected"
        hint = f" (the default is {default!r})" if default not in (None, _NO_DEFAULT) else ""
        raise HyperparameterError(
            f"{prefix}{name}={reprlib.repr(value)} {problem} {type_text(tp)}{hint}"
        )
    if bounds is not None and number and not bounds.holds(value):
        _refuse(prefix, name, value, bounds, default)
    return value


def _refuse(prefix: str, name: str, value: Any, bounds: Range, default: Any) -> None:
    hint = "" if default is _NO_DEFAULT else f"; the default is {default!r}"
    raise HyperparameterError(f"{prefix}{name}={value!r} must be {bounds.text}{hint}")
