"""Finetune: keep training on the remaining data only (a baseline of the paper)."""

from __future__ import annotations

from torch import nn

from ..data.split import UnlearningData
from ..recipe import Recipe, RunOptions
from ..training import fit
from ._common import working_copy
from ._registry import register_method

__all__ = ["finetune"]


@register_method("finetune", cost="retain")
def finetune(
    model: nn.Module, data: UnlearningData, *,
    recipe: Recipe = Recipe(epochs=5, lr=0.02, weight_decay=5e-4),
    options: RunOptions = RunOptions(),
) -> nn.Module:  # fmt: skip
    """Finetune: fine-tune the original model on D_r alone for a few epochs at a higher
    learning rate, relying on catastrophic forgetting of the class it no longer sees.

    The "Finetune" baseline of Golatkar et al., "Eternal Sunshine of the Spotless Net",
    CVPR 2020, as compared in Chen et al., "Boundary Unlearning", CVPR 2023.

    Args:
        model: the original classifier; never modified.
        data: the class split; ``data.retain`` is trained on.
        recipe: SGD on D_r (5 epochs at lr 0.02, twice the original's 0.01; momentum 0.9,
            weight decay 5e-4, batch 64); by name each field is a keyword.
        options: progress bar and speed options.

    Returns:
        A copy fine-tuned on D_r alone, in eval mode.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> new = unlearn("finetune", net, data, epochs=1)
        >>> new is net, unlearning_stats(new)  # 30 retain samples: one batch of 64
        (False, {'steps': 1})
    """
    return fit(working_copy(model), data.retain, recipe=recipe, options=options, desc="finetune")
