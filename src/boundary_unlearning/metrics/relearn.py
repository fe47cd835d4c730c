"""Relearn time: how quickly a few forget samples bring the forgotten class back.

A model that only *hid* the class (e.g. suppressed its logit) relearns it in a handful of
steps; a model that never knew it (the retrained model) needs many more. Compare each
method's count with the retrained model's (Golatkar et al. CVPR 2020; Tarun et al. 2023).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from .._utils import channels_last_, model_device
from ..data.split import UnlearningData, dataset_labels, to_tensors
from ..data.streaming import input_batches, inputs_and_labels
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

    The count is found without checking every step: the checks double (after 1, 2, 4, ...
    steps) until one reaches the threshold, then bisect between the last two (retraining
    from the last weights that did not), and each check stops reading as soon as its answer
    is certain. Relearning only moves towards the class, so this is the count a check after
    every step gives, at about 2 log2(count) checks instead of count + 1.

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
    channels_last_(work)  # faster on the CPU (the checks read up to max_eval images each)

    def step_to(state: dict[str, torch.Tensor], start: int, stop: int) -> bool:
        """``work`` = ``state`` (the weights after ``start`` steps) trained on to ``stop``;
        False when the relearning loss diverged."""
        work.load_state_dict(state)
        for step in range(start, stop):
            try:
                fit(work, few, epochs=1, lr=lr, momentum=0.0, batch_size=len(pick),
                    seed=seed + step, bn="freeze", desc="relearn")  # fmt: skip
            except DivergenceError:
                return False
        return True

    return _first_reached(
        lambda: _reached(work, forget_x, forget_y, threshold), step_to,
        lambda: copy.deepcopy(work.state_dict()), max_steps,
    )  # fmt: skip


def _reached(
    model: nn.Module, x: torch.Tensor | Any, y: torch.Tensor, threshold: float
) -> bool | None:
    """Whether ``model``'s accuracy on ``(x, y)`` is at least ``threshold``, read batch by
    batch and stopped as soon as the answer is certain (the same answer as reading all);
    ``None`` when an output read is not finite."""
    n, hits, seen = len(y), 0, 0
    for x_batch in input_batches(x, 128, model_device(model)):
        logits = predict_logits(model, x_batch)
        if not bool(torch.isfinite(logits).all()):
            return None
        hits += int((logits.argmax(1).cpu() == y[seen : seen + len(logits)]).sum())
        seen += len(logits)
        if hits / n >= threshold:
            return True
        if (hits + n - seen) / n < threshold:
            return False
    return hits / n >= threshold


def _first_reached(
    reached: Callable[[], bool | None],
    step_to: Callable[[dict[str, torch.Tensor], int, int], bool],
    snapshot: Callable[[], dict[str, torch.Tensor]],
    max_steps: int,
) -> int | None:
    """The first step count at which ``reached()`` holds, searched by doubling (1, 2, 4, ...)
    and then bisection between the last two counts checked, so that about 2 log2(steps)
    checks are read instead of one per step; relearning only moves towards the class, so
    once reached it stays reached. ``None`` when a check or a step cannot be computed."""
    state = reached()
    if state is None or state:
        return None if state is None else 0
    low, low_state, high = 0, snapshot(), 1  # not reached after `low` steps
    while True:
        high = min(high, max_steps)
        if not step_to(low_state, low, high):
            return None
        state = reached()
        if state is None:
            return None
        if state:
            break
        if high == max_steps:
            return max_steps
        low, low_state, high = high, snapshot(), 2 * high
    while high - low > 1:  # reached after `high` steps, not after `low`
        mid = (low + high) // 2
        if not step_to(low_state, low, mid):
            return None
        state = reached()
        if state is None:
            return None
        if state:
            high = mid
        else:
            low, low_state = mid, snapshot()
    return high
