"""Datasets and the forget/retain split."""

from .datasets import DatasetInfo, list_datasets, load_dataset
from .split import UnlearningData, class_split, dataset_labels, to_tensors

__all__ = [
    "DatasetInfo",
    "UnlearningData",
    "class_split",
    "dataset_labels",
    "list_datasets",
    "load_dataset",
    "to_tensors",
]
