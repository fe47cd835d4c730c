"""Datasets and the forget/retain split."""

from .datasets import DatasetInfo, list_datasets, load_dataset
from .normalization import Normalization, check_normalization, implied_pixels
from .split import UnlearningData, class_split, dataset_labels, to_tensors
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
