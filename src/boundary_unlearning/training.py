"""The one training loop. Everything that trains (the original model, retraining, the
fine-tuning inside every unlearning method) goes through :func:`fit`.

Data is held as tensors on the model's device and batched by a seeded permutation, so an
epoch does no data-loader work and no per-batch host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ._utils import model_device
from .data.split import to_tensors
from .distributed import distributed_fit, is_main_process
from .errors import DataError, DivergenceError, HyperparameterError

__all__ = [
    "LossFn",
    "StepCallback",
    "check_recipe",
    "cross_entropy_loss",
    "fit",
    "set_bn_mode",
    "train",
]

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
OptimizerName = Literal["sgd", "adam"]
BNMode = Literal["train", "freeze"]


class StepCallback(Protocol):
    """Called around every optimiser step (e.g. to record parameter updates)."""

    def before_step(self, step: int, batch: Batch) -> None: ...

    def after_step(self, step: int, batch: Batch) -> None: ...


def cross_entropy_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of ``model(x)`` against ``y`` for a batch ``(x, y, ...)``."""
    return F.cross_entropy(model(batch[0]), batch[1])


def set_bn_mode(model: nn.Module, bn: BNMode) -> None:
    """Put the model in train mode; with ``bn="freeze"`` BatchNorm layers stay in eval mode
    (running statistics are used and not updated; their affine weights still train)."""
    model.train()
    if bn == "freeze":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    elif bn != "train":
        raise HyperparameterError(f"bn='{bn}' is not one of 'train', 'freeze'")


def check_positive(**values: float | int) -> None:
    """Raise a clear error for a hyperparameter that must be > 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HyperparameterError(f"{name}={value!r} must be a number")
        if not math.isfinite(value) or value <= 0:
            raise HyperparameterError(f"{name}={value} must be a positive (finite) number")


def check_seed(seed: object, what: str = "seed") -> None:
    """Raise a clear error unless ``seed`` is an integer torch can seed a generator with."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise HyperparameterError(f"{what}={seed!r} must be a whole number in 0 .. 2**63-1")


def check_non_negative(**values: float | int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HyperparameterError(f"{name}={value!r} must be a number")
        if not math.isfinite(value) or value < 0:
            raise HyperparameterError(f"{name}={value} must be a finite number >= 0")


def check_recipe(
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    min_epochs: int = 0,
    what: str = "training",
    **_: Any,
) -> None:
    """Validate a training recipe up front (``fit`` checks the same at its start); pass
    ``min_epochs=1`` where zero epochs is meaningless (training an original model)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < min_epochs:
        raise HyperparameterError(
            f"{what}: epochs={epochs!r} must be a whole number >= {min_epochs}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HyperparameterError(f"{what}: batch_size={batch_size!r} must be a whole number >= 1")
    check_positive(lr=lr)
    check_non_negative(momentum=momentum, weight_decay=weight_decay)
    check_seed(seed)


def make_optimizer(
    params: Iterable[nn.Parameter],
    optimizer: OptimizerName,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise HyperparameterError(f"optimizer='{optimizer}' is not one of 'sgd', 'adam'")


def fit(
    model: nn.Module,
    tensors: Sequence[torch.Tensor],
    loss_fn: LossFn = cross_entropy_loss,
    *,
    epochs: int,
    lr: float,
    optimizer: OptimizerName = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    bn: BNMode = "train",
    parameters: Iterable[nn.Parameter] | None = None,
    callbacks: Sequence[StepCallback] = (),
    progress: bool = False,
    desc: str = "training",
    amp: bool = False,
    channels_last: bool = False,
    compile_model: bool = False,
    shard: bool = True,
) -> nn.Module:
    """Train ``model`` in place on ``tensors`` (all indexed together) and return it in eval mode.

    Each step draws a batch ``tuple(t[idx] for t in tensors)`` from a permutation made by a
    ``torch.Generator`` seeded with ``seed`` and minimises ``loss_fn(model, batch)``.
    ``epochs=0`` returns the model unchanged. A NaN or infinite loss raises
    :class:`DivergenceError` naming the step.

    Performance options (off by default; meant for CUDA): ``amp`` computes the loss under
    ``torch.autocast`` in bfloat16; ``channels_last`` stores the model and 4-D inputs in
    channels-last memory format; ``compile_model`` evaluates the loss on
    ``torch.compile(model)`` (the same parameters, compiled on the first step).

    Under torchrun (see :mod:`boundary_unlearning.distributed`) every rank trains together:
    with ``shard=True`` each takes its share of every global batch of ``batch_size`` and the
    result equals one process's (for a loss that is a mean over the batch's samples);
    ``shard=False`` makes every rank compute the whole batch, for other losses.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise HyperparameterError(
            f"{desc}: epochs={epochs!r} must be a whole number >= 0 (passes over the data)"
        )
    check_positive(lr=lr)
    check_non_negative(momentum=momentum, weight_decay=weight_decay)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HyperparameterError(f"{desc}: batch_size={batch_size!r} must be a whole number >= 1")
    check_seed(seed)
    device = model_device(model)
    data = tuple(t.to(device) for t in tensors)
    n = len(data[0])
    if any(len(t) != n for t in data):
        raise DataError("the tensors passed to fit() differ in length")
    if n == 0:
        raise DataError(f"{desc}: no training samples; the data set is empty")
    if epochs == 0:
        model.eval()
        return model
    params = list(parameters) if parameters is not None else list(model.parameters())
    opt = make_optimizer(params, optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        data = tuple(
            t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in data
        )
    net: nn.Module = torch.compile(model) if compile_model else model  # type: ignore[assignment]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(n / batch_size)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    bar = tqdm(
        total=epochs * steps_per_epoch, desc=desc, disable=not progress or not is_main_process(),
        leave=False, unit="step",
    )  # fmt: skip
    set_bn_mode(model, bn)
    sync = distributed_fit(model, params, shard=shard)  # None in a single process
    step = 0
    try:
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            running = torch.zeros((), device=device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                batch = tuple(t[idx] for t in data)
                for cb in callbacks:
                    cb.before_step(step, batch)
                opt.zero_grad(set_to_none=True)
                if sync is None:
                    with autocast:
                        loss = loss_fn(net, batch)
                    loss.backward()  # type: ignore[no-untyped-call]
                else:  # this rank's share of the batch; gradients summed over the ranks
                    share, weight = sync.share(data, idx)
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
                bar.update(1)
            # one host sync per epoch (with torchrun: the earliest bad step of any rank)
            bad_step = int(first_bad) if sync is None else sync.first_bad_step(first_bad)
            if bad_step >= 0:
                raise DivergenceError(
                    f"{desc}: the loss became NaN or infinite at step {bad_step} "
                    f"(epoch {bad_step // steps_per_epoch + 1}); lower the learning rate "
                    f"(lr={lr:g})"
                )
            if sync is not None:
                running = sync.total(running)
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(running) / steps_per_epoch:.4f}")
    finally:
        if sync is not None:
            sync.close()
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
    momentum 0.9, batch 64, 50 epochs); weight decay 5e-4 is the usual CIFAR setting.
    """
    x, y = to_tensors(dataset)
    return fit(
        model,
        (x, y),
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
