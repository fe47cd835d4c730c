"""Relearn time: how quickly a few forget samples bring the forgotten class back.

A model that only *hid* the class (e.g. suppressed its logit) relearns it in a handful of
steps; a model that never knew it (the retrained model) needs many more. Compare each
method's count with the retrained model's (Golatkar et al. CVPR 2020; Tarun et al. 2023).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.utils.data import Subset

from ..data.split import UnlearningData, dataset_labels, to_tensors
from ..data.streaming import inputs_and_labels
from ..errors import DivergenceError
from .accuracy import predict_logits

__all__ = ["relearn_steps"]


def relearn_steps(
    model: nn.Module,
    data: UnlearningData,
    *,
    samples: int = 8,
    threshold: float = 0.5,
    max_steps: int = 100,
    lr: float = 1e-3,
    max_eval: int = 1000,
    seed: int = 0,
) -> int | None:
    """Full-batch SGD steps (no momentum, BatchNorm frozen, through :func:`training.fit`) on
    ``samples`` seeded forget samples of a *copy* of ``model`` until its accuracy on the whole
    forget set (D_f) reaches ``threshold``.

    Returns 0 when the model already reaches it, ``max_steps`` when it does not within the
    cap, and ``None`` when it cannot be measured (the model's outputs are not finite). Closer
    to the retrained model's value is better (fewer steps = the class was hidden, not
    forgotten). ``model`` is not modified. Accuracy is measured on at most ``max_eval``
    seeded forget samples, to bound the cost on large data sets.

    The default ``lr=1e-3`` keeps the counts apart: on digits (class 3, small CNN) the
    retrained model needs 29 steps and Boundary Shrink / Expanding trained at the final layer
    only (``depth="outputs"``) 4 and 3, while at ``lr=1e-2`` they all relearn in 1-3 steps.

    Args:
        model: the unlearned model (copied, never modified).
        data: the four sets; the forget samples come from ``data.forget_eval``.
        samples: how many seeded forget samples to train on.
        threshold: the forget accuracy that counts as relearned.
        max_steps: the cap on the count.
        lr: the SGD learning rate.
        max_eval: the most forget samples accuracy is measured on.
        seed: seeds the picked samples and the training.

    Returns:
        The number of steps, in ``0 .. max_steps``; ``None`` for a model whose outputs (or
        whose relearning loss) are not finite.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from boundary_unlearning.data.split import class_split
        >>> ds = TensorDataset(
        ...     torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]] * 4), torch.tensor([0, 1, 2] * 4)
        ... )
        >>> data = class_split(ds, ds, 2)
        >>> model = nn.Linear(2, 3)  # never answers class 2:
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        ...     _ = model.bias.zero_()
        >>> relearn_steps(model, data), relearn_steps(model, data, lr=1.0)
        (100, 1)
    """
    from ..training import fit

    forget = data.forget_eval
    forget_y = dataset_labels(forget)
    if len(forget_y) == 0:
        return 0
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(forget_y), generator=gen)[: max(1, samples)]
    few = to_tensors(Subset(forget, pick.tolist()))
    if len(forget_y) > max_eval:
        keep = torch.randperm(len(forget_y), generator=gen)[:max_eval]
        forget, forget_y = Subset(forget, keep.tolist()), forget_y[keep]
    # the eval set as tensors when it is held in memory, else read batch by batch
    forget_x = inputs_and_labels(forget)[0]
    work = copy.deepcopy(model)

    def forget_accuracy() -> float:
        logits = predict_logits(work, forget_x)
        if not bool(torch.isfinite(logits).all()):
            return math.nan
        return float((logits.argmax(1).cpu() == forget_y).float().mean())

    for step in range(max_steps):
        acc = forget_accuracy()
        if math.isnan(acc):
            return None
        if acc >= threshold:
            return step
        try:
            fit(work, few, epochs=1, lr=lr, momentum=0.0, batch_size=len(pick),
                seed=seed + step, bn="freeze", desc="relearn")  # fmt: skip
        except DivergenceError:
            return None
    return max_steps
