"""l1-sparse unlearning (Jia et al., NeurIPS 2023): fine-tune on D_r with a decaying L1
penalty on the weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.split import UnlearningData
from ..training import Batch, BNMode, check_non_negative, check_positive, fit
from ._common import check_inputs, forget_tensors, working_copy
from ._losses import retain_tensors
from ._registry import register_method

__all__ = ["l1_sparse"]


@register_method("l1_sparse", cost="retain")
def l1_sparse(
    model: nn.Module,
    data: UnlearningData,
    *,
    epochs: int = 10,
    lr: float = 0.01,
    l1_weight: float = 5e-4,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    bn: BNMode = "train",
    progress: bool = False,
) -> nn.Module:
    """l1-sparse: fine-tune on D_r minimising ``CE + gamma_e * ||theta||_1`` where the L1
    weight decays linearly over the epochs, ``gamma_e = l1_weight * (1 - e / epochs)``.

    Jia, Liu, Ram, Yao, Liu, Liu, Sharma and Liu, "Model Sparsity Can Simplify Machine
    Unlearning", NeurIPS 2023 (their "FT-l1"; defaults from the authors' code: 10 epochs,
    lr 0.01, gamma 5e-4, SGD momentum 0.9, weight decay 5e-4). The penalty covers every
    parameter, as in their code.

    epochs, lr, momentum, weight_decay, batch_size: SGD on D_r.
    l1_weight: gamma at the first epoch. seed: batch order. bn: BatchNorm statistics.
    """
    check_positive(lr=lr)
    check_non_negative(momentum=momentum, weight_decay=weight_decay, l1_weight=l1_weight)
    check_inputs(model, data, "l1_sparse")
    forget_tensors(data, "l1_sparse")
    x, y = retain_tensors(data, "l1_sparse")
    steps_per_epoch = math.ceil(len(x) / batch_size) if batch_size > 0 else 1
    step = 0

    def loss_fn(net: nn.Module, batch: Batch) -> torch.Tensor:
        nonlocal step
        gamma = l1_weight * (1 - (step // steps_per_epoch) / max(epochs, 1))
        step += 1
        l1 = torch.stack([p.abs().sum() for p in net.parameters()]).sum()
        return F.cross_entropy(net(batch[0]), batch[1]) + gamma * l1

    unlearned = working_copy(model)
    return fit(
        unlearned,
        (x, y),
        loss_fn,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        bn=bn,
        progress=progress,
        desc="l1_sparse",
    )
