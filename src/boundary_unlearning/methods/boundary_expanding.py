"""Boundary Expanding (Chen et al., CVPR 2023, Sec. 4.2)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.split import UnlearningData
from ..data.streaming import inputs_and_labels, with_columns
from ..metrics.accuracy import predict_logits
from ..recipe import RunOptions
from ._common import (
    PAPER_FINETUNE,
    Layers,
    find_head,
    fit_forget,
    replace_module,
    working_copy,
)
from ._features import FEATURE_RECIPE, Depth, FeatureRecipe, forget_in_features
from ._registry import register_method
from ._stats import set_unlearning_stats

__all__ = ["boundary_expanding", "prune_head", "widen_head"]


def widen_head(head: nn.Linear, generator: torch.Generator, *, shadows: int = 1) -> nn.Linear:
    """A copy of ``head`` with ``shadows`` extra (shadow) outputs: rows 0..K-1 copied, the
    shadow rows Xavier-normal initialised (over the whole K+shadows matrix, as in the
    authors' code for one), biases 0.

    Args:
        head: the K-way final layer (not modified).
        generator: draws the shadow rows.
        shadows: how many shadow outputs (one per forget class).

    Returns:
        A (K+shadows)-way ``nn.Linear`` on the head's device and dtype.

    Example:
        >>> head = nn.Linear(3, 2)
        >>> wide = widen_head(head, torch.Generator().manual_seed(0))
        >>> wide.out_features, torch.equal(wide.weight[:2], head.weight), wide.bias[2].item()
        (3, True, 0.0)
        >>> widen_head(head, torch.Generator().manual_seed(0), shadows=2).out_features
        4
    """
    k, d = head.out_features, head.in_features
    wide = nn.Linear(d, k + shadows, bias=head.bias is not None)
    wide = wide.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        init = torch.empty(k + shadows, d, dtype=head.weight.dtype)
        nn.init.xavier_normal_(init, generator=generator)
        wide.weight.copy_(init.to(head.weight.device))
        wide.weight[:k] = head.weight
        if head.bias is not None and wide.bias is not None:
            wide.bias.zero_()
            wide.bias[:k] = head.bias
    return wide


def prune_head(wide: nn.Linear, *, shadows: int = 1) -> nn.Linear:
    """Drop the shadow outputs: a K-way layer holding the (trained) first K rows.

    Args:
        wide: the (K+shadows)-way layer :func:`widen_head` made.
        shadows: how many shadow outputs it has.

    Returns:
        A new K-way ``nn.Linear``.

    Example:
        >>> head = nn.Linear(3, 2)
        >>> back = prune_head(widen_head(head, torch.Generator().manual_seed(0)))
        >>> back.out_features, torch.equal(back.weight, head.weight)
        (2, True)
    """
    k = wide.out_features - shadows
    head = nn.Linear(wide.in_features, k, bias=wide.bias is not None)
    head = head.to(device=wide.weight.device, dtype=wide.weight.dtype)
    with torch.no_grad():
        head.weight.copy_(wide.weight[:k])
        if wide.bias is not None and head.bias is not None:
            head.bias.copy_(wide.bias[:k])
    return head


@register_method(
    "boundary_expanding", cost="sample", presets={"paper": {**PAPER_FINETUNE, "depth": "outputs"}}
)
def boundary_expanding(
    model: nn.Module, data: UnlearningData, *, depth: Depth = "features",
    layers: Layers = "head", head: str | None = None,
    recipe: FeatureRecipe = FEATURE_RECIPE, options: RunOptions = RunOptions(),
) -> nn.Module:  # fmt: skip
    """Boundary Expanding: add a shadow output neuron, fine-tune the forget data into it,
    then prune it, leaving a K-way model. Several forget classes get one shadow output each
    (a class's samples are fine-tuned into its own), so no two classes are merged into one
    new class before pruning.

    Chen et al., "Boundary Unlearning", CVPR 2023. The widened model is fine-tuned on D_f
    with every label set to the shadow class: by default its widened final layer alone
    (``layers="head"``), in the paper the whole widened network (``layers="all"``). By
    default the fine-tuning stops as soon as at most 5% of D_f is still predicted as its own
    class among the K real classes (the pruned model's view), within ``max_steps``. With
    ``depth="features"`` (the default) the feature stage (:mod:`~._features`) then moves each
    forget sample's features to the region of the class the pruned model now gives it,
    holding a bounded sample of retained images in place, so the class is gone from the
    features, not only from the outputs; ``depth="outputs"`` stops after pruning.
    ``preset="paper"`` runs the paper's loop (the whole network, lr 1e-5, 10 epochs,
    BatchNorm in train mode, no early stop, no feature stage).

    Args:
        model: the original classifier; never modified.
        data: the class split; ``data.forget``, and with ``depth="features"`` a bounded
            sample of ``data.retain``.
        depth: ``"features"`` (default) or ``"outputs"`` (see above).
        layers: the shadow stage's layers: ``"head"`` (default) fine-tunes only the widened
            final layer (shadow row included); ``"all"`` (paper) the whole widened network
            on D_f alone, whose feature drift costs the remaining classes accuracy
            (docs/methods.md).
        head: dotted name of the final ``nn.Linear`` when automatic search fails.
        recipe: both stages' training (:data:`~._features.FEATURE_RECIPE`; by name each field
            is a keyword); ``seed`` also draws the shadow row's initialisation.
        options: progress bar and speed options.

    Returns:
        A new K-way model in eval mode; :func:`unlearning_stats` holds ``steps``, with a
        target ``reached_target`` and ``forget_acc_trace``, and with the feature stage the
        ``feature_lr`` it ran at (halved after a divergence), its steps
        (``feature_stage_steps``) and whether it was undone (``feature_stage_undone``;
        :func:`~._features.forget_in_features`).

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> new = unlearn("boundary_expanding", net, data, feature_steps=5)
        >>> new[1].out_features, unlearning_stats(new)["reached_target"]  # pruned back to 4
        (4, True)
    """
    x, y = inputs_and_labels(data.forget)
    k = data.num_classes
    unlearned = working_copy(model)
    name, original_head = find_head(unlearned, k, head)
    generator = torch.Generator().manual_seed(recipe.seed)
    classes = data.forget_classes
    replace_module(unlearned, name, widen_head(original_head, generator, shadows=len(classes)))
    shadow = k + torch.searchsorted(torch.tensor(classes), y.cpu())  # class i -> output k + i
    fit_forget(
        unlearned, data, with_columns(x, shadow), forget=(x, y), layers=layers, head=name,
        recipe=recipe, options=options, desc="boundary_expanding", outputs=k + len(classes),
    )  # fmt: skip
    wide = unlearned.get_submodule(name)
    assert isinstance(wide, nn.Linear)
    replace_module(unlearned, name, prune_head(wide, shadows=len(classes)))
    unlearned.eval()
    if depth == "features":  # each forget sample's features go where the pruning left it
        landed = predict_logits(unlearned, x).argmax(1)
        stage = forget_in_features(
            unlearned, model, data, landed, recipe=recipe, head=name, options=options,
            desc="boundary_expanding",
        )  # fmt: skip
        set_unlearning_stats(unlearned, stage)
    return unlearned
