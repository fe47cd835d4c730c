"""Image classifiers by name: ``create_model("cnn", num_classes=10, ...)``.

Every model is a :class:`Classifier`: ``normalize`` (pixel [0,1] -> standardised input),
``body`` (penultimate features) and ``head`` (the final ``nn.Linear``). Keeping the
normalisation inside the model lets the neighbour search step in pixel space.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from .._utils import seeded
from ..errors import HyperparameterError, ModelError, did_you_mean, unknown_name

__all__ = ["Classifier", "Normalize", "create_model", "list_models", "register_model"]

ModelFactory = Callable[..., "Classifier"]
F = TypeVar("F", bound=ModelFactory)
_REGISTRY: dict[str, ModelFactory] = {}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first layer of every model here."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            # broadcasting would otherwise let a 3-channel model take grayscale images
            raise RuntimeError(
                f"expected images of shape (N, {self.mean.shape[1]}, H, W), got {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``head(body(normalize(x)))``; ``features(x)`` gives the penultimate representation."""

    def __init__(self, normalize: Normalize, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.normalize = normalize
        self.body = body
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(self.normalize(x))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


def register_model(name: str) -> Callable[[F], F]:
    """Decorator: register a factory ``f(*, num_classes, in_channels, image_size, mean, std,
    **options) -> Classifier`` under ``name``."""

    def wrap(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    """Registered model names."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    seed: int = 0,
    **options: Any,
) -> Classifier:
    """Build model ``name`` with seeded initial weights (the caller's RNG is untouched)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise unknown_name("model", str(name), _REGISTRY)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(
            f"num_classes={num_classes!r}; a classifier needs a whole number >= 2 of classes"
        )
    for key, value in (("in_channels", in_channels), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"{key}={value!r} must be a whole number >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise HyperparameterError(f"seed={seed!r} must be a whole number in 0 .. 2**63-1")
    factory = _REGISTRY[name]
    allowed = [
        p
        for p in inspect.signature(factory).parameters
        if p not in {"num_classes", "in_channels", "image_size", "mean", "std"}
    ]
    for key in options:
        if key not in allowed:
            raise HyperparameterError(
                f"model '{name}' has no option '{key}'{did_you_mean(key, allowed)}; "
                f"its options are: {', '.join(allowed) or 'none'}"
            )
    mean = tuple(mean) if mean is not None else (0.5,) * in_channels
    std = tuple(std) if std is not None else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ModelError(
            f"mean/std have {len(mean)}/{len(std)} entries but the images have {in_channels} "
            "channels; give one value per channel"
        )
    with seeded(seed):
        model = factory(
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            mean=mean,
            std=std,
            **options,
        )
    return model


def _conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


@register_model("mlp")
def mlp(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    hidden: int = 256,
) -> Classifier:
    """Two hidden ReLU layers; the fastest model, for tests and tiny data."""
    body = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
    )
    return Classifier(Normalize(mean, std), body, nn.Linear(hidden, num_classes))


@register_model("cnn")
def cnn(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: int = 32,
) -> Classifier:
    """Two conv+BN+ReLU+pool blocks and a hidden linear layer: fast on CPU, any size >= 4."""
    if image_size < 4:
        raise ModelError(f"cnn needs images of at least 4x4 pixels, got {image_size}")
    body = nn.Sequential(
        _conv_bn(in_channels, width),
        nn.MaxPool2d(2),
        _conv_bn(width, 2 * width),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(4 if image_size >= 16 else 2),
        nn.Flatten(),
        nn.Linear(2 * width * (16 if image_size >= 16 else 4), 128),
        nn.ReLU(inplace=True),
    )
    return Classifier(Normalize(mean, std), body, nn.Linear(128, num_classes))


@register_model("allcnn")
def allcnn(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    width_factor: float = 0.5,
) -> Classifier:
    """All-CNN as in the paper: 8 conv+BN+ReLU blocks (stride 2 at blocks 3 and 6), a final
    1x1 conv, global average pooling and a linear head. ``width_factor=0.5`` gives the
    paper's 48/96 channels."""
    if width_factor <= 0:
        raise HyperparameterError(f"width_factor={width_factor}; it must be positive, e.g. 0.5")
    c1, c2 = max(1, int(96 * width_factor)), max(1, int(192 * width_factor))
    body = nn.Sequential(
        _conv_bn(in_channels, c1),
        _conv_bn(c1, c1),
        _conv_bn(c1, c1, stride=2),
        _conv_bn(c1, c2),
        _conv_bn(c2, c2),
        _conv_bn(c2, c2, stride=2),
        _conv_bn(c2, c2),
        _conv_bn(c2, c2, kernel=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Classifier(Normalize(mean, std), body, nn.Linear(c2, num_classes))


@register_model("resnet18")
def resnet18(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Classifier:
    """ResNet-18, CIFAR variant: 3x3 stride-1 stem and no max-pool."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    head = nn.Linear(net.fc.in_features, num_classes)
    net.fc = nn.Identity()
    return Classifier(Normalize(mean, std), net, head)


@register_model("resnet50")
def resnet50(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Classifier:
    """torchvision's ResNet-50 (the paper's face-recognition model), randomly initialised."""
    from torchvision.models import resnet50 as tv_resnet50

    net = tv_resnet50(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    head = nn.Linear(net.fc.in_features, num_classes)
    net.fc = nn.Identity()
    return Classifier(Normalize(mean, std), net, head)
