"""The zoo's building blocks: :class:`Normalize`, :class:`Classifier` (``normalize`` ->
``body`` -> ``head``) and the name registry that :func:`register_model` fills.

Keeping the normalisation inside the model lets the neighbour search step in pixel space.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

from .._utils import seeded

__all__ = ["Classifier", "Normalize", "list_models", "register_model", "reinitialize"]

ModelFactory = Callable[..., "Classifier"]
F = TypeVar("F", bound=ModelFactory)
_REGISTRY: dict[str, ModelFactory] = {}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first layer of every model here.

    Args:
        mean: one mean per channel.
        std: one standard deviation per channel.

    Raises:
        RuntimeError: (on a forward pass) the input is not ``(N, C, H, W)`` with the right
            number of channels.

    Example:
        >>> Normalize([0.5], [0.25])(torch.ones(1, 1, 1, 2)).flatten().tolist()
        [2.0, 2.0]
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``.

        Args:
            x: ``(N, C, H, W)`` pixels.

        Returns:
            ``(x - mean) / std``.

        Raises:
            RuntimeError: ``x`` is not 4-D or has another number of channels.

        Example:
            >>> Normalize([0.5], [0.5]).forward(torch.zeros(1, 1, 1, 1)).item()
            -1.0
        """
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            # broadcasting would otherwise let a 3-channel model take grayscale images
            raise RuntimeError(
                f"expected images of shape (N, {self.mean.shape[1]}, H, W), got {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``head(body(normalize(x)))``; ``features(x)`` gives the penultimate representation.

    Args:
        normalize: the input normalisation.
        body: the feature extractor.
        head: the final linear layer (the one methods such as Boundary Expanding widen).

    Example:
        >>> net = Classifier(Normalize([0.5], [0.5]), nn.Flatten(), nn.Linear(4, 3))
        >>> net(torch.zeros(2, 1, 2, 2)).shape, net.features(torch.zeros(2, 1, 2, 2)).shape
        (torch.Size([2, 3]), torch.Size([2, 4]))
    """

    def __init__(self, normalize: Normalize, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.normalize = normalize
        self.body = body
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation ``body(normalize(x))``.

        Args:
            x: ``(N, C, H, W)`` pixels.

        Returns:
            The features the head takes.

        Example:
            >>> net = Classifier(Normalize([0.5], [0.5]), nn.Flatten(), nn.Linear(4, 3))
            >>> net.features(torch.ones(1, 1, 2, 2)).tolist()
            [[1.0, 1.0, 1.0, 1.0]]
        """
        out: torch.Tensor = self.body(self.normalize(x))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``head(body(normalize(x)))``.

        Args:
            x: ``(N, C, H, W)`` pixels.

        Returns:
            ``(N, K)`` logits.

        Example:
            >>> net = Classifier(Normalize([0.5], [0.5]), nn.Flatten(), nn.Linear(4, 3))
            >>> net.forward(torch.zeros(2, 1, 2, 2)).shape
            torch.Size([2, 3])
        """
        out: torch.Tensor = self.head(self.features(x))
        return out


def register_model(name: str) -> Callable[[F], F]:
    """Decorator: register a factory ``f(*, num_classes, in_channels, image_size, mean, std,
    **options) -> Classifier`` under ``name``.

    Args:
        name: the zoo name :func:`create_model` will accept.

    Returns:
        A decorator that registers the factory and returns it unchanged.

    Raises:
        ValueError: ``name`` is already registered (raised by the decorator).

    Example:
        >>> @register_model("demo_linear")
        ... def demo_linear(*, num_classes, in_channels, image_size, mean, std):
        ...     body = nn.Flatten()
        ...     head = nn.Linear(in_channels * image_size**2, num_classes)
        ...     return Classifier(Normalize(mean, std), body, head)
        >>> from boundary_unlearning.models import create_model
        >>> create_model("demo_linear", 3, 1, 2).head
        Linear(in_features=4, out_features=3, bias=True)
        >>> del _REGISTRY["demo_linear"]  # leave the zoo as it was
    """

    def wrap(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    """Registered model names.

    Returns:
        The zoo's names, sorted.

    Example:
        >>> list_models()
        ['allcnn', 'cnn', 'mlp', 'resnet18', 'resnet50']
    """
    return sorted(_REGISTRY)


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every layer's parameters drawn afresh (seeded) and trainable:
    the same architecture, untrained. Retrain, the bad teacher and the U-LiRA shadow models
    start from it.

    Args:
        model: gives the architecture; it is not modified.
        seed: seeds the new weights.

    Returns:
        The new model.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> fresh = reinitialize(model, 0)
        >>> fresh is model, torch.equal(fresh.weight, reinitialize(model, 0).weight)
        (False, True)
    """
    fresh = copy.deepcopy(model)
    with seeded(seed):
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    for p in fresh.parameters():
        p.requires_grad_(True)
    return fresh
