"""What a method did: the stats the registry records for the model a method returns
(:func:`unlearning_stats`), gathered from its ``fit`` calls (:func:`fit_stats`) and the
method's own values, and the :class:`ForgettingWarning` when it missed its target."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .._utils import outside_stacklevel
from ..stopping import FitResult

__all__ = [
    "ForgettingWarning",
    "fit_stats",
    "set_unlearning_stats",
    "unlearning_stats",
    "warn_not_forgotten",
]

_stats: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


class ForgettingWarning(UserWarning):
    """A method's step budget ran out before it reached its forgetting target.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("ignore", ForgettingWarning)  # silence just this kind
        ...     warn_not_forgotten("neg_grad", {"steps": 10})
        >>> caught
        []
    """


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
        stacklevel=outside_stacklevel(),  # the caller's line, outside this package
    )


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
