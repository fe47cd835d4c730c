"""The stopping-rule protocol and what a run records.

:class:`StoppingRule` lists the hooks :func:`~boundary_unlearning.training.fit` calls;
:class:`FitRun` is what a rule may read about the run. :class:`NeverStop` is the rule of an
unmonitored run, :class:`AllOf` stops when every one of several rules would.
:class:`FitResult` is what one ``fit`` did (steps, and the rule's target, verdict and
trace); :func:`collect_fits` gathers the results of every ``fit`` inside a block, which is
how the method registry learns how many steps a method took.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..distributed_training import DistributedFit
from ..recipe import Recipe, RunOptions

__all__ = [
    "AllOf",
    "FitResult",
    "FitRun",
    "NeverStop",
    "NotBefore",
    "StoppingRule",
    "collect_fits",
    "record_fit",
]


@dataclass
class FitResult:
    """What one call of ``fit`` did.

    Args:
        desc: the run's label (e.g. ``"finetune"``).
        steps: optimiser steps taken.
        target: the forgetting target, or ``None`` for an unmonitored run.
        reached_target: whether D_f went down to the target (``None``: no target).
        forget_trace: ``(step, share of D_f still in its class)`` at each check.

    Example:
        >>> FitResult("finetune", 12)
        FitResult(desc='finetune', steps=12, target=None, reached_target=None, forget_trace=[])
    """

    desc: str
    steps: int
    target: float | None = None
    reached_target: bool | None = None
    forget_trace: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class FitRun:
    """What a stopping rule may read about the run it watches (``fit`` makes one per run).

    Args:
        model: the model being trained.
        desc: the run's label, for messages.
        recipe: the run's optimisation settings.
        options: its run options (``compile_model`` hides the forward passes from hooks).
        steps_per_epoch: batches in one pass over the data.
        budget: the most steps the run takes.
        sync: the distributed step under torchrun, else ``None``.
        result: the run's :class:`FitResult`; a rule records its target, checks and verdict.
        show: shows values beside the progress bar (``show(forget_acc="0.050")``).
    """

    model: nn.Module
    desc: str
    recipe: Recipe
    options: RunOptions
    steps_per_epoch: int
    budget: int
    sync: DistributedFit | None
    result: FitResult
    show: Callable[..., Any]


class StoppingRule(Protocol):
    """The hooks ``fit`` calls on a stopping rule, in this order:

    ``start(run)`` once before the first step (install forward hooks, read the run);
    around every step ``before_step()`` (before the step's forward pass) and, after the
    optimiser step, ``after_step(step, rows)``, which says whether an exact check is due;
    ``check(model, step)`` when it is (``True``: stop now); ``finish(model, step, stopped)``
    once when the run ends, stopped or out of budget, giving the run's ``reached_target``;
    ``close()`` always, last (remove hooks).

    A loss function may draw extra batches of its own (a retain batch per step): the rule
    sees the model's first forward pass of each step, which is the step's training batch
    when the loss runs it first.
    """

    def start(self, run: FitRun) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self, step: int, rows: torch.Tensor) -> bool: ...

    def check(self, model: nn.Module, step: int) -> bool: ...

    def finish(self, model: nn.Module, step: int, stopped: bool) -> bool | None: ...

    def close(self) -> None: ...


class NeverStop:
    """The rule of an unmonitored run: train the whole budget, no verdict.

    Example:
        >>> rule = NeverStop()
        >>> rule.after_step(3, torch.arange(2)), rule.finish(nn.Linear(1, 1), 3, False)
        (False, None)
    """

    def start(self, run: FitRun) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self, step: int, rows: torch.Tensor) -> bool:
        return False

    def check(self, model: nn.Module, step: int) -> bool:
        return False

    def finish(self, model: nn.Module, step: int, stopped: bool) -> bool | None:
        return None

    def close(self) -> None:
        pass


class AllOf:
    """Stop only when every rule would: a check is due when every rule says so, the rules
    are checked in order and the first that does not pass ends the check (put the cheap
    ones first: a forgetting target reads the forget set), and the run reached its target
    when all of the rules that give a verdict did (a rule whose ``finish`` returns ``None``
    has none).

    Args:
        *rules: the rules (e.g. a :class:`ForgetTarget` and a feature criterion).

    Example:
        >>> both = AllOf(NeverStop(), NeverStop())
        >>> both.after_step(1, torch.arange(2)), both.finish(nn.Linear(1, 1), 1, False)
        (False, None)
    """

    def __init__(self, *rules: StoppingRule) -> None:
        self.rules = rules

    def start(self, run: FitRun) -> None:
        for rule in self.rules:
            rule.start(run)

    def before_step(self) -> None:
        for rule in self.rules:
            rule.before_step()

    def after_step(self, step: int, rows: torch.Tensor) -> bool:
        due = [rule.after_step(step, rows) for rule in self.rules]  # every rule sees the step
        return all(due)

    def check(self, model: nn.Module, step: int) -> bool:
        return all(rule.check(model, step) for rule in self.rules)

    def finish(self, model: nn.Module, step: int, stopped: bool) -> bool | None:
        reached = [rule.finish(model, step, stopped) for rule in self.rules]
        verdicts = [r for r in reached if r is not None]
        return all(verdicts) if verdicts else None

    def close(self) -> None:
        for rule in self.rules:
            rule.close()


_collectors: contextvars.ContextVar[tuple[list[FitResult], ...]] = contextvars.ContextVar(
    "fit_collectors", default=()
)


@contextlib.contextmanager
def collect_fits() -> Iterator[list[FitResult]]:
    """Collect the :class:`FitResult` of every ``fit`` call made inside the block, nested
    blocks included (a combination of methods sees the fits of both stages).

    Returns:
        A context manager giving the list the results are appended to.

    Example:
        >>> with collect_fits() as outer:
        ...     with collect_fits() as inner:
        ...         record_fit(FitResult("stage 1", 3))
        ...     record_fit(FitResult("stage 2", 5))
        >>> [f.steps for f in inner], [f.steps for f in outer]
        ([3], [3, 5])
    """
    results: list[FitResult] = []
    token = _collectors.set((*_collectors.get(), results))
    try:
        yield results
    finally:
        _collectors.reset(token)


def record_fit(result: FitResult) -> None:
    """Hand ``result`` to every open :func:`collect_fits` block (``fit`` calls it).

    Args:
        result: what one run did.

    Example:
        >>> record_fit(FitResult("outside any block", 1))  # nobody collects: a no-op
        >>> with collect_fits() as fits:
        ...     record_fit(FitResult("demo", 2))
        >>> fits
        [FitResult(desc='demo', steps=2, target=None, reached_target=None, forget_trace=[])]
    """
    for results in _collectors.get():
        results.append(result)


class NotBefore:
    """A minimum number of steps before another rule may stop the run: ``rule`` is checked
    only from step ``steps`` on (once at that step, then whenever it asks). A run whose
    budget is larger than ``steps`` goes on until ``rule`` passes or the budget runs out.

    Args:
        steps: the fewest steps the run takes.
        rule: the rule that decides from then on.

    Example:
        >>> later = NotBefore(3, NeverStop())
        >>> later.after_step(2, torch.arange(2)), later.after_step(3, torch.arange(2))
        (False, True)
        >>> later.check(nn.Linear(1, 1), 3)  # NeverStop never passes
        False
    """

    def __init__(self, steps: int, rule: StoppingRule) -> None:
        self.steps, self.rule = steps, rule

    def start(self, run: FitRun) -> None:
        self.rule.start(run)

    def before_step(self) -> None:
        self.rule.before_step()

    def after_step(self, step: int, rows: torch.Tensor) -> bool:
        due = self.rule.after_step(step, rows)  # the rule sees every step
        return step == self.steps or (step > self.steps and due)

    def check(self, model: nn.Module, step: int) -> bool:
        return step >= self.steps and self.rule.check(model, step)

    def finish(self, model: nn.Module, step: int, stopped: bool) -> bool | None:
        return self.rule.finish(model, step, stopped)

    def close(self) -> None:
        self.rule.close()
