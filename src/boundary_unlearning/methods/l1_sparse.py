"""l1-sparse unlearning (Jia et al., NeurIPS 2023): fine-tune on D_r with a decaying L1
penalty on the weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import NonNegative
from ..data.split import UnlearningData
from ..recipe import Recipe, RunOptions
from ..training import Batch, fit
from ._common import working_copy
from ._registry import register_method

__all__ = ["l1_sparse"]


@register_method("l1_sparse", cost="retain")
def l1_sparse(
    model: nn.Module, data: UnlearningData, *, l1_weight: NonNegative = 5e-4,
    recipe: Recipe = Recipe(epochs=10, lr=0.01, weight_decay=5e-4),
    options: RunOptions = RunOptions(),
) -> nn.Module:  # fmt: skip
    """l1-sparse: fine-tune on D_r minimising ``CE + gamma_e * ||theta||_1`` where the L1
    weight decays linearly over the epochs, ``gamma_e = l1_weight * (1 - e / epochs)``.

    Jia, Liu, Ram, Yao, Liu, Liu, Sharma and Liu, "Model Sparsity Can Simplify Machine
    Unlearning", NeurIPS 2023 (their "FT-l1"; defaults from the authors' code: 10 epochs,
    lr 0.01, gamma 5e-4, SGD momentum 0.9, weight decay 5e-4). The penalty covers every
    parameter, as in their code.

    Args:
        model: the original classifier; never modified.
        data: the class split; ``data.retain`` is trained on.
        l1_weight: gamma at the first epoch.
        recipe: SGD on D_r (by name each field is a keyword; the epochs the budget allows
            set the decay).
        options: progress bar and speed options.

    Returns:
        A copy fine-tuned on D_r under the decaying L1 penalty, in eval mode.

    Example:
        >>> import torch
        >>> from boundary_unlearning import toy_problem, unlearn
        >>> data, net = toy_problem()
        >>> l1 = lambda m: sum(float(p.detach().abs().sum()) for p in m.parameters())
        >>> l1(unlearn("l1_sparse", net, data, epochs=3, l1_weight=0.05)) < l1(net)  # shrinks
        True
    """
    retain = data.retain
    steps_per_epoch = math.ceil(len(retain) / recipe.batch_size)  # type: ignore[arg-type]
    epochs = math.ceil(recipe.limit(steps_per_epoch) / steps_per_epoch)
    step = 0

    def loss_fn(net: nn.Module, batch: Batch) -> torch.Tensor:
        nonlocal step
        gamma = l1_weight * (1 - (step // steps_per_epoch) / max(epochs, 1))
        step += 1
        l1 = torch.stack([p.abs().sum() for p in net.parameters()]).sum()
        return F.cross_entropy(net(batch[0]), batch[1]) + gamma * l1

    return fit(
        working_copy(model), retain, loss_fn, recipe=recipe, options=options, desc="l1_sparse"
    )
