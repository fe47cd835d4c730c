"""Retrain from scratch on D_r: the gold standard every method is compared with."""

from __future__ import annotations

from torch import nn

from .._utils import seeded
from ..data.split import UnlearningData
from ..training import OptimizerName, train
from ._common import check_inputs, working_copy
from ._registry import register_method

__all__ = ["reinitialize", "retrain"]


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every layer re-initialised (seeded), BN statistics reset."""
    fresh = working_copy(model)
    with seeded(seed):
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh


@register_method("retrain", cost="reference")
def retrain(
    model: nn.Module,
    data: UnlearningData,
    *,
    epochs: int = 50,
    lr: float = 0.01,
    optimizer: OptimizerName = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Retrain: re-initialise the architecture and train from scratch on D_r only.

    The reference every unlearning method is measured against; use the original model's
    recipe (paper: SGD, lr 0.01, momentum 0.9, batch 64, 50 epochs).
    seed: initial weights and batch order.
    """
    check_inputs(model, data, "retrain")
    fresh = reinitialize(model, seed)
    return train(
        fresh,
        data.retain,
        epochs=epochs,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc="retrain",
    )
