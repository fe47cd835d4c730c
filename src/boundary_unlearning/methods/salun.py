"""SalUn: saliency-masked random-label unlearning (Fan et al., ICLR 2024)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .._utils import eval_mode, model_device
from ..checks import UnitFraction
from ..data.split import UnlearningData
from ..data.streaming import concat, input_batches, inputs_and_labels, with_columns
from ..recipe import Recipe, RunOptions
from ..training import fit
from ._common import working_copy
from ._registry import register_method
from ._stats import set_unlearning_stats

__all__ = ["saliency_mask", "salun"]


def saliency_mask(
    model: nn.Module,
    x: torch.Tensor | Dataset[Any],
    y: torch.Tensor,
    *,
    threshold: float,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """SalUn's weight saliency: ``|sum over D_f batches of grad CE|`` (model in eval mode);
    the mask is 1 on the ``threshold`` fraction of all weights with the largest saliency
    (one global ranking over every parameter, as in the authors' code).

    Args:
        model: the classifier.
        x: D_f's inputs: a tensor, or a dataset read ``batch_size`` at a time.
        y: D_f's labels.
        threshold: the fraction of all weights to mark.
        batch_size: samples per gradient batch.

    Returns:
        Parameter name -> 0/1 mask shaped like the parameter.

    Example:
        >>> masks = saliency_mask(nn.Linear(2, 2), torch.rand(4, 2), torch.tensor([0, 1, 0, 1]),
        ...                       threshold=0.5, batch_size=2)
        >>> sorted(masks), sum(int(m.sum()) for m in masks.values())  # half of 6 weights
        (['bias', 'weight'], 3)
    """
    device = model_device(model)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = {n: torch.zeros_like(p) for n, p in params}
    with eval_mode(model):
        labels = (y[i : i + batch_size] for i in range(0, len(y), batch_size))
        for xb, yb in zip(input_batches(x, batch_size, device), labels, strict=True):
            loss = -F.cross_entropy(model(xb), yb.to(device))
            step = torch.autograd.grad(loss, [p for _, p in params])
            for (n, _), g in zip(params, step, strict=True):
                grads[n] += g
    flat = torch.cat([g.abs().flatten() for g in grads.values()])
    keep = int(len(flat) * threshold)
    chosen = torch.zeros_like(flat)
    if keep > 0:
        chosen[torch.topk(flat, keep, sorted=False).indices] = 1.0
    masks: dict[str, torch.Tensor] = {}
    offset = 0
    for n, g in grads.items():
        masks[n] = chosen[offset : offset + g.numel()].view_as(g)
        offset += g.numel()
    return masks


@register_method("salun", cost="retain")
def salun(
    model: nn.Module, data: UnlearningData, *, threshold: UnitFraction = 0.5,
    recipe: Recipe = Recipe(epochs=10, lr=0.013, weight_decay=5e-4, batch_size=256),
    options: RunOptions = RunOptions(),
) -> nn.Module:  # fmt: skip
    """SalUn: find the weights most salient for the forget loss, then fine-tune only those
    on D_f with random labels together with D_r with its true labels.

    Fan, Liu, Zhang, Wei, Wong and Liu, "SalUn: Empowering Machine Unlearning via Gradient-
    based Weight Saliency in Both Image Classification and Generation", ICLR 2024. Defaults:
    the authors' random-label ("RL") settings (mask threshold 50%, 10 epochs, lr 0.013, SGD
    momentum 0.9, weight decay 5e-4). As in their code the random labels are uniform over all
    classes, and the mask multiplies the gradients (weight decay and momentum still act on
    the unmasked weights).

    Args:
        model: the original classifier; never modified.
        data: the class split; ``data.forget`` and ``data.retain``.
        threshold: fraction of all weights (ranked globally by saliency) that may change.
        recipe: SGD on D_f (random labels) + D_r (by name each field is a keyword);
            ``seed`` also draws the random labels.
        options: progress bar and speed options.

    Returns:
        A copy whose salient weights alone were fine-tuned, in eval mode; the share of
        weights that trained is ``unlearning_stats(model)["masked_fraction"]``.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> unlearning_stats(unlearn("salun", net, data, epochs=1))["masked_fraction"]
        0.5
    """
    xf, yf = inputs_and_labels(data.forget)
    xs, ys = inputs_and_labels(concat(data.forget, data.retain))
    unlearned = working_copy(model)
    masks = saliency_mask(unlearned, xf, yf, threshold=threshold, batch_size=recipe.batch_size)
    generator = torch.Generator().manual_seed(recipe.seed)
    random = torch.randint(0, data.num_classes, yf.shape, generator=generator)
    hooks = [
        p.register_hook(lambda g, m=masks[n]: g * m)  # type: ignore[no-untyped-call]
        for n, p in unlearned.named_parameters()
        if n in masks
    ]
    try:
        fit(
            unlearned, with_columns(xs, torch.cat([random, ys[len(yf) :]])), recipe=recipe,
            options=options, desc="salun",
        )  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
    total = sum(m.numel() for m in masks.values())
    kept = sum(float(m.sum()) for m in masks.values())
    set_unlearning_stats(unlearned, {"masked_fraction": kept / max(total, 1)})
    return unlearned
