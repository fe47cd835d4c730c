"""Boundary Shrink (Chen et al., CVPR 2023, Sec. 4.1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import eval_mode, model_device
from ..checks import AtLeastOne, NonNegative, Positive
from ..data.split import UnlearningData
from ..data.streaming import input_batches, inputs_and_labels, with_columns
from ..neighbours import AttackName, LabelRule, neighbour_search
from ..recipe import RunOptions
from ..training import Batch, LossFn, cross_entropy_loss
from ._common import PAPER_FINETUNE, Layers, fit_forget, working_copy
from ._features import FEATURE_RECIPE, Depth, FeatureRecipe, forget_in_features
from ._registry import register_method
from ._stats import set_unlearning_stats

__all__ = ["away_from_forgotten", "boundary_shrink", "input_curvature", "margin_weights"]


def margin_weights(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The authors' optional loss re-weighting: ``3 * sigmoid((PM - 0.5) * 5)`` with
    ``PM = p_2nd - p_target`` on the neighbour's softmax (``p_2nd`` the largest probability
    of any class other than the target).

    Args:
        probs: ``(n, K)`` softmax of the neighbours.
        targets: ``(n,)`` the target (neighbour) labels.

    Returns:
        ``(n,)`` weights in ``(0, 3)``.

    Example:
        >>> w = margin_weights(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.tensor([0, 0]))
        >>> [round(v, 4) for v in w.tolist()]
        [0.2276, 0.0017]
    """
    p_target = probs.gather(1, targets[:, None]).squeeze(1)
    others = probs.scatter(1, targets[:, None], float("-inf"))
    p_second = others.max(dim=1).values
    return 3.0 * torch.sigmoid((p_second - p_target - 0.5) * 5.0)


def _weighted_ce(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y, w = batch
    return (F.cross_entropy(model(x), y, reduction="none") * w).mean()


def away_from_forgotten(
    labels: torch.Tensor, probs: torch.Tensor, y: torch.Tensor, forgotten: tuple[int, ...]
) -> torch.Tensor:
    """The neighbour labels with any *other* forgotten class (another class of the request,
    or one an earlier request forgot) replaced by the most probable class that is not
    forgotten, so no forget sample is trained into a class that must stay gone. A sample's
    own class (the paper's argmax rule where the step did not cross) is kept; with one
    class forgotten nothing changes.

    Args:
        labels: ``(n,)`` the neighbour labels.
        probs: ``(n, K)`` the model's softmax at the neighbours.
        y: ``(n,)`` the samples' own classes.
        forgotten: every forgotten class (``UnlearningData.all_forgotten``).

    Returns:
        The labels, on ``labels``' device.

    Example:
        >>> probs = torch.tensor([[0.1, 0.2, 0.5, 0.2], [0.1, 0.7, 0.1, 0.1]])
        >>> away_from_forgotten(probs.argmax(1), probs, torch.tensor([1, 2]), (1, 2))
        tensor([3, 0])
    """
    if len(forgotten) < 2:
        return labels
    gone = torch.tensor(forgotten, device=labels.device)
    other = torch.isin(labels, gone) & (labels != y.to(labels.device))
    if not bool(other.any()):
        return labels
    allowed = probs.clone()
    allowed[:, gone] = -1.0
    return torch.where(other, allowed.argmax(1), labels)


def input_curvature(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, h: float = 0.9, create_graph: bool
) -> torch.Tensor:
    """Per-sample CURE curvature ``||grad_x l(x + h z) - grad_x l(x)||`` with
    ``z = sign(grad_x l(x)) / ||sign(grad_x l(x))||`` and ``l`` the cross-entropy against
    ``y`` (Moosavi-Dezfooli et al., CVPR 2019; ``h = 0.9`` in the Boundary Unlearning code).
    ``create_graph=True`` keeps the graph so the curvature can be trained on.

    Args:
        model: the classifier.
        x: ``(n, ...)`` inputs.
        y: ``(n,)`` labels of the loss.
        h: the step size of the finite difference.
        create_graph: keep the graph for a backward pass through the curvature.

    Returns:
        ``(n,)`` curvatures.

    Example:
        >>> net = nn.Linear(2, 2)  # linear, yet curved: the cross-entropy's input Hessian is
        >>> with torch.no_grad():  # W^T (diag p - p p^T) W, zero only where p is one-hot
        ...     _ = net.weight.copy_(torch.eye(2)), net.bias.zero_()
        >>> x, y = torch.zeros(3, 2), torch.tensor([0, 1, 0])
        >>> [round(c, 2) for c in input_curvature(net, x, y, create_graph=False).tolist()]
        [0.4, 0.4, 0.4]
    """
    probe = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(probe), y, reduction="sum"), probe)
    z = torch.sign(g).detach()
    z = h * (z + 1e-7) / (z.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1))) + 1e-7)
    base = x.detach().requires_grad_(True)
    diff = F.cross_entropy(model(base + z), y, reduction="sum") - F.cross_entropy(
        model(base), y, reduction="sum"
    )
    (gd,) = torch.autograd.grad(diff, base, create_graph=create_graph)
    curvature: torch.Tensor = gd.flatten(1).norm(dim=1)
    return curvature


def _curvature_matched_ce(weight: float) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """Margin-weighted CE on the neighbour labels plus ``weight`` times the distance between
    the model's and the original's curvature profiles on the batch. The authors take the
    batch-mean loss's input gradient, i.e. per-sample curvatures divided by the batch size,
    so the distance is divided by the batch size here too."""

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y_nb, w, y, original_curvature = batch
        ce = (F.cross_entropy(model(x), y_nb, reduction="none") * w).mean()
        current = input_curvature(model, x, y, create_graph=True)
        distance: torch.Tensor = torch.linalg.vector_norm(current - original_curvature)
        return ce + weight * distance / len(x)

    return loss


@register_method(
    "boundary_shrink",
    cost="sample",
    presets={"paper": {**PAPER_FINETUNE, "label_rule": "argmax", "depth": "outputs"}},
)
def boundary_shrink(
    model: nn.Module,
    data: UnlearningData,
    *,
    eps: Positive = 0.1,
    attack: AttackName = "fgsm",
    pgd_steps: AtLeastOne = 5,
    pgd_step_size: Positive = 8 / 255,
    label_rule: LabelRule = "nearest_other",
    depth: Depth = "features",
    layers: Layers = "head",
    head: str | None = None,
    loss_weighting: bool = False,
    curvature_weight: NonNegative = 0.0,
    recipe: FeatureRecipe = FEATURE_RECIPE,
    options: RunOptions = RunOptions(),
) -> nn.Module:
    """Boundary Shrink: relabel each forget sample with its nearest adversarial neighbour's
    class under the original model, then fine-tune on the clean inputs with those labels.

    Chen et al., "Boundary Unlearning", CVPR 2023. The neighbour labels come from the frozen
    original model, so they are computed once (the authors' loop recomputes them every step
    with the same result at about twice the cost). By default two stages run. The output
    stage fine-tunes the final layer until at most 5% of D_f is still predicted as its own
    class (``target_forget_acc``), within ``max_steps``. The feature stage
    (``depth="features"``, :mod:`~._features`) then moves each forget sample's features to
    its neighbour class's region, holding a bounded sample of retained images in place, so
    the class is gone from the features, not only hidden by the final layer.
    ``depth="outputs"`` stops after the output stage (faster; the class is still in the
    features). ``preset="paper"`` runs the paper's loop instead (the whole network, lr 1e-5,
    10 epochs, BatchNorm in train mode, the paper's label rule, no early stop, no feature
    stage).

    Args:
        model: the original classifier; never modified.
        data: the class split; only ``data.forget`` is used. When the data are normalised
            (``class_split(..., normalization=(mean, std))``) the search steps in pixel
            space and hands the model normalised neighbours.
        eps: FGSM step / PGD radius in pixel space [0, 1] (paper: 0.1).
        attack: ``"fgsm"`` (paper) or ``"pgd"`` (authors' code: ``pgd_steps`` steps of
            ``pgd_step_size``).
        label_rule: ``"nearest_other"`` (default): the most probable class other than the
            true one at the neighbour, so every sample leaves its class; ``"argmax"`` (paper):
            the neighbour's predicted class, which is the true class wherever the step did
            not cross a boundary (those samples are trained to stay).
        depth: ``"features"`` (default): the output stage, then the feature stage, which
            reads D_r too (a bounded sample, see :class:`~._features.FeatureRecipe`);
            ``"outputs"``: the output stage alone (D_f only).
        layers: the output stage's layers: ``"head"`` (default) fine-tunes only the final
            ``nn.Linear``; ``"all"`` (paper) the whole network, on D_f alone, which drags the
            remaining classes' features along (on Fashion-MNIST they drift into "shirt";
            docs/methods.md).
        head: dotted name of the final ``nn.Linear`` when automatic search fails.
        loss_weighting: the authors' margin re-weighting of the per-sample loss.
        curvature_weight: weight of the authors' curvature-matching regulariser (CURE-style,
            h = 0.9): keep each forget sample's input-space curvature, under its true label,
            close to the original model's (0: off, the paper; 0.7: the authors' "enhanced"
            setting; costs a double backward per step).
        recipe: both stages' training (:data:`~._features.FEATURE_RECIPE`). Called by name
            (``unlearn("boundary_shrink", ...)``, ``boundary_unlearning.boundary_shrink``)
            each of its fields is a keyword: ``lr``, ``max_steps``, ``epochs``, ``bn``,
            ``target_forget_acc`` (the output stage), ``feature_steps``, ``feature_lr``,
            ``feature_weight``, ``retain_weight``, ``reset_rows`` (the feature stage), ...
        options: progress bar and speed options (by name: ``progress``, ``amp``,
            ``channels_last``, ``compile_model``).

    Returns:
        A new model in eval mode. :func:`unlearning_stats` holds ``attack_success_ratio``
        (the share of neighbours that crossed into another class), ``steps``, with a target
        ``reached_target`` and ``forget_acc_trace``, and with the feature stage the
        ``feature_lr`` it ran at (halved after a divergence), its steps
        (``feature_stage_steps``) and whether it was undone (``feature_stage_undone``;
        :func:`~._features.forget_in_features`).

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> stats = unlearning_stats(unlearn("boundary_shrink", net, data, depth="outputs"))
        >>> stats["reached_target"], stats["steps"], round(stats["attack_success_ratio"], 2)
        (True, 21, 0.8)
        >>> deep = unlearning_stats(unlearn("boundary_shrink", net, data, feature_steps=5))
        >>> deep["reached_target"], deep["steps"]  # 21 output steps, then 5 feature steps
        (True, 26)
    """
    x, y = inputs_and_labels(data.forget)
    neighbours = neighbour_search(
        model, x, y, eps=eps, attack=attack, pgd_steps=pgd_steps, pgd_step_size=pgd_step_size,
        normalization=data.normalization, label_rule=label_rule, keep_inputs=False,
    )  # fmt: skip
    labels = away_from_forgotten(neighbours.labels, neighbours.probs, y, data.all_forgotten)
    unlearned = working_copy(model)
    if curvature_weight > 0:
        weights = (
            margin_weights(neighbours.probs, labels)
            if loss_weighting
            else torch.ones(len(y), device=labels.device)
        )
        device = model_device(model)
        with eval_mode(model):  # the frozen original, as in the neighbour search
            original_curvature = torch.cat(
                [
                    input_curvature(model, xb, y[i : i + 256].to(device), create_graph=False)
                    for i, xb in zip(range(0, len(y), 256), input_batches(x, 256, device),
                                     strict=True)
                ]
            ).detach()  # fmt: skip
        tensors = with_columns(x, labels, weights, y, original_curvature)
        loss_fn: LossFn = _curvature_matched_ce(curvature_weight)
        shard = False  # the curvature distance is a norm over the whole batch
    elif loss_weighting:
        tensors = with_columns(x, labels, margin_weights(neighbours.probs, labels))
        loss_fn, shard = _weighted_ce, True
    else:
        tensors, loss_fn, shard = with_columns(x, labels), cross_entropy_loss, True
    fit_forget(
        unlearned, data, tensors, loss_fn, forget=(x, y), layers=layers, head=head,
        recipe=recipe, options=options, desc="boundary_shrink", shard=shard,
    )  # fmt: skip
    stats: dict[str, float] = {"attack_success_ratio": neighbours.success_ratio}
    if depth == "features":
        stats |= forget_in_features(
            unlearned, model, data, labels, recipe=recipe, head=head,
            options=options, desc="boundary_shrink",
        )  # fmt: skip
    set_unlearning_stats(unlearned, stats)
    return unlearned
