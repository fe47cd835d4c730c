"""Random Labels: fine-tune on D_f relabelled with random wrong classes (a baseline)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.split import UnlearningData
from ..data.streaming import inputs_and_labels, with_columns
from ..recipe import ForgetRecipe, RunOptions
from ._common import FORGET_RECIPE, Layers, fit_forget, published_loop, working_copy
from ._losses import random_wrong_labels
from ._registry import register_method

__all__ = ["random_labels"]


@register_method(
    "random_labels", cost="forget", presets={"paper": published_loop(epochs=5, lr=1e-3)}
)
def random_labels(
    model: nn.Module, data: UnlearningData, *, layers: Layers = "head", head: str | None = None,
    recipe: ForgetRecipe = FORGET_RECIPE, options: RunOptions = RunOptions(),
) -> nn.Module:  # fmt: skip
    """Random Labels: give every forget sample a uniformly random *wrong* label (drawn once,
    seeded) and fine-tune on D_f with cross-entropy.

    A baseline of Chen et al., "Boundary Unlearning", CVPR 2023 (the practical variant of
    Graves et al.'s Amnesiac unlearning, AAAI 2021). Forget-only, like Boundary Shrink, but
    with labels that ignore the decision boundary. By default it stops at the forgetting
    target like Boundary Shrink; ``preset="paper"`` is the fixed 5-epoch loop at lr 1e-3
    with BatchNorm in train mode.

    Args:
        model: the original classifier; never modified.
        data: the class split; only ``data.forget`` is used.
        layers: ``"head"`` (default) trains only the final ``nn.Linear``; ``"all"`` the
            whole network (as the published setting).
        head: dotted name of the final ``nn.Linear`` when automatic search fails.
        recipe: SGD on the relabelled D_f (:data:`~._common.FORGET_RECIPE`; by name each
            field is a keyword); ``seed`` also draws the random labels.
        options: progress bar and speed options.

    Returns:
        A copy trained on D_f's wrong labels until the target, in eval mode.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn
        >>> from boundary_unlearning.metrics import accuracy
        >>> data, net = toy_problem()
        >>> accuracy(unlearn("random_labels", net, data), data.forget)  # D_f all mislabelled
        0.0
    """
    x, y = inputs_and_labels(data.forget)
    gen = torch.Generator().manual_seed(recipe.seed)
    labels = random_wrong_labels(y, data.num_classes, gen, forgotten=data.all_forgotten)
    return fit_forget(
        working_copy(model), data, with_columns(x, labels), forget=(x, y), layers=layers,
        head=head, recipe=recipe, options=options, desc="random_labels",
    )  # fmt: skip
