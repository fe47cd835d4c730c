"""Batched inference and accuracy on the paper's four sets."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._utils import eval_mode, model_device
from ..data.split import UnlearningData
from ..data.streaming import input_batches, iterate_batches
from ..distributed import all_reduce_sum, is_distributed, shard_range
from ..errors import DataError

__all__ = ["accuracy", "evaluate", "predict_logits"]


def predict_logits(
    model: nn.Module, inputs: torch.Tensor | Dataset[Any], *, batch_size: int | None = None
) -> torch.Tensor:
    """Logits of ``model`` on ``inputs`` in eval mode (mode restored), on the model's device.

    Args:
        model: the classifier.
        inputs: a tensor, or a dataset (read batch by batch; only the logits are kept).
        batch_size: defaults to 128 on CPU (larger batches fall out of cache and run slower
            per image) and 1024 on accelerators.

    Returns:
        ``(len(inputs), K)`` logits.

    Example:
        >>> predict_logits(nn.Linear(2, 3), torch.zeros(4, 2)).shape
        torch.Size([4, 3])
    """
    device = model_device(model)
    if batch_size is None:
        batch_size = 128 if device.type == "cpu" else 1024
    n = len(inputs)  # type: ignore[arg-type]
    logits = torch.zeros((0, 0), device=device)
    start = 0
    with eval_mode(model), torch.inference_mode():
        for x in input_batches(inputs, batch_size, device):
            out = model(x)
            if not len(logits):  # one buffer: no small result pinned between batches
                logits = out.new_empty((n, *out.shape[1:]))
            logits[start : start + len(out)] = out
            start += len(out)
    return logits


def accuracy(
    model: nn.Module, dataset: Dataset[Any], *, batch_size: int | None = None
) -> float | None:
    """Fraction of ``dataset`` that ``model`` classifies correctly (``None`` for an empty set,
    which has no accuracy).

    A dataset that is not tensor-backed is read batch by batch (see
    :mod:`boundary_unlearning.data.streaming`). Under torchrun each rank scores its share and
    the counts are summed (every rank must call it; all get the same value).

    Args:
        model: the classifier (run in eval mode; its mode is restored).
        dataset: a map-style dataset of ``(input, int label, ...)`` tuples.
        batch_size: defaults to 128 on CPU and 1024 on accelerators.

    Returns:
        The accuracy in [0, 1], or ``None`` for an empty dataset.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> accuracy(nn.Identity(), TensorDataset(torch.eye(2), torch.tensor([0, 0])))
        0.5
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        return None
    lo, hi = shard_range(n) if is_distributed() else (0, n)
    device = model_device(model)
    if batch_size is None:
        batch_size = 128 if device.type == "cpu" else 1024
    hits = torch.zeros((), dtype=torch.float32, device=device)  # one host sync, at the end
    with eval_mode(model), torch.inference_mode():
        for x, y, *_ in iterate_batches(
            dataset, batch_size, order=torch.arange(lo, hi), device=device
        ):
            hits += (model(x).argmax(1) == y).float().sum()
    if is_distributed():
        return float(all_reduce_sum(hits.cpu()) / n)
    return float(hits / n)


def evaluate(
    model: nn.Module,
    data: UnlearningData,
    *,
    batch_size: int | None = None,
    normalization: object = None,
) -> dict[str, float | None]:
    """Accuracy on D_r, D_f (the whole forgotten class), D_tr and D_tf (higher on retain sets
    is better; on forget sets the retrained model's value, about 0, is the target).

    Args:
        model: the classifier, fed the split's data as they are.
        data: the split (:func:`~boundary_unlearning.class_split`); sets that are not
            tensor-backed are read batch by batch.
        batch_size: inference batch (default: 128 on CPU, 1024 on accelerators).
        normalization: not taken here: accuracy needs none, and the one place that says how
            the data are normalised is the split; passing it raises :class:`DataError`
            saying so.

    Returns:
        ``{"retain", "forget", "test_retain", "test_forget"}`` accuracies in [0, 1]
        (``None`` for an empty set).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from boundary_unlearning import class_split
        >>> x, y = torch.eye(4), torch.arange(4)
        >>> data = class_split(TensorDataset(x, y), TensorDataset(x, y), 1)
        >>> evaluate(nn.Identity(), data)["forget"]
        1.0
    """
    if normalization is not None:
        raise DataError(
            "normalization belongs to the data, not to evaluate: pass class_split(train, "
            "test, classes, normalization=(mean, std)); every method reads it from there"
        )
    return {
        "retain": accuracy(model, data.retain, batch_size=batch_size),
        "forget": accuracy(model, data.forget_eval, batch_size=batch_size),
        "test_retain": accuracy(model, data.test_retain, batch_size=batch_size),
        "test_forget": accuracy(model, data.test_forget, batch_size=batch_size),
    }
