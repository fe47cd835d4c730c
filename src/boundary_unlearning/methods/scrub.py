"""SCRUB (Kurmanji et al., NeurIPS 2023): a student moves away from the original teacher on
D_f (max steps) while staying close to it on D_r (min steps)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..checks import AtLeastOne, NonNegative, Positive, Whole
from ..data.split import UnlearningData
from ..data.streaming import inputs_and_labels, with_columns
from ..errors import HyperparameterError
from ..recipe import Recipe, RunOptions
from ..training import Batch, LossFn, fit
from ._common import working_copy
from ._losses import capped_ascent, kl_to_probs, soft_targets
from ._registry import register_method

__all__ = ["scrub"]


@register_method("scrub", cost="retain")
def scrub(
    model: nn.Module,
    data: UnlearningData,
    *,
    max_epochs: Whole = 2,
    temperature: Positive = 4.0,
    ce_weight: NonNegative = 0.99,
    kl_weight: NonNegative = 0.001,
    max_kl: Positive | None = 10.0,
    forget_batch_size: AtLeastOne = 32,
    recipe: Recipe = Recipe(epochs=3, lr=5e-4, weight_decay=5e-4),
    options: RunOptions = RunOptions(),
) -> nn.Module:
    """SCRUB: the student (a copy of the original) alternates a max step, ascending the
    distillation KL to the frozen original (the teacher) on D_f, with a min step on D_r that
    minimises ``ce_weight * CE + kl_weight * KL``; max steps stop after ``max_epochs``.

    Kurmanji, Triantafillou, Hayes and Triantafillou, "Towards Unbounded Machine
    Unlearning", NeurIPS 2023. Defaults from the authors' code (SGD lr 5e-4, momentum 0.9,
    weight decay 5e-4, KD temperature 4, gamma 0.99, alpha 0.001, msteps 2, forget batch 32);
    the teacher's soft targets are computed once (inputs are not augmented). Each pass is
    one call of the shared training loop, so the optimiser's momentum restarts per pass.

    Args:
        model: the original classifier (the teacher); never modified.
        data: the class split; ``data.forget`` and ``data.retain`` are used.
        max_epochs: the first passes also run a max step.
        temperature: of the distillation KL.
        ce_weight: the min step's CE weight (the paper's gamma).
        kl_weight: the min step's KL weight (the paper's alpha).
        max_kl: per-sample cap on the KL the max step ascends (T^2-scaled, as in the loss).
            The ascent is unbounded: on a Fashion-MNIST CNN at the published settings D_f
            accuracy reaches 0 within about 25 max steps, after which the KL keeps growing
            to infinity (step 49). A sample whose KL is above the cap stops contributing, so
            the max step stops pushing once the sample is forgotten. There (the 20-epoch
            width-32 CNN of benchmarks/bench_unlearning.py, forget class 0, D_tr 91.7%) the
            default cap 10 gives D_f 0.0% and D_tr 93.7%, a cap of 3 D_f 14.3%. ``None``:
            the unbounded original.
        forget_batch_size: batch size on D_f.
        recipe: the SGD of every pass (by name each field is a keyword): ``epochs`` passes
            over D_r at ``batch_size`` (min steps), each one epoch of the shared loop (so
            ``max_steps``, when set, caps each pass); ``seed`` orders the batches (epoch
            ``e``'s max pass uses ``seed + 2e``, its min pass ``seed + 2e + 1``); ``bn``
            "train" or "freeze" BatchNorm statistics.
        options: progress bar and speed options.

    Returns:
        A copy moved away from the original on D_f and kept close to it on D_r, in eval
        mode.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> new = unlearn("scrub", net, data, epochs=1, max_epochs=1)  # a max and a min pass
        >>> unlearning_stats(new)["steps"]
        2
    """
    if recipe.epochs is None:
        raise HyperparameterError("scrub: epochs=None; give the number of passes over D_r")
    xf, _ = inputs_and_labels(data.forget)
    xr, yr = inputs_and_labels(data.retain)
    teacher_f = soft_targets(model, xf, temperature)
    teacher_r = soft_targets(model, xr, temperature)
    student = working_copy(model)

    def max_loss(net: nn.Module, batch: Batch) -> torch.Tensor:
        return capped_ascent(
            kl_to_probs(net(batch[0]), batch[1], temperature, per_sample=True), max_kl
        )

    def min_loss(net: nn.Module, batch: Batch) -> torch.Tensor:
        x, y, probs = batch
        logits = net(x)
        return ce_weight * F.cross_entropy(logits, y) + kl_weight * kl_to_probs(
            logits, probs, temperature
        )

    def one_pass(
        tensors: tuple[torch.Tensor, ...] | Dataset[Any],
        loss: LossFn,
        size: int,
        pass_seed: int,
        desc: str,
    ) -> None:
        one_epoch = recipe.replace(epochs=1, batch_size=size, seed=pass_seed)
        fit(student, tensors, loss, recipe=one_epoch, options=options, desc=desc)

    for epoch in range(recipe.epochs):
        if epoch < max_epochs:
            one_pass(with_columns(xf, teacher_f), max_loss, forget_batch_size,
                     recipe.seed + 2 * epoch, f"scrub max {epoch + 1}")  # fmt: skip
        one_pass(with_columns(xr, yr, teacher_r), min_loss, recipe.batch_size,
                 recipe.seed + 2 * epoch + 1, f"scrub min {epoch + 1}")  # fmt: skip
    student.eval()
    return student
