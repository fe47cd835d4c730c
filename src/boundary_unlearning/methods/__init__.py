"""Unlearning methods, one module each, registered by name.

``unlearn("boundary_shrink", model, data, eps=0.1)`` runs any of them; ``list_methods()``
names them. Every method returns a new model in eval mode and leaves its input untouched.
"""

from . import boundary_expanding as _be  # noqa: F401  (registers the method)
from . import boundary_shrink as _bs  # noqa: F401
from . import retrain as _rt  # noqa: F401
from ._registry import (
    MethodSpec,
    get_method,
    list_methods,
    register_method,
    unlearn,
    unlearning_stats,
    validate_hyperparameters,
)
from .boundary_expanding import boundary_expanding
from .boundary_shrink import boundary_shrink
from .retrain import retrain

__all__ = [
    "MethodSpec",
    "boundary_expanding",
    "boundary_shrink",
    "get_method",
    "list_methods",
    "register_method",
    "retrain",
    "unlearn",
    "unlearning_stats",
    "validate_hyperparameters",
]
