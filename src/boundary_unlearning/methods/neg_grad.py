"""Negative Gradient (gradient ascent on D_f), optionally with a retain term (NegGrad+)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import model_device
from ..checks import NonNegative, Positive
from ..data.split import UnlearningData
from ..data.streaming import inputs_and_labels, with_columns
from ..recipe import ForgetRecipe, RunOptions
from ..training import Batch
from ._common import (
    FORGET_RECIPE,
    Layers,
    fit_forget,
    published_loop,
    require_retain,
    working_copy,
)
from ._losses import RetainSampler, capped_ascent
from ._registry import register_method

__all__ = ["neg_grad"]


@register_method("neg_grad", cost="forget", presets={"paper": published_loop(epochs=5, lr=1e-4)})
def neg_grad(
    model: nn.Module,
    data: UnlearningData,
    *,
    retain_weight: NonNegative = 0.0,
    max_loss: Positive | None = 3.0,
    layers: Layers = "head",
    head: str | None = None,
    recipe: ForgetRecipe = FORGET_RECIPE,
    options: RunOptions = RunOptions(),
) -> nn.Module:
    """Negative Gradient: gradient ascent on the cross-entropy of D_f.

    A baseline of Chen et al., "Boundary Unlearning", CVPR 2023 (after Golatkar et al.,
    CVPR 2020). By default it stops at the forgetting target like Boundary Shrink;
    ``preset="paper"`` is Jia et al.'s "GA" setting (NeurIPS 2023: lr 1e-4, 5 epochs,
    BatchNorm in train mode). With ``retain_weight > 0`` each step also minimises
    ``retain_weight`` times the cross-entropy of a random D_r batch of the same size:
    "NegGrad+" (Kurmanji et al., NeurIPS 2023), which then needs D_r too.

    Args:
        model: the original classifier; never modified.
        data: the class split; ``data.forget`` (and ``data.retain`` for NegGrad+).
        retain_weight: weight of the D_r term (0: plain NegGrad, touches D_f only).
        max_loss: per-sample cap on the ascended cross-entropy. Gradient ascent on an
            unbounded loss keeps growing the weights once a sample is forgotten, and on
            Fashion-MNIST the published lr 1e-4 reaches infinite loss within two epochs
            (lower lrs only later). A sample whose loss is above the cap (its true class has
            probability below ``exp(-max_loss)``, 5% for the default 3) stops contributing,
            so the ascent stops once every sample is forgotten. On a 2-epoch Fashion-MNIST
            CNN (class 4, D_tr 87%) caps 2.3 / 3 / 5 / 20 all give D_f 0% with D_tr
            83.3 / 82.0 / 76.4 / 25.7%. ``None``: the unbounded original.
        layers: ``"head"`` (default) trains only the final ``nn.Linear``; ``"all"`` the
            whole network (as the published setting).
        head: dotted name of the final ``nn.Linear`` when automatic search fails.
        recipe: SGD over D_f (:data:`~._common.FORGET_RECIPE`; by name each field is a
            keyword); ``seed`` also orders the D_r batches.
        options: progress bar and speed options.

    Returns:
        A copy whose loss on D_f was ascended until the target, in eval mode.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> unlearning_stats(unlearn("neg_grad", net, data))["forget_acc_trace"]  # [[step, D_f]]
        [[17, 0.0]]
    """
    x, y = inputs_and_labels(data.forget)
    unlearned = working_copy(model)
    sampler = None
    if retain_weight > 0:
        require_retain(data, "neg_grad")
        xr, yr = inputs_and_labels(data.retain)
        sampler = RetainSampler(xr, yr, recipe.batch_size, recipe.seed + 1, model_device(unlearned))

    def loss_fn(net: nn.Module, batch: Batch) -> torch.Tensor:
        loss = capped_ascent(F.cross_entropy(net(batch[0]), batch[1], reduction="none"), max_loss)
        if sampler is not None:
            xb, yb = sampler()
            loss = loss + retain_weight * F.cross_entropy(net(xb), yb)
        return loss

    return fit_forget(
        unlearned, data, with_columns(x, y), loss_fn, forget=(x, y), layers=layers, head=head,
        recipe=recipe, options=options, desc="neg_grad",
    )  # fmt: skip
