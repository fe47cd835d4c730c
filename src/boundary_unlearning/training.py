"""The one training loop. Everything that trains (the original model, retraining, the
fine-tuning inside every unlearning method) goes through :func:`fit`, a short loop over three
named parts: :class:`~boundary_unlearning.data.batches.TrainingBatches` (the data, whatever
form it came in),
:class:`TrainingStep` (one optimiser step) and a stopping rule
(:mod:`boundary_unlearning.stopping`).

Data is held as tensors on the model's device and batched by a seeded permutation, so an
epoch does no data-loader work and no per-batch host synchronisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ._utils import model_device
from .data.batches import Batch, TrainingBatches
from .distributed_training import distributed_fit
from .errors import DivergenceError
from .optim import make_optimizer, set_bn_mode
from .progress import LineProgress, progress_bar
from .recipe import OPTION_FIELDS, RECIPE_FIELDS, BNMode, OptimizerName, Recipe, RunOptions
from .stopping import FitResult, FitRun, NeverStop, StoppingRule, record_fit

__all__ = [
    "BNMode",
    "Batch",
    "LossFn",
    "OptimizerName",
    "StepCallback",
    "TrainingStep",
    "cross_entropy_loss",
    "fit",
    "train",
]

LossFn = Callable[[nn.Module, Batch], torch.Tensor]


class StepCallback(Protocol):
    """Called around every optimiser step (e.g. to record parameter updates).

    Any object with these two methods will do (a ``typing.Protocol``); pass it to
    :func:`fit` or :func:`train` in ``callbacks``.

    Example:
        >>> class CountSteps:
        ...     def __init__(self):
        ...         self.steps = 0
        ...     def before_step(self, step, batch):
        ...         pass
        ...     def after_step(self, step, batch):
        ...         self.steps += 1
        >>> counter = CountSteps()
        >>> _ = fit(nn.Linear(2, 2), (torch.rand(8, 2), torch.arange(8) % 2), epochs=2,
        ...         batch_size=4, callbacks=[counter])
        >>> counter.steps
        4
    """

    def before_step(self, step: int, batch: Batch) -> None:
        """Called before the step's forward pass, with the arguments :meth:`after_step`
        gets.

        Example:
            >>> from boundary_unlearning.recording import UpdateRecorder
            >>> UpdateRecorder(nn.Linear(2, 2), 2).before_step(0, (torch.zeros(1, 2),))
        """
        ...

    def after_step(self, step: int, batch: Batch) -> None:
        """Called after the optimiser updated the parameters.

        Args:
            step: the step's index in the run (from 0).
            batch: the step's batch ``(x, y, ...)``.

        Example:
            >>> from boundary_unlearning.recording import UpdateRecorder
            >>> recorder = UpdateRecorder(nn.Linear(2, 2), 2)
            >>> batch = (torch.zeros(1, 2), torch.tensor([1]))
            >>> recorder.before_step(0, batch)
            >>> recorder.after_step(0, batch)
            >>> recorder.batches.tolist()
            [0, 1]
        """
        ...


def cross_entropy_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of ``model(x)`` against ``y`` for a batch ``(x, y, ...)``.

    The default ``loss_fn`` of :func:`fit`.

    Args:
        model: the classifier.
        batch: ``(x, y, ...)``; further tensors are ignored.

    Returns:
        The scalar loss.

    Example:
        >>> cross_entropy_loss(nn.Identity(), (torch.zeros(1, 2), torch.tensor([0]))).item()
        0.6931471824645996
    """
    return F.cross_entropy(model(batch[0]), batch[1])


def _settings(
    recipe: Recipe | None, options: RunOptions | None, settings: dict[str, Any], desc: str
) -> tuple[Recipe, RunOptions]:
    """``recipe`` and ``options`` with the keyword ``settings`` applied (each goes to the
    object that has the field), the recipe checked."""
    changes = {k: v for k, v in settings.items() if k in RECIPE_FIELDS}
    flags = {k: v for k, v in settings.items() if k in OPTION_FIELDS}
    unknown = sorted(set(settings) - set(changes) - set(flags))
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s): {', '.join(unknown)}")
    if recipe is None:
        recipe = Recipe(**changes)
    elif changes:
        recipe = recipe.replace(**changes)
    recipe.check(desc)
    return recipe, dataclasses.replace(options or RunOptions(), **flags)


def _progress_bar(budget: int, desc: str, options: RunOptions) -> tqdm[Any] | LineProgress:
    """A bar over the run's steps (plain lines off a terminal), on the main process when
    ``options.progress``."""
    return progress_bar(desc=desc, total=budget, unit="step", show=options.progress, leave=False)


class TrainingStep:
    """One optimiser step of a run, and what the run keeps between steps: the optimiser, the
    learning-rate growth, the distributed share of each batch under torchrun, the running
    loss and the first step whose loss was not finite (checked at one host sync per epoch,
    and before every exact stopping check).

    Setting it up puts the model in train mode with BatchNorm as the recipe says, in
    channels-last memory format when asked, and joins the ranks under torchrun.

    Args:
        model: trained in place.
        parameters: the parameters to optimise (``None``: all of the model's).
        loss_fn: ``loss_fn(model, batch) -> scalar``.
        recipe: the optimisation settings.
        options: run options (``amp``, ``channels_last``, ``compile_model``).
        steps_per_epoch: for the epoch named in a divergence error.
        shard: split each batch over the ranks under torchrun (see :func:`fit`).
        desc: names the run in errors.
    """

    def __init__(
        self,
        model: nn.Module,
        parameters: Iterable[nn.Parameter] | None,
        loss_fn: LossFn,
        recipe: Recipe,
        options: RunOptions,
        *,
        steps_per_epoch: int,
        shard: bool,
        desc: str,
    ) -> None:
        params = list(parameters) if parameters is not None else list(model.parameters())
        self.opt = make_optimizer(
            params, recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
        )  # fmt: skip
        if options.channels_last:
            model.to(memory_format=torch.channels_last)
        self.base_lrs = [group["lr"] for group in self.opt.param_groups]
        self.net: nn.Module = torch.compile(model) if options.compile_model else model  # type: ignore[assignment]
        self.device = model_device(model)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=options.amp)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.running = torch.zeros((), device=self.device)
        self.taken = 0
        set_bn_mode(model, recipe.bn)
        self.sync = distributed_fit(model, params, shard=shard)  # None in a single process
        self.loss_fn, self.recipe, self.desc = loss_fn, recipe, desc
        self.steps_per_epoch = steps_per_epoch
        self.params = params
        self.max_norm: torch.Tensor | None = None  # clip_to_first x the first step's norm

    def __call__(self, step: int, batch: Batch) -> None:
        """Step ``step`` (counted from 0) on ``batch``: zero the gradients, set the learning
        rate, compute the loss (this rank's share under torchrun), back-propagate, update."""
        self.opt.zero_grad(set_to_none=True)
        if self.recipe.lr_growth != 1.0:
            scale = self.recipe.lr_growth**step
            for group, base in zip(self.opt.param_groups, self.base_lrs, strict=True):
                group["lr"] = min(base * scale, max(self.recipe.max_lr, base))
        if self.sync is None:
            with self.autocast:
                loss = self.loss_fn(self.net, batch)
            loss.backward()  # type: ignore[no-untyped-call]
        else:  # this rank's share of the batch; gradients summed over the ranks
            share, weight = self.sync.share(batch)
            with self.autocast:
                loss = self.loss_fn(self.net, share)
            loss = self.sync.backward(loss, weight)
        if self.recipe.clip_to_first is not None:
            self.clip()
        self.opt.step()
        detached = loss.detach()
        self.running += detached
        self.taken += 1
        bad = ~torch.isfinite(detached) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)

    def clip(self) -> None:
        """Scale the gradients down to ``clip_to_first`` times the first step's norm (no host
        sync: the norm and the factor stay on the device)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if self.max_norm is None:
            assert self.recipe.clip_to_first is not None
            self.max_norm = norm.detach() * self.recipe.clip_to_first
        factor = torch.clamp(self.max_norm / (norm + 1e-12), max=1.0)
        torch._foreach_mul_(grads, factor)

    def raise_if_diverged(self) -> None:
        """Raise :class:`DivergenceError` naming the first step with a loss that was not
        finite (one host sync; under torchrun the earliest of any rank)."""
        sync = self.sync
        bad_step = int(self.first_bad) if sync is None else sync.first_bad_step(self.first_bad)
        if bad_step >= 0:
            raise DivergenceError(
                f"{self.desc}: the loss became NaN or infinite at step {bad_step} "
                f"(epoch {bad_step // self.steps_per_epoch + 1}); lower the learning rate "
                f"(lr={self.recipe.lr:g})"
            )

    def end_epoch(self, show: Callable[..., Any]) -> None:
        """After an epoch: check for divergence, show the epoch's mean loss, start anew."""
        self.raise_if_diverged()
        running = self.running if self.sync is None else self.sync.total(self.running)
        show(loss=f"{float(running) / max(self.taken, 1):.4f}")
        self.running = torch.zeros((), device=self.device)
        self.taken = 0

    def close(self) -> None:
        """Leave the ranks' BatchNorm synchronisation (under torchrun)."""
        if self.sync is not None:
            self.sync.close()


def fit(
    model: nn.Module,
    tensors: Sequence[torch.Tensor] | Dataset[Any],
    loss_fn: LossFn = cross_entropy_loss,
    *,
    recipe: Recipe | None = None,
    options: RunOptions | None = None,
    stop: StoppingRule | None = None,
    parameters: Iterable[nn.Parameter] | None = None,
    callbacks: Sequence[StepCallback] = (),
    desc: str = "training",
    shard: bool = True,
    **settings: Any,
) -> nn.Module:
    """Train ``model`` in place on ``tensors`` (all indexed together) and return it in eval mode.

    Each step draws a batch ``tuple(t[idx] for t in tensors)`` from a permutation made by a
    ``torch.Generator`` seeded with ``recipe.seed``
    (:class:`~boundary_unlearning.data.batches.TrainingBatches`) and minimises
    ``loss_fn(model, batch)`` (:class:`TrainingStep`). The run ends after
    ``recipe.limit(steps_per_epoch)`` steps, or earlier when the ``stop`` rule says so (see
    :mod:`boundary_unlearning.stopping`). What the run did is recorded as a
    :class:`~boundary_unlearning.stopping.FitResult` for
    :func:`~boundary_unlearning.stopping.collect_fits`. A zero budget returns the model
    unchanged. A NaN or infinite loss raises :class:`DivergenceError` naming the step.

    Args:
        model: trained in place.
        tensors: the training data: tensors indexed together (e.g. ``(x, y)``), held on
            the model's device; or a map-style dataset of ``(x, y, ...)`` tuples, which a
            tensor-backed one within the memory budget becomes, and any other is read batch
            by batch through a ``DataLoader`` in the same seeded order (see
            :mod:`boundary_unlearning.data.streaming`).
        loss_fn: ``loss_fn(model, batch) -> scalar``. It may draw further batches of its
            own (e.g. a retain batch per step from a seeded sampler).
        recipe: the optimisation settings; fields may also be given as keywords
            (``epochs=1, lr=1e-3``), which override ``recipe``.
        options: progress bar and speed options (also accepted as keywords):
            ``amp`` computes the loss under ``torch.autocast`` in bfloat16;
            ``channels_last`` stores the model and 4-D inputs in channels-last memory format;
            ``compile_model`` evaluates the loss on ``torch.compile(model)``.
        stop: when to stop before the budget runs out (a
            :class:`~boundary_unlearning.stopping.StoppingRule`); ``None``: never.
        parameters: the parameters to optimise (default: all of the model's).
        callbacks: called around every optimiser step.
        desc: names the run in the progress bar and in errors.
        shard: under torchrun (see :mod:`boundary_unlearning.distributed`) every rank takes
            its share of every global batch and the result equals one process's (for a loss
            that is a mean over the batch's samples); ``False`` makes every rank compute the
            whole batch, for other losses.

    Returns:
        ``model``, in eval mode.

    Raises:
        HyperparameterError: a setting out of range.
        DataError: empty or mismatched tensors.
        DivergenceError: the loss became NaN or infinite.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> x, y = torch.randn(8, 2), torch.tensor([0, 1] * 4)
        >>> fit(net, (x, y), epochs=1, lr=0.1, batch_size=4) is net
        True
    """
    recipe, options = _settings(recipe, options, settings, desc)
    batches = TrainingBatches(
        tensors, model_device(model), batch_size=recipe.batch_size, seed=recipe.seed,
        channels_last=options.channels_last, desc=desc,
    )  # fmt: skip
    budget = recipe.limit(batches.steps_per_epoch)
    result = FitResult(desc=desc, steps=0)
    record_fit(result)
    bar = _progress_bar(budget, desc, options)
    step = None if budget == 0 else TrainingStep(
        model, parameters, loss_fn, recipe, options, steps_per_epoch=batches.steps_per_epoch,
        shard=shard, desc=desc,
    )  # fmt: skip
    stop = stop if stop is not None else NeverStop()
    stop.start(FitRun(
        model=model, desc=desc, recipe=recipe, options=options, budget=budget,
        steps_per_epoch=batches.steps_per_epoch, sync=step.sync if step else None,
        result=result, show=bar.set_postfix,
    ))  # fmt: skip
    stopped = False
    try:
        while step is not None and result.steps < budget and not stopped:
            for rows, batch in batches.epoch(limit=budget - result.steps):
                for cb in callbacks:
                    cb.before_step(result.steps, batch)
                stop.before_step()
                step(result.steps, batch)
                for cb in callbacks:
                    cb.after_step(result.steps, batch)
                result.steps += 1
                bar.update(1)
                if stop.after_step(result.steps, rows):
                    step.raise_if_diverged()
                    if stop.check(model, result.steps):  # (eval mode; modes restored)
                        stopped = True
                        break
            step.end_epoch(bar.set_postfix)
        result.reached_target = stop.finish(model, result.steps, stopped)
    finally:
        stop.close()
        if step is not None:
            step.close()
        bar.close()
        model.eval()
    return model


def train(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    epochs: int = 50,
    lr: float = 0.01,
    optimizer: OptimizerName = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    desc: str = "train",
    callbacks: Sequence[StepCallback] = (),
) -> nn.Module:
    """Train ``model`` in place with cross-entropy on ``dataset`` and return it (eval mode).

    Defaults are the paper's recipe for the original and retrained models (SGD, lr 0.01,
    momentum 0.9, batch 64, 50 epochs); weight decay 5e-4 is the usual CIFAR setting. A
    dataset that is not tensor-backed is read batch by batch (see :func:`fit`).

    Args:
        model: trained in place.
        dataset: a map-style dataset of ``(input, int label)`` pairs.
        epochs: passes over the data.
        lr: the learning rate.
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: the L2 penalty.
        batch_size: samples per step.
        seed: the batch order.
        progress: show a progress bar.
        desc: the progress bar's label.
        callbacks: :class:`StepCallback` objects called around every step.

    Returns:
        ``model``, in eval mode.

    Raises:
        HyperparameterError: a setting out of range.
        DataError: an empty or malformed dataset.
        DivergenceError: the loss became NaN or infinite.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from boundary_unlearning.stopping import collect_fits
        >>> ds = TensorDataset(torch.rand(8, 2), torch.arange(8) % 2)
        >>> with collect_fits() as fits:
        ...     model = train(nn.Linear(2, 2), ds, epochs=2, batch_size=4)
        >>> model.training, fits[0].steps
        (False, 4)
    """
    recipe = Recipe(epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum,
                    weight_decay=weight_decay, batch_size=batch_size, seed=seed)  # fmt: skip
    return fit(model, dataset, cross_entropy_loss, recipe=recipe,
               options=RunOptions(progress=progress), desc=desc, callbacks=callbacks)  # fmt: skip
