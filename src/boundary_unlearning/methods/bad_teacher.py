"""Bad Teacher (Chundawat et al., AAAI 2023): distil from a competent teacher on D_r and an
incompetent (random) teacher on D_f."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Subset

from ..checks import Positive, UnitFraction
from ..data.split import UnlearningData
from ..data.streaming import concat, inputs_and_labels, with_columns
from ..models import reinitialize
from ..recipe import Recipe, RunOptions
from ..training import Batch, fit
from ._common import working_copy
from ._losses import kl_to_probs, soft_targets
from ._registry import register_method

__all__ = ["bad_teacher"]


@register_method("bad_teacher", cost="retain")
def bad_teacher(
    model: nn.Module, data: UnlearningData, *,
    temperature: Positive = 1.0, retain_fraction: UnitFraction = 0.3,
    recipe: Recipe = Recipe(epochs=1, lr=1e-4, optimizer="adam", momentum=0.0, batch_size=256),
    options: RunOptions = RunOptions(),
) -> nn.Module:  # fmt: skip
    """Bad Teacher: the student (a copy of the original) is distilled on D_f towards a
    randomly initialised "incompetent" teacher and on a random part of D_r towards the
    original ("competent") teacher, with the KL divergence at temperature ``temperature``.

    Chundawat, Tarun, Mandal and Kankanhalli, "Can Bad Teaching Induce Forgetting?
    Unlearning in Deep Networks Using an Incompetent Teacher", AAAI 2023. Defaults from the
    authors' code: 1 epoch, Adam lr 1e-4, batch 256, KL temperature 1, 30% of D_r. The
    teachers' soft targets are computed once (eval mode); the KL is the batch mean.

    Args:
        model: the original classifier; never modified.
        data: the class split; ``data.forget`` and a part of ``data.retain``.
        temperature: of the teachers' and the student's softmax.
        retain_fraction: fraction of D_r used (a seeded random subset).
        recipe: the student's training (by name each field is a keyword); ``seed`` also
            draws the incompetent teacher's weights and the retain subset.
        options: progress bar and speed options.

    Returns:
        The student, distilled from both teachers, in eval mode.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> student = unlearn("bad_teacher", net, data)  # an epoch on D_f + 30% of D_r
        >>> student is net, unlearning_stats(student)
        (False, {'steps': 1})
    """
    n = len(data.retain)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(recipe.seed)
    kept = Subset(
        data.retain,
        torch.randperm(n, generator=generator)[: max(1, round(retain_fraction * n))].tolist(),
    )
    xf, _ = inputs_and_labels(data.forget)
    xr, _ = inputs_and_labels(kept)
    incompetent = reinitialize(model, recipe.seed)
    incompetent.eval()
    targets = torch.cat(
        [soft_targets(incompetent, xf, temperature), soft_targets(model, xr, temperature)]
    )
    xs, _ = inputs_and_labels(concat(data.forget, kept))

    def loss_fn(net: nn.Module, batch: Batch) -> torch.Tensor:
        # Their loss is KL without the T^2 factor of Hinton distillation.
        return kl_to_probs(net(batch[0]), batch[1], temperature) / temperature**2

    return fit(
        working_copy(model), with_columns(xs, targets), loss_fn, recipe=recipe,
        options=options, desc="bad_teacher",
    )  # fmt: skip
