"""What a training run is made of: the :class:`Recipe` (what is learned, and the step budget)
and the :class:`RunOptions` (how it runs: progress bars and speed options that do not change
the result). Every method that trains and :func:`~boundary_unlearning.training.fit` take
these two objects, so a setting is declared, validated and documented once.

Configuration only: when a run stops early, and what it did, is
:mod:`boundary_unlearning.stopping`'s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from .errors import HyperparameterError

__all__ = [
    "BNMode",
    "OptimizerName",
    "Recipe",
    "RunOptions",
]

OptimizerName = Literal["sgd", "adam"]
BNMode = Literal["train", "freeze"]


def _whole(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """The optimisation settings of one training run.

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
        target_forget_acc: stop as soon as the share of the forget set still predicted as its
            own class is at or below this value (the forget-only methods hand it to their
            :class:`~boundary_unlearning.stopping.ForgetTarget`). ``None``:
            train the whole budget.

    Example:
        >>> Recipe(lr=1e-3, max_steps=200, target_forget_acc=0.05).limit(steps_per_epoch=10)
        200
    """

    epochs: int | None = None
    max_steps: int | None = None
    lr: float = 0.01
    lr_growth: float = 1.0
    max_lr: float = 0.1
    optimizer: OptimizerName = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0
    bn: BNMode = "train"
    target_forget_acc: float | None = None

    def check(self, what: str = "training") -> None:
        """Raise :class:`HyperparameterError` naming the first setting out of range.

        Args:
            what: names the run in the error message.

        Raises:
            HyperparameterError: a setting out of range, or neither ``epochs`` nor
                ``max_steps`` set.

        Example:
            >>> Recipe(epochs=2).check()
            >>> Recipe(epochs=None).check("finetune")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            boundary_unlearning.errors.HyperparameterError: finetune: set epochs or max_steps ...
        """
        if self.epochs is not None and not _whole(self.epochs, 0):
            raise HyperparameterError(
                f"{what}: epochs={self.epochs!r} must be a whole number >= 0 (passes over the data)"
            )
        if self.max_steps is not None and not _whole(self.max_steps, 0):
            raise HyperparameterError(
                f"{what}: max_steps={self.max_steps!r} must be a whole number >= 0"
            )
        if self.epochs is None and self.max_steps is None:
            raise HyperparameterError(f"{what}: set epochs or max_steps (or both)")
        if not _whole(self.batch_size, 1):
            raise HyperparameterError(
                f"{what}: batch_size={self.batch_size!r} must be a whole number >= 1"
            )
        if not _number(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
            raise HyperparameterError(f"lr={self.lr!r} must be a positive (finite) number")
        if not _number(self.lr_growth) or not math.isfinite(self.lr_growth) or self.lr_growth < 1:
            raise HyperparameterError(f"{what}: lr_growth={self.lr_growth!r} must be a number >= 1")
        if not _number(self.max_lr) or not math.isfinite(self.max_lr) or self.max_lr <= 0:
            raise HyperparameterError(f"{what}: max_lr={self.max_lr!r} must be a positive number")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not _number(value) or not math.isfinite(value) or value < 0:
                raise HyperparameterError(f"{name}={value!r} must be a finite number >= 0")
        if not _whole(self.seed, 0) or self.seed >= 2**63:
            raise HyperparameterError(f"seed={self.seed!r} must be a whole number in 0 .. 2**63-1")
        if self.optimizer not in ("sgd", "adam"):
            raise HyperparameterError(f"optimizer='{self.optimizer}' is not one of 'sgd', 'adam'")
        if self.bn not in ("train", "freeze"):
            raise HyperparameterError(f"bn='{self.bn}' is not one of 'train', 'freeze'")
        target = self.target_forget_acc
        if target is not None and (not _number(target) or not 0 <= target < 1):
            raise HyperparameterError(
                f"{what}: target_forget_acc={target!r} must be a number in [0, 1) (e.g. 0.05)"
            )

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
