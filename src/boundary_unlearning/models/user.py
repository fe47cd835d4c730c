"""A user's own architecture, named ``"MODULE:FUNCTION"`` (``"mynets:small_cnn"``,
``"torchvision.models:resnet18"``): MODULE is imported (the current directory first) and
``FUNCTION(num_classes=K)`` must return the ``nn.Module``.

Such a name is only ever taken from the user (a command line, a config, an API call), never
from a checkpoint's metadata: a checkpoint is untrusted and must not choose code to import.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from .._utils import seeded
from ..errors import ModelError, did_you_mean

__all__ = ["create_user_model", "import_model_function", "is_user_model"]

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


def create_user_model(spec: str, num_classes: int, *, seed: int, **options: Any) -> nn.Module:
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
