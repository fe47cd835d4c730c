"""Bad Teacher (Chundawat et al., AAAI 2023): distil from a competent teacher on D_r and an
incompetent (random) teacher on D_f."""

from __future__ import annotations

import torch
from torch import nn

from ..data.split import UnlearningData
from ..errors import HyperparameterError
from ..training import Batch, BNMode, OptimizerName, check_non_negative, check_positive, fit
from ._common import check_inputs, forget_tensors, working_copy
from ._losses import kl_to_probs, retain_tensors, soft_targets
from ._registry import register_method
from .retrain import reinitialize

__all__ = ["bad_teacher"]


@register_method("bad_teacher", cost="retain")
def bad_teacher(
    model: nn.Module,
    data: UnlearningData,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    optimizer: OptimizerName = "adam",
    weight_decay: float = 0.0,
    batch_size: int = 256,
    temperature: float = 1.0,
    retain_fraction: float = 0.3,
    seed: int = 0,
    bn: BNMode = "train",
    progress: bool = False,
) -> nn.Module:
    """Bad Teacher: the student (a copy of the original) is distilled on D_f towards a
    randomly initialised "incompetent" teacher and on a random part of D_r towards the
    original ("competent") teacher, with the KL divergence at temperature ``temperature``.

    Chundawat, Tarun, Mandal and Kankanhalli, "Can Bad Teaching Induce Forgetting?
    Unlearning in Deep Networks Using an Incompetent Teacher", AAAI 2023. Defaults from the
    authors' code: 1 epoch, Adam lr 1e-4, batch 256, KL temperature 1, 30% of D_r. The
    teachers' soft targets are computed once (eval mode); the KL is the batch mean.

    epochs, lr, optimizer, weight_decay, batch_size: the student's training.
    temperature: of the teachers' and the student's softmax.
    retain_fraction: fraction of D_r used (a seeded random subset).
    seed: the incompetent teacher's weights, the retain subset and the batch order.
    bn: "train" or "freeze" BatchNorm statistics.
    """
    check_positive(lr=lr, temperature=temperature)
    check_non_negative(weight_decay=weight_decay)
    if not 0.0 < retain_fraction <= 1.0:
        raise HyperparameterError(f"retain_fraction={retain_fraction} must be in (0, 1]")
    check_inputs(model, data, "bad_teacher")
    xf, _ = forget_tensors(data, "bad_teacher")
    xr, _ = retain_tensors(data, "bad_teacher")
    generator = torch.Generator().manual_seed(seed)
    keep = max(1, round(retain_fraction * len(xr)))
    xr = xr[torch.randperm(len(xr), generator=generator)[:keep]]
    incompetent = reinitialize(model, seed)
    incompetent.eval()
    targets = torch.cat(
        [soft_targets(incompetent, xf, temperature), soft_targets(model, xr, temperature)]
    )

    def loss_fn(net: nn.Module, batch: Batch) -> torch.Tensor:
        # Their loss is KL without the T^2 factor of Hinton distillation.
        return kl_to_probs(net(batch[0]), batch[1], temperature) / temperature**2

    student = working_copy(model)
    return fit(
        student,
        (torch.cat([xf, xr]), targets),
        loss_fn,
        epochs=epochs,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        bn=bn,
        progress=progress,
        desc="bad_teacher",
    )
