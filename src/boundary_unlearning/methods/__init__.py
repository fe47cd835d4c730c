"""Unlearning methods, one module each, registered by name.

``unlearn("boundary_shrink", model, data, eps=0.1)`` runs any of them; ``list_methods()``
names them. Every method returns a new model in eval mode and leaves its input untouched.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from ._registry import (
    MethodSpec,
    get_method,
    list_methods,
    register_method,
    unlearn,
    validate_hyperparameters,
)
from ._stats import ForgettingWarning, unlearning_stats

# Every module of this package registers its method on import: a new method is one module
# (plus its docs row), reachable through unlearn("name", ...) without editing this file.
for _module in _pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module.name}")

# The checked entries by name (flat keywords, validated, stats recorded), as the package has
# always offered them: boundary_shrink(model, data, eps=0.2, progress=True). Each method's
# module holds its function as declared (recipe=, options=).
amnesiac = get_method("amnesiac")
bad_teacher = get_method("bad_teacher")
boundary_expanding = get_method("boundary_expanding")
boundary_shrink = get_method("boundary_shrink")
expand_shrink = get_method("expand_shrink")
finetune = get_method("finetune")
fisher = get_method("fisher")
l1_sparse = get_method("l1_sparse")
neg_grad = get_method("neg_grad")
random_labels = get_method("random_labels")
retrain = get_method("retrain")
salun = get_method("salun")
scrub = get_method("scrub")
shrink_expand = get_method("shrink_expand")
ssd = get_method("ssd")
unsir = get_method("unsir")

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
