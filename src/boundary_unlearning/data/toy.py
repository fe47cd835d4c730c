"""A tiny problem to try the API on in a second: the examples in the docstrings use it."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .._utils import seeded
from .split import UnlearningData, class_split

__all__ = ["toy_problem"]


def toy_problem(
    *, n: int = 40, num_classes: int = 4, forget_class: int = 1, seed: int = 0
) -> tuple[UnlearningData, nn.Module]:
    """A split of ``n`` random 1x4x4 images (labels ``i % num_classes``; the same images
    serve as the test set) and an untrained linear classifier for it, both seeded.

    Args:
        n: images.
        num_classes: classes.
        forget_class: the class the split forgets.
        seed: seeds the images and the classifier's weights.

    Returns:
        ``(data, model)``.

    Example:
        >>> data, net = toy_problem()
        >>> data.sizes()["forget"], net(torch.zeros(1, 1, 4, 4)).shape
        (10, torch.Size([1, 4]))
    """
    x = torch.rand((n, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    y = torch.arange(n) % num_classes
    data = class_split(TensorDataset(x, y), TensorDataset(x, y), forget_classes=[forget_class])
    with seeded(seed):
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, num_classes))
    return data, model
