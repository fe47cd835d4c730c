"""Retrain from scratch on D_r: the gold standard every method is compared with."""

from __future__ import annotations

from torch import nn

from ..data.split import UnlearningData
from ..models import reinitialize
from ..recipe import Recipe, RunOptions
from ..training import fit
from ._registry import register_method

__all__ = ["retrain"]


@register_method("retrain", cost="reference")
def retrain(
    model: nn.Module, data: UnlearningData, *,
    recipe: Recipe = Recipe(epochs=50, lr=0.01, weight_decay=5e-4),
    options: RunOptions = RunOptions(),
) -> nn.Module:  # fmt: skip
    """Retrain: re-initialise the architecture and train from scratch on D_r only.

    The reference every unlearning method is measured against; use the original model's
    recipe (paper: SGD, lr 0.01, momentum 0.9, batch 64, 50 epochs).

    Args:
        model: gives the architecture; its weights are not used.
        data: the class split; ``data.retain`` is trained on.
        recipe: the training (by name each field is a keyword); ``seed`` also draws the
            initial weights.
        options: progress bar and speed options.

    Returns:
        The architecture freshly initialised and trained on D_r, in eval mode.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> unlearning_stats(unlearn("retrain", net, data, epochs=2))  # 30 samples: 1 step/epoch
        {'steps': 2}
    """
    fresh = reinitialize(model, recipe.seed)
    return fit(fresh, data.retain, recipe=recipe, options=options, desc="retrain")
