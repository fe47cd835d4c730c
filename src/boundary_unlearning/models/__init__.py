"""Image classifiers by name: ``create_model("cnn", num_classes=10, ...)``.

Every zoo model is a :class:`Classifier`: ``normalize`` (pixel [0,1] -> standardised input),
``body`` (penultimate features) and ``head`` (the final ``nn.Linear``). Keeping the
normalisation inside the model lets the neighbour search step in pixel space.

A user's own architecture is named ``"MODULE:FUNCTION"`` (``"mynets:small_cnn"``,
``"torchvision.models:resnet18"``): MODULE is imported (the current directory first) and
``FUNCTION(num_classes=K)`` must return the ``nn.Module``. Such a name is only ever taken
from the user (a command line, a config, an API call), never from a checkpoint's metadata:
a checkpoint is untrusted and must not choose code to import.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from .._utils import seeded
from ..errors import HyperparameterError, ModelError, did_you_mean, unknown_name

__all__ = [
    "Classifier",
    "Normalize",
    "create_model",
    "import_model_function",
    "is_user_model",
    "list_models",
    "register_model",
]

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
) -> nn.Module:
    """Build model ``name`` with seeded initial weights (the caller's RNG is untouched).

    Args:
        name: a zoo name (see :func:`list_models`) or ``"MODULE:FUNCTION"`` (a user's
            architecture, built as ``FUNCTION(num_classes=num_classes, **options)``; the
            image shape and ``mean``/``std`` are not passed to it).
        num_classes: the number of outputs.
        in_channels: image channels (zoo models).
        image_size: image height and width (zoo models).
        mean: the per-channel mean of the normalisation inside a zoo model.
        std: its standard deviation.
        seed: seeds the initial weights.
        **options: the architecture's own options (e.g. ``width`` of ``cnn``).

    Returns:
        The model (a :class:`Classifier` for zoo names).

    Raises:
        UnknownNameError: an unknown zoo name.
        ModelError: bad sizes, or a user function that cannot be imported or called.

    Example:
        >>> create_model("mlp", 3, 1, 4).head.out_features
        3
        >>> create_model("torch.nn:Identity", 3)
        Identity()
    """
    if is_user_model(name):
        return _create_user_model(name, num_classes, seed=seed, **options)
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


_USER_MODEL = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_user_model(name: object) -> bool:
    """Whether ``name`` names a user's architecture (``"MODULE:FUNCTION"``).

    Args:
        name: a model name (any object).

    Returns:
        ``True`` for a string containing ``:``.

    Example:
        >>> is_user_model("torchvision.models:resnet18"), is_user_model("cnn")
        (True, False)
    """
    return isinstance(name, str) and ":" in name


def import_model_function(spec: str) -> Callable[..., Any]:
    """Import ``FUNCTION`` from ``MODULE`` for ``spec = "MODULE:FUNCTION"``, looking in the
    current directory first.

    Args:
        spec: e.g. ``"mynets:small_cnn"`` for ``small_cnn`` in ``./mynets.py``.

    Returns:
        The function.

    Raises:
        ModelError: a malformed spec, a module that cannot be imported (or fails while
            importing), a missing or non-callable name.

    Example:
        >>> import_model_function("torchvision.models:resnet18").__name__
        'resnet18'
    """
    if not _USER_MODEL.fullmatch(spec):
        raise ModelError(
            f"--model {spec!r} is not MODULE:FUNCTION (e.g. mynets:small_cnn for small_cnn in "
            "./mynets.py, or torchvision.models:resnet18)"
        )
    module_name, _, function_name = spec.partition(":")
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ModelError(
                f"cannot import {module_name!r} for --model {spec}: no {module_name}.py in "
                f"{here} or on the Python path; run from the folder that holds it or install it"
            ) from None
        raise ModelError(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # the user's module raised while importing
        raise ModelError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    function = getattr(module, function_name, None)
    if function is None or not callable(function):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ModelError(
            f"module {module_name!r} has no function {function_name!r}"
            f"{did_you_mean(function_name, public)}; --model takes MODULE:FUNCTION"
        )
    return function  # type: ignore[no-any-return]


def _create_user_model(spec: str, num_classes: int, *, seed: int, **options: Any) -> nn.Module:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(
            f"num_classes={num_classes!r}; a classifier needs a whole number >= 2 of classes"
        )
    function = import_model_function(spec)
    try:
        with seeded(seed):
            model = function(num_classes=num_classes, **options)
    except TypeError as exc:
        raise ModelError(
            f"{spec}(num_classes={num_classes}) failed ({exc}); the function must take "
            "num_classes and return the nn.Module"
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"{spec}(num_classes={num_classes}) returned {type(model).__name__}, not an nn.Module"
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
