"""Boundary Shrink (Chen et al., CVPR 2023, Sec. 4.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import AttackName, Normalization, neighbour_search
from ..data.split import UnlearningData
from ..training import Batch, BNMode, check_non_negative, check_positive, cross_entropy_loss, fit
from ._common import check_inputs, forget_tensors, working_copy
from ._registry import register_method, set_unlearning_stats

__all__ = ["boundary_shrink", "margin_weights"]


def margin_weights(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The authors' optional loss re-weighting: ``3 * sigmoid((PM - 0.5) * 5)`` with
    ``PM = p_2nd - p_target`` on the neighbour's softmax (``p_2nd`` the largest probability
    of any class other than the target)."""
    p_target = probs.gather(1, targets[:, None]).squeeze(1)
    others = probs.scatter(1, targets[:, None], float("-inf"))
    p_second = others.max(dim=1).values
    return 3.0 * torch.sigmoid((p_second - p_target - 0.5) * 5.0)


def _weighted_ce(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y, w = batch
    return (F.cross_entropy(model(x), y, reduction="none") * w).mean()


@register_method("boundary_shrink", cost="forget")
def boundary_shrink(
    model: nn.Module,
    data: UnlearningData,
    *,
    eps: float = 0.1,
    attack: AttackName = "fgsm",
    pgd_steps: int = 5,
    pgd_step_size: float = 8 / 255,
    epochs: int = 10,
    lr: float = 1e-5,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    bn: BNMode = "train",
    loss_weighting: bool = False,
    normalization: Normalization | None = None,
    progress: bool = False,
) -> nn.Module:
    """Boundary Shrink: relabel each forget sample with its nearest adversarial neighbour's
    class under the original model, then fine-tune on the clean inputs with those labels.

    Chen et al., "Boundary Unlearning", CVPR 2023. The neighbour labels come from the frozen
    original model, so they are computed once (the authors' loop recomputes them every step
    with the same result at about twice the cost).

    eps: FGSM step / PGD radius in pixel space [0, 1] (paper: 0.1).
    attack: "fgsm" (paper) or "pgd" (authors' code: ``pgd_steps`` steps of ``pgd_step_size``).
    epochs, lr, momentum, weight_decay, batch_size: SGD fine-tuning on D_f (paper: 10, 1e-5,
    0.9, 0, 64).
    seed: order of the fine-tuning batches.
    bn: "train" updates BatchNorm statistics on forget-only batches (the authors' code);
    "freeze" keeps the original statistics.
    loss_weighting: the authors' margin re-weighting of the per-sample loss.
    normalization: ``(mean, std)`` when the model expects normalised inputs; the search then
    steps in pixel space.
    Records ``attack_success_ratio`` (see :func:`unlearning_stats`).
    """
    check_positive(eps=eps, lr=lr)
    check_non_negative(momentum=momentum, weight_decay=weight_decay)
    check_inputs(model, data, "boundary_shrink")
    x, y = forget_tensors(data, "boundary_shrink")
    neighbours = neighbour_search(
        model,
        x,
        y,
        eps=eps,
        attack=attack,
        pgd_steps=pgd_steps,
        pgd_step_size=pgd_step_size,
        normalization=normalization,
    )
    unlearned = working_copy(model)
    if loss_weighting:
        weights = margin_weights(neighbours.probs, neighbours.labels)
        fit(
            unlearned,
            (x, neighbours.labels, weights),
            _weighted_ce,
            epochs=epochs,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=seed,
            bn=bn,
            progress=progress,
            desc="boundary_shrink",
        )
    else:
        fit(
            unlearned,
            (x, neighbours.labels),
            cross_entropy_loss,
            epochs=epochs,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=seed,
            bn=bn,
            progress=progress,
            desc="boundary_shrink",
        )
    set_unlearning_stats(unlearned, {"attack_success_ratio": neighbours.success_ratio})
    return unlearned
