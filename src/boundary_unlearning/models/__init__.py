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

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from .._utils import seeded
from ..errors import HyperparameterError, ModelError, did_you_mean, unknown_name
from . import zoo as zoo  # registers the zoo's architectures
from .base import _REGISTRY, Classifier, Normalize, list_models, register_model, reinitialize
from .user import create_user_model, import_model_function, is_user_model

__all__ = [
    "Classifier",
    "Normalize",
    "create_model",
    "import_model_function",
    "is_user_model",
    "list_models",
    "register_model",
    "reinitialize",
]


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
        return create_user_model(name, num_classes, seed=seed, **options)
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
