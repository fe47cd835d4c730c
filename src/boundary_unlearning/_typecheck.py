"""Does a value fit a type annotation? One check for method hyperparameters and config keys.

Both read user input (keyword arguments, YAML files) against the annotations of the code
that takes it: ints pass as floats, lists as tuples (and back), ``bool`` is never an int,
and annotations the check does not understand (``Callable[...]``, other generics) accept
anything.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from typing import Any, Literal, Union

__all__ = ["fits"]


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
