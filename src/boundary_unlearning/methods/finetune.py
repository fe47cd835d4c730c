"""Finetune: keep training on the remaining data only (a baseline of the paper)."""

from __future__ import annotations

from torch import nn

from ..data.split import UnlearningData
from ..training import BNMode, check_non_negative, check_positive, cross_entropy_loss, fit
from ._common import check_inputs, working_copy
from ._losses import retain_tensors
from ._registry import register_method

__all__ = ["finetune"]


@register_method("finetune", cost="retain")
def finetune(
    model: nn.Module,
    data: UnlearningData,
    *,
    epochs: int = 5,
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    bn: BNMode = "train",
    progress: bool = False,
) -> nn.Module:
    """Finetune: fine-tune the original model on D_r alone for a few epochs at a higher
    learning rate, relying on catastrophic forgetting of the class it no longer sees.

    The "Finetune" baseline of Golatkar et al., "Eternal Sunshine of the Spotless Net",
    CVPR 2020, as compared in Chen et al., "Boundary Unlearning", CVPR 2023.

    epochs, lr, momentum, weight_decay, batch_size: SGD on D_r (5 epochs at lr 0.02, twice the
    original's 0.01; momentum 0.9, weight decay 5e-4, batch 64).
    seed: batch order. bn: "train" or "freeze" BatchNorm statistics.
    """
    check_positive(lr=lr)
    check_non_negative(momentum=momentum, weight_decay=weight_decay)
    check_inputs(model, data, "finetune")
    x, y = retain_tensors(data, "finetune")
    unlearned = working_copy(model)
    return fit(
        unlearned,
        (x, y),
        cross_entropy_loss,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        bn=bn,
        progress=progress,
        desc="finetune",
    )
