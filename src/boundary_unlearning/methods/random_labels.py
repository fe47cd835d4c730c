"""Random Labels: fine-tune on D_f relabelled with random wrong classes (a baseline)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.split import UnlearningData
from ..training import BNMode, check_non_negative, check_positive, cross_entropy_loss, fit
from ._common import check_inputs, forget_tensors, working_copy
from ._losses import random_wrong_labels
from ._registry import register_method

__all__ = ["random_labels"]


@register_method("random_labels", cost="forget")
def random_labels(
    model: nn.Module,
    data: UnlearningData,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    bn: BNMode = "train",
    progress: bool = False,
) -> nn.Module:
    """Random Labels: give every forget sample a uniformly random *wrong* label (drawn once,
    seeded) and fine-tune on D_f with cross-entropy.

    A baseline of Chen et al., "Boundary Unlearning", CVPR 2023 (the practical variant of
    Graves et al.'s Amnesiac unlearning, AAAI 2021). Forget-only, like Boundary Shrink, but
    with labels that ignore the decision boundary.

    epochs, lr, momentum, weight_decay, batch_size: SGD on the relabelled D_f.
    seed: the random labels and the batch order. bn: "train" or "freeze" BatchNorm statistics.
    """
    check_positive(lr=lr)
    check_non_negative(momentum=momentum, weight_decay=weight_decay)
    check_inputs(model, data, "random_labels")
    x, y = forget_tensors(data, "random_labels")
    labels = random_wrong_labels(y, data.num_classes, torch.Generator().manual_seed(seed))
    unlearned = working_copy(model)
    return fit(
        unlearned,
        (x, labels),
        cross_entropy_loss,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        bn=bn,
        progress=progress,
        desc="random_labels",
    )
