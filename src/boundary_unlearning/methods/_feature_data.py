"""What the feature stage of Boundary Shrink and Expanding reads (:mod:`._features`): its
bounded sample of D_r with the original's features (:class:`RetainPool`), the forget samples
it holds out to watch how far the class has gone, the unit of distance and the new labels of
forget samples whose class is forgotten."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._utils import model_device
from ..data.split import UnlearningData, dataset_labels
from ..data.streaming import inputs_and_labels, iterate_batches, take_rows
from ..heads import head_inputs

__all__ = ["RETAIN_SAMPLES", "WATCHED", "RetainPool"]

# The feature stage's sample of D_r: the original's features of these images give each class's
# centroid, and every step's retained batch is drawn from them.
RETAIN_SAMPLES = 1024
# The most forget samples held out of the feature stage to watch how far the class has gone.
WATCHED = 32


class RetainPool:
    """The feature stage's bounded use of D_r: a seeded sample of at most
    :data:`RETAIN_SAMPLES` retained images, with the original's features of each (the
    head's inputs), computed once. It gives the classes' centroids (the pull's targets) and
    the retained batches of every step, whose features the anchor holds at these values.

    Args:
        original: the original model.
        data: the class split (D_r is sampled).
        head: the head's dotted name, or ``None`` to search.
        seed: draws the sample and, afterwards, the batches.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem()
        >>> pool = RetainPool(net, data, head=None, seed=0)
        >>> len(pool.labels), tuple(pool.centroids().shape)  # the toy's 30 retained images
        (30, (4, 16))
        >>> x, y, feats = pool.batch(pool.draw(8))
        >>> tuple(x.shape), tuple(feats.shape)
        ((8, 1, 4, 4), (8, 16))
    """

    def __init__(
        self, original: nn.Module, data: UnlearningData, *, head: str | None, seed: int
    ) -> None:
        labels = dataset_labels(data.retain)
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randperm(len(labels), generator=gen)[:RETAIN_SAMPLES].sort().values
        x, _ = inputs_and_labels(data.retain)
        self.inputs = take_rows(x, rows)
        self.labels = labels[rows]
        self.features = head_inputs(original, self.inputs, num_classes=data.num_classes, head=head)
        self.num_classes = data.num_classes
        self.device = model_device(original)
        self.generator = torch.Generator().manual_seed(seed + 1)

    def centroids(self) -> torch.Tensor:
        """Each class's mean feature over the pool; a class without a pooled image (a
        forgotten one) gets the mean of all of them.

        Returns:
            ``(K, d)`` on the CPU.
        """
        centroids = self.features.mean(0).repeat(self.num_classes, 1)
        for c in torch.unique(self.labels).tolist():
            centroids[c] = self.features[self.labels == c].mean(0)
        return centroids

    def draw(self, size: int) -> torch.Tensor:
        """The pool's rows of a seeded random batch (with replacement).

        Args:
            size: images in the batch.

        Returns:
            ``(size,)`` row numbers.
        """
        return torch.randint(len(self.labels), (size,), generator=self.generator)

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pool's ``rows`` (from :meth:`draw`) as a batch: inputs, labels and original
        features, on the original's device.

        Args:
            rows: the pool's rows.

        Returns:
            ``(x, y, features)``.
        """
        if isinstance(self.inputs, torch.Tensor):
            x = self.inputs[rows]
        else:
            x = next(iterate_batches(self.inputs, len(rows), order=rows))[0]
        return (x.to(self.device), self.labels[rows].to(self.device),
                self.features[rows].to(self.device))  # fmt: skip


def _watched(
    x: torch.Tensor | Dataset[Any], labels: torch.Tensor, seed: int, device: torch.device
) -> tuple[torch.Tensor | Dataset[Any], torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Split the forget set for the feature stage: a seeded eighth of it (at most
    :data:`WATCHED`, none below 8 samples) is held out of the stage's training and watched:
    how far these unseen samples' features have gone tells whether the class moved, not only
    the samples the stage pulls. Returns the trained inputs and new labels, and the watched
    inputs (on ``device``) with their new labels, or ``None``."""
    n = len(labels)
    size = min(WATCHED, n // 8)
    if size == 0:
        return x, labels, None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 2))
    held, kept = order[:size].sort().values, order[size:].sort().values
    trained, watched = take_rows(x, kept), take_rows(x, held)
    seen = watched if isinstance(watched, torch.Tensor) else next(iterate_batches(watched, size))[0]
    return trained, labels[kept], (seen.to(device), labels[held].to(device))


def _way_to_go(
    original: nn.Module,
    x: torch.Tensor | Dataset[Any],
    labels: torch.Tensor,
    centroids: torch.Tensor,
    data: UnlearningData,
    head: str | None,
    seed: int,
) -> float:
    """The mean squared distance from the original's features of (a seeded sample of at
    most :data:`RETAIN_SAMPLES`) forget samples to their new classes' centroids: the
    feature stage's unit of distance."""
    n = len(labels)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:RETAIN_SAMPLES]
    rows = rows.sort().values
    sample = take_rows(x, rows)
    feats = head_inputs(original, sample, num_classes=data.num_classes, head=head)
    way = float(((feats - centroids[labels[rows]]) ** 2).sum(1).mean())
    return way if way > 1e-12 else 1.0


def _retained_labels(
    labels: torch.Tensor,
    original: nn.Module,
    x: torch.Tensor | Dataset[Any],
    centroids: torch.Tensor,
    data: UnlearningData,
    head: str | None,
) -> torch.Tensor:
    """``labels`` with any forgotten class (several classes forgotten at once, or a sample
    the output stage left in its class) replaced by the retained class whose centroid the
    sample's original features are nearest."""
    forgotten = torch.tensor(data.all_forgotten)  # an earlier request's classes too
    wrong = torch.isin(labels, forgotten)
    if not bool(wrong.any()):
        return labels
    feats = head_inputs(original, x, num_classes=data.num_classes, head=head)
    dist = torch.cdist(feats, centroids)
    dist[:, forgotten] = math.inf
    return torch.where(wrong, dist.argmin(1), labels)
