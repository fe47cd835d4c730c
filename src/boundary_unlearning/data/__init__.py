"""Datasets and the forget/retain split."""

from .datasets import DatasetInfo, list_datasets, load_dataset
from .split import (
    Normalization,
    UnlearningData,
    check_normalization,
    class_split,
    dataset_labels,
    implied_pixels,
    to_tensors,
)
from .toy import toy_problem

__all__ = [
    "DatasetInfo",
    "Normalization",
    "UnlearningData",
    "check_normalization",
    "class_split",
    "dataset_labels",
    "implied_pixels",
    "list_datasets",
    "load_dataset",
    "to_tensors",
    "toy_problem",
]
