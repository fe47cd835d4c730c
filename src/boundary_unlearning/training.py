"""The one training loop. Everything that trains (the original model, retraining, the
fine-tuning inside every unlearning method) goes through :func:`fit`.

Data is held as tensors on the model's device and batched by a seeded permutation, so an
epoch does no data-loader work and no per-batch host synchronisation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ._utils import model_device
from .data.streaming import iterate_batches, tensor_backed
from .distributed import is_main_process
from .distributed_training import distributed_fit
from .errors import DataError, DivergenceError
from .optim import make_optimizer, set_bn_mode
from .recipe import (
    OPTION_FIELDS,
    RECIPE_FIELDS,
    BNMode,
    FitResult,
    ForgetMonitor,
    OptimizerName,
    Recipe,
    RunOptions,
    record_fit,
)

__all__ = [
    "BNMode",
    "LossFn",
    "OptimizerName",
    "StepCallback",
    "cross_entropy_loss",
    "fit",
    "train",
]

Batch = tuple[torch.Tensor, ...]
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
        """Called before the step's forward pass.

        Args:
            step: the step's index in the run (from 0).
            batch: the step's batch ``(x, y, ...)``.

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


def _split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    recipe = {k: v for k, v in settings.items() if k in RECIPE_FIELDS}
    options = {k: v for k, v in settings.items() if k in OPTION_FIELDS}
    unknown = sorted(set(settings) - set(recipe) - set(options))
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s): {', '.join(unknown)}")
    return recipe, options


def fit(
    model: nn.Module,
    tensors: Sequence[torch.Tensor] | Dataset[Any],
    loss_fn: LossFn = cross_entropy_loss,
    *,
    recipe: Recipe | None = None,
    options: RunOptions | None = None,
    monitor: ForgetMonitor | None = None,
    parameters: Iterable[nn.Parameter] | None = None,
    callbacks: Sequence[StepCallback] = (),
    desc: str = "training",
    shard: bool = True,
    **settings: Any,
) -> nn.Module:
    """Train ``model`` in place on ``tensors`` (all indexed together) and return it in eval mode.

    Each step draws a batch ``tuple(t[idx] for t in tensors)`` from a permutation made by a
    ``torch.Generator`` seeded with ``recipe.seed`` and minimises ``loss_fn(model, batch)``.
    The run ends after ``recipe.limit(steps_per_epoch)`` steps or, with
    ``recipe.target_forget_acc`` and a ``monitor``, as soon as the monitored forget accuracy
    is at or below the target (see :class:`~boundary_unlearning.recipe.ForgetMonitor` for
    when it is checked). What the run did is recorded as a
    :class:`~boundary_unlearning.recipe.FitResult` for :func:`collect_fits`. A zero budget
    returns the model unchanged. A NaN or infinite loss raises :class:`DivergenceError`
    naming the step.

    Args:
        model: trained in place.
        tensors: the training data: tensors indexed together (e.g. ``(x, y)``), held on
            the model's device; or a map-style dataset of ``(x, y, ...)`` tuples, which a
            tensor-backed one within the memory budget becomes, and any other is read batch
            by batch through a ``DataLoader`` in the same seeded order (see
            :mod:`boundary_unlearning.data.streaming`).
        loss_fn: ``loss_fn(model, batch) -> scalar``.
        recipe: the optimisation settings; fields may also be given as keywords
            (``epochs=1, lr=1e-3``), which override ``recipe``.
        options: progress bar and speed options (also accepted as keywords):
            ``amp`` computes the loss under ``torch.autocast`` in bfloat16;
            ``channels_last`` stores the model and 4-D inputs in channels-last memory format;
            ``compile_model`` evaluates the loss on ``torch.compile(model)``.
        monitor: measures the forget accuracy for the stopping rule.
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
    recipe_changes, option_changes = _split_settings(settings)
    if recipe is None:
        recipe = Recipe(**recipe_changes)
    elif recipe_changes:
        recipe = recipe.replace(**recipe_changes)
    recipe.check(desc)
    options = dataclasses.replace(options or RunOptions(), **option_changes)
    device = model_device(model)
    stream: Dataset[Any] | None = None
    if isinstance(tensors, Dataset) and tensor_backed(tensors):
        tensors = next(iterate_batches(tensors, max(len(tensors), 1)))  # type: ignore[arg-type]
    elif isinstance(tensors, Dataset):
        stream = tensors
    data = () if stream is not None else tuple(t.to(device) for t in tensors)  # type: ignore[union-attr]
    n = len(stream) if stream is not None else len(data[0])  # type: ignore[arg-type]
    if any(len(t) != n for t in data):
        raise DataError("the tensors passed to fit() differ in length")
    if n == 0:
        raise DataError(f"{desc}: no training samples; the data set is empty")
    batch_size = recipe.batch_size
    steps_per_epoch = math.ceil(n / batch_size)
    budget = recipe.limit(steps_per_epoch)
    target = recipe.target_forget_acc if monitor is not None else None
    result = FitResult(desc=desc, steps=0, target=target)
    record_fit(result)
    bar = tqdm(
        total=budget, desc=desc, disable=not options.progress or not is_main_process(),
        leave=False, unit="step",
    )  # fmt: skip

    def forgotten() -> bool:  # an exact check: the monitored D_f in eval mode
        assert monitor is not None
        acc = monitor(model)
        if math.isnan(acc):
            raise DivergenceError(
                f"{desc}: the model's outputs became NaN or infinite by step {result.steps}; "
                f"lower the learning rate (lr={recipe.lr:g})"
            )
        result.forget_trace.append((result.steps, acc))
        bar.set_postfix(forget_acc=f"{acc:.3f}")
        return target is not None and acc <= target

    if budget == 0:
        if monitor is not None and target is not None:
            result.reached_target = forgotten()
        bar.close()
        model.eval()
        return model
    params = list(parameters) if parameters is not None else list(model.parameters())
    opt = make_optimizer(
        params, recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )  # fmt: skip
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
        data = tuple(
            t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in data
        )
    base_lrs = [group["lr"] for group in opt.param_groups]
    net: nn.Module = torch.compile(model) if options.compile_model else model  # type: ignore[assignment]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.amp)
    generator = torch.Generator().manual_seed(recipe.seed)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    set_bn_mode(model, recipe.bn)
    sync = distributed_fit(model, params, shard=shard)  # None in a single process
    # The stopping rule: the training forward pass's own-class share on each batch (summed
    # over the ranks under torchrun) triggers an exact check when it is at or below the
    # target (at most one check per `every` steps after a check that failed). Without that
    # signal (torch.compile) the exact check runs every `every` steps instead.
    every = monitor.check_every(batch_size, steps_per_epoch) if monitor is not None else 0
    watch = monitor is not None and target is not None
    cheap = watch and not options.compile_model
    outputs: list[torch.Tensor] = []
    hook = (
        model.register_forward_hook(lambda m, i, out: outputs.append(out) if not outputs else None)
        if cheap
        else None
    )
    next_check = 0
    # With only the head training, the network below it is fixed: keep the head's inputs
    # from the training steps so a check runs the head alone (not with dropout, whose
    # training-mode features differ from eval mode's, nor across ranks).
    features: list[torch.Tensor] = []
    feature_hook = None
    if monitor is not None:
        monitor.use_cache = (
            monitor.head is not None and sync is None and not options.compile_model
            and not any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
                        for m in model.modules())
        )  # fmt: skip
        if monitor.use_cache and monitor.head is not None:
            feature_hook = monitor.head.register_forward_hook(
                lambda m, i, out: features.append(i[0]) if not features else None
            )

    def raise_if_diverged() -> None:
        # one host sync (with torchrun: the earliest bad step of any rank)
        bad_step = int(first_bad) if sync is None else sync.first_bad_step(first_bad)
        if bad_step >= 0:
            raise DivergenceError(
                f"{desc}: the loss became NaN or infinite at step {bad_step} "
                f"(epoch {bad_step // steps_per_epoch + 1}); lower the learning rate "
                f"(lr={recipe.lr:g})"
            )

    step = 0
    done = False
    try:
        while step < budget and not done:
            order = torch.randperm(n, generator=generator).to(device)
            running = torch.zeros((), device=device)
            taken = 0
            loaded = (
                iterate_batches(stream, batch_size, device=device,
                                order=order.cpu()[: (budget - step) * batch_size])
                if stream is not None else None
            )  # fmt: skip
            for start in range(0, n, batch_size):
                if step >= budget:
                    break
                idx = order[start : start + batch_size]
                if loaded is None:
                    batch = tuple(t[idx] for t in data)
                else:  # the same rows, read from the dataset
                    batch = next(loaded)
                    if options.channels_last:
                        batch = tuple(
                            t.contiguous(memory_format=torch.channels_last) if t.dim() == 4
                            else t for t in batch
                        )  # fmt: skip
                for cb in callbacks:
                    cb.before_step(step, batch)
                opt.zero_grad(set_to_none=True)
                outputs.clear()
                features.clear()
                if recipe.lr_growth != 1.0:
                    scale = recipe.lr_growth**step
                    for group, base in zip(opt.param_groups, base_lrs, strict=True):
                        group["lr"] = min(base * scale, max(recipe.max_lr, base))
                if sync is None:
                    with autocast:
                        loss = loss_fn(net, batch)
                    loss.backward()  # type: ignore[no-untyped-call]
                else:  # this rank's share of the batch; gradients summed over the ranks
                    share, weight = (
                        sync.share(data, idx) if loaded is None
                        else sync.share(batch, torch.arange(len(idx), device=device))
                    )  # fmt: skip
                    with autocast:
                        loss = loss_fn(net, share)
                    loss = sync.backward(loss, weight)
                opt.step()
                for cb in callbacks:
                    cb.after_step(step, batch)
                detached = loss.detach()
                running += detached
                bad = ~torch.isfinite(detached) & (first_bad < 0)
                first_bad = torch.where(bad, torch.full_like(first_bad, step), first_bad)
                step += 1
                taken += 1
                result.steps = step
                if features and monitor is not None and len(features[0]) == len(idx):
                    monitor.cache_features(features[0], idx)
                bar.update(1)
                if watch and step >= next_check:
                    assert monitor is not None
                    assert target is not None
                    due = not cheap or step == budget
                    if cheap:  # every rank takes part in the sum, even with an empty share
                        rows = idx if sync is None else sync.local_rows(idx)
                        counts = (
                            monitor.batch_counts(outputs[0], rows)
                            if outputs
                            else torch.zeros(2, device=device)
                        )
                        if sync is not None:
                            counts = sync.total_counts(counts)
                        own, scored = counts.tolist()
                        due = due or (scored > 0 and own <= target * scored)
                    if due:
                        raise_if_diverged()
                        if forgotten():  # (eval mode; the modes are restored after)
                            done = True
                            break
                        next_check = step + every
            raise_if_diverged()
            if sync is not None:
                running = sync.total(running)
            bar.set_postfix(loss=f"{float(running) / max(taken, 1):.4f}")
        if watch and not done and (not result.forget_trace or result.forget_trace[-1][0] != step):
            done = forgotten()  # the budget ran out: where did it end?
    finally:
        if hook is not None:
            hook.remove()
        if feature_hook is not None:
            feature_hook.remove()
        if sync is not None:
            sync.close()
        bar.close()
        model.eval()
    if target is not None:
        result.reached_target = done
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
        >>> from boundary_unlearning.recipe import collect_fits
        >>> ds = TensorDataset(torch.rand(8, 2), torch.arange(8) % 2)
        >>> with collect_fits() as fits:
        ...     model = train(nn.Linear(2, 2), ds, epochs=2, batch_size=4)
        >>> model.training, fits[0].steps
        (False, 4)
    """
    return fit(
        model,
        dataset,
        cross_entropy_loss,
        epochs=epochs,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc=desc,
        callbacks=callbacks,
    )
