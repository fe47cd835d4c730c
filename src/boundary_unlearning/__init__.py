"""boundary-unlearning: make a trained image classifier forget a whole class, and show it did.

Implements Boundary Shrink and Boundary Expanding (Chen et al., "Boundary Unlearning",
CVPR 2023) with the baselines they are compared against and the paper's evaluation.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .data import (
    DatasetInfo,
    UnlearningData,
    class_split,
    list_datasets,
    load_dataset,
    toy_problem,
)
from .errors import UnlearningError
from .history import read_history, verify_history
from .methods import (
    ForgettingWarning,
    boundary_expanding,
    boundary_shrink,
    get_method,
    list_methods,
    retrain,
    unlearn,
    unlearning_stats,
)
from .metrics import evaluate
from .models import create_model, list_models
from .recipe import Recipe, RunOptions
from .training import train

__version__ = "0.1.0"

__all__ = [
    "DatasetInfo",
    "ForgettingWarning",
    "Recipe",
    "RunOptions",
    "UnlearningData",
    "UnlearningError",
    "__version__",
    "boundary_expanding",
    "boundary_shrink",
    "class_split",
    "create_model",
    "evaluate",
    "get_method",
    "list_datasets",
    "list_methods",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "read_history",
    "retrain",
    "save_checkpoint",
    "toy_problem",
    "train",
    "unlearn",
    "unlearning_stats",
    "verify_history",
]
