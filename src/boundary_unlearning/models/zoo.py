"""The zoo's architectures, each registered by name: ``mlp``, ``cnn``, ``allcnn`` (the
paper's CIFAR-10 model), ``resnet18`` (CIFAR variant) and ``resnet50`` (the paper's face
model). Every factory takes ``num_classes``, ``in_channels``, ``image_size``, ``mean`` and
``std`` (the normalisation inside the model) plus its own options.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import HyperparameterError, ModelError
from .base import Classifier, Normalize, register_model

__all__ = ["allcnn", "cnn", "mlp", "resnet18", "resnet50"]


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
    """Two hidden ReLU layers; the fastest model, for tests and tiny data.

    Args:
        num_classes: the number of outputs.
        in_channels: image channels.
        image_size: image height and width.
        mean: the per-channel mean of the input normalisation.
        std: its per-channel standard deviation.
        hidden: the width of both hidden layers.

    Returns:
        The :class:`Classifier`.

    Example:
        >>> import torch
        >>> net = mlp(num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.5])
        >>> net(torch.zeros(2, 1, 8, 8)).shape, net.head.in_features
        (torch.Size([2, 3]), 256)
    """
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
    """Two conv+BN+ReLU+pool blocks and a hidden linear layer: fast on CPU, any size >= 4.

    Args:
        num_classes: the number of outputs.
        in_channels: image channels.
        image_size: image height and width.
        mean: the per-channel mean of the input normalisation.
        std: its per-channel standard deviation.
        width: channels of the first block (the second has twice as many).

    Returns:
        The :class:`Classifier`.

    Raises:
        ModelError: images smaller than 4x4.

    Example:
        >>> import torch
        >>> net = cnn(num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.5])
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 3])
    """
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
    paper's 48/96 channels.

    Args:
        num_classes: the number of outputs.
        in_channels: image channels.
        image_size: image height and width.
        mean: the per-channel mean of the input normalisation.
        std: its per-channel standard deviation.
        width_factor: scales the 96/192 channels of the original All-CNN.

    Returns:
        The :class:`Classifier`.

    Raises:
        HyperparameterError: ``width_factor <= 0``.

    Example:
        >>> import torch
        >>> net = allcnn(num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.5])
        >>> net(torch.zeros(2, 1, 8, 8)).shape, net.head.in_features
        (torch.Size([2, 3]), 96)
    """
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
    """ResNet-18, CIFAR variant: 3x3 stride-1 stem and no max-pool.

    Args:
        num_classes: the number of outputs.
        in_channels: image channels.
        image_size: image height and width.
        mean: the per-channel mean of the input normalisation.
        std: its per-channel standard deviation.

    Returns:
        The :class:`Classifier`.

    Example:
        >>> import torch
        >>> with torch.device("meta"):  # the architecture only, no weights allocated
        ...     net = resnet18(num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.5])
        >>> net.head
        Linear(in_features=512, out_features=3, bias=True)
    """
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
    """torchvision's ResNet-50 (the paper's face-recognition model), randomly initialised.

    Args:
        num_classes: the number of outputs.
        in_channels: image channels.
        image_size: image height and width.
        mean: the per-channel mean of the input normalisation.
        std: its per-channel standard deviation.

    Returns:
        The :class:`Classifier`.

    Example:
        >>> import torch
        >>> with torch.device("meta"):  # the architecture only, no weights allocated
        ...     net = resnet50(num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.5])
        >>> net.head
        Linear(in_features=2048, out_features=3, bias=True)
    """
    from torchvision.models import resnet50 as tv_resnet50

    net = tv_resnet50(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    head = nn.Linear(net.fc.in_features, num_classes)
    net.fc = nn.Identity()
    return Classifier(Normalize(mean, std), net, head)
