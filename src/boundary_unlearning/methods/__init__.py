"""Unlearning methods, one module each, registered by name.

``unlearn("boundary_shrink", model, data, eps=0.1)`` runs any of them; ``list_methods()``
names them. Every method returns a new model in eval mode and leaves its input untouched.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from ._registry import (
    ForgettingWarning,
    MethodSpec,
    get_method,
    list_methods,
    register_method,
    unlearn,
    unlearning_stats,
    validate_hyperparameters,
)
from .amnesiac import amnesiac
from .bad_teacher import bad_teacher
from .boundary_expanding import boundary_expanding
from .boundary_shrink import boundary_shrink
from .combinations import expand_shrink, shrink_expand
from .finetune import finetune
from .fisher import fisher
from .l1_sparse import l1_sparse
from .neg_grad import neg_grad
from .random_labels import random_labels
from .retrain import retrain
from .salun import salun
from .scrub import scrub
from .ssd import ssd
from .unsir import unsir

# Every module of this package registers its method on import: a new method is one module
# (plus its docs row), reachable through unlearn("name", ...) without editing this file.
for _module in _pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ForgettingWarning",
    "MethodSpec",
    "amnesiac",
    "bad_teacher",
    "boundary_expanding",
    "boundary_shrink",
    "expand_shrink",
    "finetune",
    "fisher",
    "get_method",
    "l1_sparse",
    "list_methods",
    "neg_grad",
    "random_labels",
    "register_method",
    "retrain",
    "salun",
    "scrub",
    "shrink_expand",
    "ssd",
    "unlearn",
    "unlearning_stats",
    "unsir",
    "validate_hyperparameters",
]
