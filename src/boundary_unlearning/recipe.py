"""What a training run is made of: the :class:`Recipe` (what is learned and when to stop) and
the :class:`RunOptions` (how it runs: progress bars and speed options that do not change the
result). Every method and :func:`~boundary_unlearning.training.fit` take these two objects, so
a setting is declared, validated and documented once.

The stopping rule lives here too: with ``target_forget_acc`` set, ``fit`` measures the share
of the forget set still predicted as its own class (:class:`ForgetMonitor`) and stops as soon
as it is at or below the target; ``max_steps`` bounds the run either way.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ._utils import eval_mode, model_device
from .data.streaming import input_batches
from .errors import HyperparameterError

__all__ = [
    "BNMode",
    "FitResult",
    "ForgetMonitor",
    "OptimizerName",
    "Recipe",
    "RunOptions",
    "collect_fits",
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
            own class is at or below this value (needs a :class:`ForgetMonitor`). ``None``:
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


class ForgetMonitor:
    """Measures the share of forget samples a model still assigns to their own class.

    Only the first ``num_classes`` logits count, so a model with an extra (shadow) output is
    scored as it will be once that output is pruned. A check (calling the monitor) scores at
    most ``max_samples`` samples (a seeded choice) in eval mode, mode restored. Between checks
    :func:`~boundary_unlearning.training.fit` reads the predictions its training forward
    passes already make on each batch (:meth:`batch_counts`) and runs a check only when the
    latest batch is at or below the target, so the stopping rule costs about one forward pass
    over D_f per run.

    Args:
        inputs: forget images, as the model takes them, in the order ``fit`` trains on them.
        labels: their true classes.
        num_classes: the classifier's classes (without a shadow class).
        max_samples: cap on the samples scored per check.
        seed: which samples are scored when the cap applies.
        head: the final layer, when it is the only layer that trains. The network below it
            is then fixed (BatchNorm frozen), so its output for each forget image never
            changes: ``fit`` keeps what the training steps computed (unless the model has
            dropout) and a check only runs the head on those features.

    Example:
        >>> net = nn.Linear(4, 3)
        >>> ForgetMonitor(torch.zeros(5, 4), torch.zeros(5, dtype=torch.long), 3)(net) in (0, 1)
        True
    """

    def __init__(
        self,
        inputs: torch.Tensor | Dataset[Any],
        labels: torch.Tensor,
        num_classes: int,
        *,
        max_samples: int = 1024,
        seed: int = 0,
        head: nn.Module | None = None,
    ) -> None:
        self.train_labels = labels
        n = len(inputs)  # type: ignore[arg-type]
        self.rows = torch.arange(n)
        if n > max_samples:
            pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            self.rows = pick[:max_samples].sort().values
            labels = labels[self.rows]
            inputs = (
                inputs[self.rows] if isinstance(inputs, torch.Tensor)
                else Subset(inputs, self.rows.tolist())
            )  # fmt: skip
        self.inputs, self.labels, self.num_classes = inputs, labels, num_classes
        self.head = head
        self.use_cache = False  # fit switches it on where the features cannot change
        self._features: torch.Tensor | None = None  # per training row: the head's input
        self._seen: torch.Tensor | None = None

    def cache_features(self, features: torch.Tensor, idx: torch.Tensor) -> None:
        """Keep ``features`` (the head's input for the training rows ``idx``).

        Once every monitored row is cached and ``use_cache`` is on, a check runs the head
        alone on them.

        Args:
            features: the head's inputs for the rows.
            idx: the training rows (indices into ``inputs``).

        Example:
            >>> head = nn.Linear(4, 3)
            >>> with torch.no_grad():
            ...     _ = head.weight.zero_()
            ...     _ = head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))  # always class 0
            >>> monitor = ForgetMonitor(torch.zeros(2, 4), torch.tensor([0, 1]), 3, head=head)
            >>> monitor.use_cache = True
            >>> monitor.cache_features(torch.zeros(2, 4), torch.tensor([0, 1]))
            >>> monitor(nn.Linear(5, 3))  # the model itself is not run (it would fail)
            0.5
        """
        features = features.detach()
        if self._features is None or self._seen is None:
            n = len(self.train_labels)
            self._features = features.new_zeros((n, *features.shape[1:]))
            self._seen = torch.zeros(n, dtype=torch.bool, device=features.device)
        idx = idx.to(features.device)
        self._features[idx] = features
        self._seen[idx] = True

    def _cached_logits(self, device: torch.device) -> torch.Tensor | None:
        if not self.use_cache or self.head is None or self._features is None:
            return None
        assert self._seen is not None
        rows = self.rows.to(self._seen.device)
        if not bool(self._seen[rows].all()):
            return None
        with eval_mode(self.head), torch.inference_mode():
            out: torch.Tensor = self.head(self._features[rows])
        return out[:, : self.num_classes].to(device)

    def batch_counts(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``[still in their own class, scored]`` for the training rows ``idx``, from
        ``logits`` (the training forward pass's output on them); no host sync.

        Args:
            logits: the model's output on the rows (extra outputs are ignored).
            idx: the training rows.

        Returns:
            A float tensor ``[kept, scored]``, on the logits' device.

        Example:
            >>> monitor = ForgetMonitor(torch.zeros(2, 4), torch.tensor([0, 0]), 3)
            >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
            >>> monitor.batch_counts(logits, torch.tensor([0, 1])).tolist()
            [1.0, 2.0]
        """
        labels = self.train_labels.to(logits.device)[idx.to(logits.device)]
        own = logits.detach()[: len(labels), : self.num_classes].argmax(1) == labels
        return torch.stack([own.sum(), torch.tensor(len(labels), device=logits.device)]).float()

    def __len__(self) -> int:
        return len(self.inputs)  # type: ignore[arg-type]

    def __call__(self, model: nn.Module) -> float:
        """The share of the monitored samples still predicted as their own class; NaN when
        the model's outputs are not finite."""
        device = model_device(model)
        logits = self._cached_logits(device)
        if logits is None:
            logits = self._forward(model, device)
        if not bool(torch.isfinite(logits).all()):  # a diverged model "forgets" everything
            return float("nan")
        kept = (logits.argmax(1) == self.labels.to(device)).sum()
        return float(kept) / max(len(self), 1)

    def _forward(self, model: nn.Module, device: torch.device) -> torch.Tensor:
        """The model's logits on the monitored samples (eval mode); with ``use_cache`` the
        head's inputs are kept too, so later checks run the head alone."""
        batch = 128 if device.type == "cpu" else 1024
        outs: list[torch.Tensor] = []
        grabbed: list[torch.Tensor] = []
        hook = None
        if self.use_cache and self.head is not None:
            hook = self.head.register_forward_hook(lambda m, i, o: grabbed.append(i[0]))
        try:
            with eval_mode(model), torch.inference_mode():
                for x in input_batches(self.inputs, batch, device):
                    outs.append(model(x)[:, : self.num_classes].clone())
        finally:
            if hook is not None:
                hook.remove()
        if hook is not None and len(grabbed) == len(outs):
            self.cache_features(torch.cat(grabbed).clone(), self.rows)
        return torch.cat(outs) if outs else torch.zeros((0, self.num_classes), device=device)

    def check_every(self, batch_size: int, steps_per_epoch: int) -> int:
        """Steps between checks when ``fit`` cannot read the training batches (then at least
        one check per epoch, each costing at most ~25% of the steps between checks), and the
        wait after a check that found D_f above the target.

        Args:
            batch_size: samples per training step.
            steps_per_epoch: training steps per epoch.

        Returns:
            The number of steps, in ``1 .. steps_per_epoch``.

        Example:
            >>> monitor = ForgetMonitor(torch.zeros(100, 4), torch.zeros(100, dtype=torch.long), 3)
            >>> monitor.check_every(64, 10), monitor.check_every(8, 10)
            (3, 10)
        """
        return max(1, min(steps_per_epoch, math.ceil(len(self) / (0.75 * batch_size))))


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
