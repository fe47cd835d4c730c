"""Selective Synaptic Dampening (Foster, Schoepf and Brintrup, AAAI 2024)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .._utils import eval_mode, model_device
from ..checks import AtLeastOne, Positive, Seed
from ..data.split import UnlearningData
from ..data.streaming import concat, input_batches, inputs_and_labels, take_rows
from ._common import working_copy
from ._registry import register_method
from ._stats import set_unlearning_stats

__all__ = ["parameter_importance", "ssd"]


def parameter_importance(
    model: nn.Module, x: torch.Tensor | Dataset[Any], y: torch.Tensor, *, batch_size: int
) -> dict[str, torch.Tensor]:
    """SSD's diagonal importance: the mean over batches of the squared gradient of the
    batch's cross-entropy (model in eval mode, batches in the given order).

    Args:
        model: the classifier.
        x: the inputs: a tensor, or a dataset read ``batch_size`` at a time.
        y: the labels.
        batch_size: samples per batch.

    Returns:
        Parameter name -> importance, shaped like the parameter.

    Example:
        >>> imp = parameter_importance(nn.Linear(2, 3), torch.rand(4, 2),
        ...                            torch.tensor([0, 1, 2, 0]), batch_size=2)
        >>> {name: tuple(v.shape) for name, v in imp.items()}
        {'weight': (3, 2), 'bias': (3,)}
    """
    device = model_device(model)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = {n: torch.zeros_like(p) for n, p in params}
    batches = 0
    with eval_mode(model):
        labels = (y[i : i + batch_size] for i in range(0, len(y), batch_size))
        for xb, yb in zip(input_batches(x, batch_size, device), labels, strict=True):
            loss = F.cross_entropy(model(xb), yb.to(device))
            grads = torch.autograd.grad(loss, [p for _, p in params])
            for (n, _), g in zip(params, grads, strict=True):
                total[n] += g.pow(2)
            batches += 1
    return {n: t / max(batches, 1) for n, t in total.items()}


@register_method("ssd", cost="retain")
def ssd(
    model: nn.Module,
    data: UnlearningData,
    *,
    selection_weight: Positive = 10.0,
    dampening_constant: Positive = 1.0,
    batch_size: AtLeastOne = 64,
    seed: Seed = 0,
) -> nn.Module:
    """Selective Synaptic Dampening: no training. Parameters far more important to D_f than
    to the whole training set are scaled down in proportion to that ratio.

    Foster, Schoepf and Brintrup, "Fast Machine Unlearning Without Retraining Through
    Selective Synaptic Dampening", AAAI 2024. With ``I_f`` and ``I_D`` the importances
    (mean squared batch gradients) on D_f and on the full training set D_r + D_f, every
    weight with ``I_f > selection_weight * I_D`` is multiplied by
    ``min(dampening_constant * I_D / I_f, 1)``.

    Records ``dampened_fraction``.

    Args:
        model: the original classifier; never modified.
        data: the class split; ``data.forget`` and ``data.retain`` are used.
        selection_weight: the paper's alpha (10 for its CIFAR class forgetting).
        dampening_constant: the paper's lambda (1).
        batch_size: batch size of the importance estimates.
        seed: the (shuffled, as in the authors' loader) batch order of the full-set
            estimate.

    Returns:
        A copy with the dampened weights (no training), in eval mode; the share of weights
        scaled down is ``unlearning_stats(model)["dampened_fraction"]``.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> dampened = unlearning_stats(unlearn("ssd", net, data))["dampened_fraction"]
        >>> 0.0 <= dampened <= 1.0
        True
    """
    xf, yf = inputs_and_labels(data.forget)
    xs, ys = inputs_and_labels(concat(data.retain, data.forget))  # the whole training set
    unlearned = working_copy(model)
    forget_importance = parameter_importance(unlearned, xf, yf, batch_size=batch_size)
    order = torch.randperm(len(ys), generator=torch.Generator().manual_seed(seed))
    shuffled = take_rows(xs, order)
    full_importance = parameter_importance(unlearned, shuffled, ys[order], batch_size=batch_size)
    dampened = 0
    total = 0
    with torch.no_grad():
        for name, param in unlearned.named_parameters():
            if name not in forget_importance:
                continue
            i_f, i_d = forget_importance[name], full_importance[name]
            selected = i_f > selection_weight * i_d
            factor = (dampening_constant * i_d / i_f.clamp_min(1e-30)).clamp(max=1.0)
            param.mul_(torch.where(selected, factor, torch.ones_like(factor)))
            dampened += int(selected.sum())
            total += selected.numel()
    unlearned.eval()
    set_unlearning_stats(unlearned, {"dampened_fraction": dampened / max(total, 1)})
    return unlearned
