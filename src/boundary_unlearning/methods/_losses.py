"""Helpers the later methods share: seeded samplers, distillation losses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .._utils import eval_mode
from ..data.streaming import iterate_batches
from ..errors import DataError
from ..metrics.accuracy import predict_logits

__all__ = [
    "RetainSampler",
    "capped_ascent",
    "kl_to_probs",
    "random_wrong_labels",
    "soft_targets",
]


def random_wrong_labels(
    y: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    *,
    forgotten: Sequence[int] = (),
) -> torch.Tensor:
    """Uniformly random labels, each different from the true one (seeded); with two or more
    ``forgotten`` classes, drawn among the classes that are not forgotten (no sample is
    trained into a class that must stay gone).

    Args:
        y: the true labels.
        num_classes: the number of classes.
        generator: draws the labels.
        forgotten: every forgotten class (``UnlearningData.all_forgotten``); with one, the
            draw is the plain wrong-label draw.

    Returns:
        The new labels, on the CPU.

    Raises:
        DataError: fewer than two classes.

    Example:
        >>> y = torch.tensor([0, 1, 2, 0])
        >>> random_wrong_labels(y, 3, torch.Generator().manual_seed(0)).tolist()
        [1, 0, 1, 1]
        >>> gen = torch.Generator().manual_seed(0)
        >>> set(random_wrong_labels(y, 4, gen, forgotten=(0, 2)).tolist()) <= {1, 3}
        True
    """
    if num_classes < 2:
        raise DataError("random wrong labels need at least two classes")
    if len(forgotten) > 1:
        allowed = torch.tensor([c for c in range(num_classes) if c not in set(forgotten)])
        return allowed[torch.randint(len(allowed), y.shape, generator=generator)]
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y.cpu() + shift) % num_classes


class RetainSampler:
    """Draws seeded random batches of D_r (with replacement), one per call, on ``device``.

    Used inside a loss function when a method pairs each forget batch with a retain batch.

    Args:
        x: D_r's inputs: a tensor (moved to ``device`` once), or a dataset whose drawn
            items are read for each batch.
        y: D_r's labels.
        batch_size: samples per drawn batch.
        seed: seeds the draws.
        device: where the batches go.

    Example:
        >>> sampler = RetainSampler(torch.rand(5, 2), torch.arange(5), 3, 0, torch.device("cpu"))
        >>> xb, yb = sampler()
        >>> tuple(xb.shape), tuple(yb.shape)
        ((3, 2), (3,))
    """

    def __init__(
        self,
        x: torch.Tensor | Dataset[Any],
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device,
    ) -> None:
        self.x = x.to(device) if isinstance(x, torch.Tensor) else x
        self.y, self.device = y.to(device), device
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.y), (self.batch_size,), generator=self.generator)
        if isinstance(self.x, torch.Tensor):
            idx = idx.to(self.x.device)
            return self.x[idx], self.y[idx]
        batch = next(iterate_batches(self.x, self.batch_size, order=idx, device=self.device))
        return batch[0], self.y[idx.to(self.device)]


@torch.no_grad()
def soft_targets(
    model: nn.Module, x: torch.Tensor | Dataset[Any], temperature: float = 1.0
) -> torch.Tensor:
    """``softmax(model(x) / T)`` of a frozen model, in eval mode, on the model's device.

    Args:
        model: the teacher.
        x: the inputs: a tensor, or a dataset read batch by batch.
        temperature: T.

    Returns:
        ``(len(x), K)`` probabilities.

    Example:
        >>> teacher = nn.Linear(2, 2)
        >>> soft_targets(teacher, torch.zeros(1, 2), temperature=1e9).tolist()  # T large: uniform
        [[0.5, 0.5]]
    """
    with eval_mode(model):
        logits = predict_logits(model, x).clone()
    return F.softmax(logits / temperature, dim=1)


def capped_ascent(per_sample: torch.Tensor, cap: float | None) -> torch.Tensor:
    """The loss whose minimisation ascends ``per_sample`` (one loss value per sample),
    each value capped at ``cap``: a sample above the cap gives no gradient, so the ascent
    of an unbounded loss stops once the sample is forgotten. ``None``: no cap.

    Args:
        per_sample: one loss value per sample.
        cap: the cap, or ``None``.

    Returns:
        The scalar loss ``-mean(min(per_sample, cap))``.

    Example:
        >>> capped_ascent(torch.tensor([1.0, 5.0]), 3.0).item()
        -2.0
        >>> capped_ascent(torch.tensor([1.0, 5.0]), None).item()
        -3.0
    """
    if cap is not None:
        per_sample = per_sample.clamp(max=cap)
    return -per_sample.mean()


def kl_to_probs(
    logits: torch.Tensor, probs: torch.Tensor, temperature: float, *, per_sample: bool = False
) -> torch.Tensor:
    """``KL(probs || softmax(logits / T)) * T^2`` (Hinton distillation): the batch mean, or
    one value per sample with ``per_sample=True``.

    Args:
        logits: the student's ``(n, K)`` logits.
        probs: the teacher's ``(n, K)`` probabilities.
        temperature: T.
        per_sample: return ``(n,)`` values instead of the batch mean.

    Returns:
        The scaled KL divergence.

    Example:
        >>> probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
        >>> kl = kl_to_probs(torch.zeros(2, 2), probs, 1.0, per_sample=True)
        >>> [round(v, 4) for v in kl.tolist()]  # 0 and ln 2
        [0.0, 0.6931]
    """
    log_student = F.log_softmax(logits / temperature, dim=1)
    if per_sample:
        kl = F.kl_div(log_student, probs, reduction="none").sum(dim=1)
    else:
        kl = F.kl_div(log_student, probs, reduction="batchmean")
    return kl * temperature**2
