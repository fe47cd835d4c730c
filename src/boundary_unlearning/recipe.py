"""What a training run is made of: the :class:`Recipe` (what is learned, and the step budget)
and the :class:`RunOptions` (how it runs: progress bars and speed options that do not change
the result). Every method that trains and :func:`~boundary_unlearning.training.fit` take
these two objects, so a setting is declared, validated and documented once.

Configuration only: when a run stops early, and what it did, is
:mod:`boundary_unlearning.stopping`'s.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from .checks import (
    AtLeastOne,
    Growth,
    NonNegative,
    Positive,
    Seed,
    Share,
    StepBudget,
    Whole,
    check_setting,
)
from .errors import HyperparameterError

__all__ = [
    "BNMode",
    "ForgetRecipe",
    "OptimizerName",
    "Recipe",
    "RunOptions",
]

OptimizerName = Literal["sgd", "adam"]
BNMode = Literal["train", "freeze"]
# A step budget: epochs or optimiser steps, 0 or more (0: the model is returned unchanged).
Budget = Annotated[Whole, StepBudget]


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """The optimisation settings of one training run. Each field's annotation declares its
    type and range (:mod:`boundary_unlearning.checks`); :meth:`check` applies them.

    Args:
        epochs: passes over the data. ``None``: no pass limit (``max_steps`` bounds the run).
        max_steps: optimiser steps at most. ``None``: ``epochs`` alone bounds the run. When
            both are set, whichever is reached first ends the run.
        lr: learning rate (of the first step, with ``lr_growth``).
        lr_growth: multiply the learning rate by this factor after every step (1: constant),
            up to ``max_lr``. With a forgetting target this makes the rule scale-free: the
            rate grows only until the model forgets, so a plateau cannot exhaust the budget.
        max_lr: cap of the growing learning rate.
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum (Adam ignores it).
        weight_decay: L2 penalty.
        batch_size: samples per step.
        seed: the batch order (and whatever else the method draws).
        bn: ``"train"`` updates BatchNorm statistics on the training batches; ``"freeze"``
            keeps the model's running statistics (BatchNorm layers in eval mode; their affine
            weights still train).
        clip_to_first: clip every step's gradient norm to this multiple of the first step's
            (``None``: no clipping). Scale-free: no step is larger than the first, whatever
            the loss's scale, so a loss that steepens as it trains cannot blow the run up.

    Example:
        >>> Recipe(lr=1e-3, max_steps=200).limit(steps_per_epoch=10)
        200
    """

    epochs: Budget | None = None
    max_steps: Budget | None = None
    lr: Positive = 0.01
    lr_growth: Growth = 1.0
    max_lr: Positive = 0.1
    optimizer: OptimizerName = "sgd"
    momentum: NonNegative = 0.9
    weight_decay: NonNegative = 0.0
    batch_size: AtLeastOne = 64
    seed: Seed = 0
    bn: BNMode = "train"
    clip_to_first: Growth | None = None

    def check(self, what: str = "training") -> None:
        """Raise :class:`HyperparameterError` naming the first field whose value does not
        fit its declared type and range, or neither ``epochs`` nor ``max_steps`` set.

        Args:
            what: names the run in the error message.

        Raises:
            HyperparameterError: a setting out of range, or no step budget.

        Example:
            >>> Recipe(epochs=2).check()
            >>> Recipe(epochs=None).check("finetune")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            boundary_unlearning.errors.HyperparameterError: finetune: set epochs or max_steps ...
            >>> Recipe(epochs=1, lr=-1).check("train")
            Traceback (most recent call last):
            ...
            boundary_unlearning.errors.HyperparameterError: train: lr=-1.0 must be a positive number
        """
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            check_setting(f.name, getattr(self, f.name), hints[f.name], where=what)
        if self.epochs is None and self.max_steps is None:
            raise HyperparameterError(f"{what}: set epochs or max_steps (or both)")

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied (``fit`` checks a recipe before it trains).

        Args:
            **changes: field -> new value.

        Returns:
            The new recipe.

        Example:
            >>> Recipe(lr=0.01).replace(lr=0.1).lr
            0.1
        """
        return dataclasses.replace(self, **changes)

    def limit(self, steps_per_epoch: int) -> int:
        """The number of optimiser steps this recipe allows at ``steps_per_epoch``.

        Args:
            steps_per_epoch: batches in one pass over the data.

        Returns:
            ``epochs * steps_per_epoch`` or ``max_steps``, whichever is smaller (of those set).

        Example:
            >>> Recipe(epochs=2).limit(10), Recipe(epochs=2, max_steps=5).limit(10)
            (20, 5)
        """
        bounds = []
        if self.epochs is not None:
            bounds.append(self.epochs * steps_per_epoch)
        if self.max_steps is not None:
            bounds.append(self.max_steps)
        return min(bounds)


RECIPE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Recipe))


_HINTS: dict[type[Recipe], dict[str, Any]] = {}


def _hints(cls: type[Recipe]) -> dict[str, Any]:
    """The declared annotations of a recipe class's fields (resolved once per class)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return _HINTS[cls]


@dataclass(frozen=True, kw_only=True)
class ForgetRecipe(Recipe):
    """A forget-only method's training: a :class:`Recipe` that stops at a forgetting target.

    Args:
        target_forget_acc: stop as soon as the share of the forget set still predicted as its
            own class is at or below this value (the rule is
            :class:`~boundary_unlearning.stopping.ForgetTarget`). ``None``: train the whole
            budget.
        **recipe: the :class:`Recipe` fields.

    Example:
        >>> ForgetRecipe(max_steps=10).target_forget_acc
        0.05
    """

    target_forget_acc: Share | None = 0.05


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a run executes; none of these changes what is learned (up to float rounding).

    Args:
        progress: show a progress bar.
        amp: compute the loss under ``torch.autocast`` in bfloat16 (meant for CUDA).
        channels_last: channels-last memory format for the model and 4-D inputs.
        compile_model: evaluate the loss on ``torch.compile(model)``.

    Example:
        >>> RunOptions(progress=True).amp
        False
    """

    progress: bool = False
    amp: bool = False
    channels_last: bool = False
    compile_model: bool = False


OPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunOptions))
