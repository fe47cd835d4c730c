"""The training data of one run (:class:`TrainingBatches`): the batches
:func:`~boundary_unlearning.training.fit` steps through, whatever form the data came in."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .pixels import decode_inputs
from .streaming import iterate_batches, stored_tensors, tensor_backed

__all__ = ["Batch", "TrainingBatches"]

Batch = tuple[torch.Tensor, ...]


class TrainingBatches:
    """The training data of one run, in one place whatever form it came in: tensors
    indexed together (held on the model's device), a tensor-backed dataset within the memory
    budget (loaded as such tensors, as stored: pixel bytes are decoded batch by batch), or
    any other dataset (read batch by batch through a
    ``DataLoader``, in the same seeded order). Every epoch visits a permutation drawn from a
    ``torch.Generator`` seeded with ``seed``.

    Args:
        data: the tensors (e.g. ``(x, y)``) or a map-style dataset of ``(x, y, ...)`` tuples.
        device: where the batches go.
        batch_size: samples per batch.
        seed: seeds the permutations.
        channels_last: store 4-D inputs in channels-last memory format.
        desc: names the run in errors.

    Raises:
        DataError: empty or mismatched tensors.

    Example:
        >>> batches = TrainingBatches((torch.arange(5.0), torch.arange(5)), torch.device("cpu"),
        ...                           batch_size=2, seed=0)
        >>> batches.steps_per_epoch, [len(idx) for idx, _ in batches.epoch(limit=2)]
        (3, [2, 2])
    """

    def __init__(
        self,
        data: Sequence[torch.Tensor] | Dataset[Any],
        device: torch.device,
        *,
        batch_size: int,
        seed: int,
        channels_last: bool = False,
        desc: str = "training",
    ) -> None:
        self.stream: Dataset[Any] | None = None
        if isinstance(data, Dataset) and tensor_backed(data):
            data = stored_tensors(data)
        elif isinstance(data, Dataset):
            self.stream = data
        self.tensors: Batch = (
            () if self.stream is not None
            else tuple(_memory_format(t.to(device), channels_last) for t in data)  # type: ignore[union-attr]
        )  # fmt: skip
        self.n = len(self.stream) if self.stream is not None else len(self.tensors[0])  # type: ignore[arg-type]
        if any(len(t) != self.n for t in self.tensors):
            raise DataError("the tensors passed to fit() differ in length")
        if self.n == 0:
            raise DataError(f"{desc}: no training samples; the data set is empty")
        self.device, self.batch_size, self.channels_last = device, batch_size, channels_last
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.generator = torch.Generator().manual_seed(seed)

    def epoch(self, limit: int) -> Iterator[tuple[torch.Tensor, Batch]]:
        """One pass in a new seeded order, at most ``limit`` batches.

        Args:
            limit: the most batches to give.

        Returns:
            An iterator of ``(rows, batch)``: the batch's rows of the data and its tensors.
        """
        order = torch.randperm(self.n, generator=self.generator).to(self.device)
        size, stream = self.batch_size, self.stream
        loaded = (
            iterate_batches(stream, size, device=self.device, order=order.cpu()[: limit * size])
            if stream is not None else None
        )  # fmt: skip
        for start in range(0, self.n, size)[:limit]:
            idx = order[start : start + size]
            if loaded is None:
                x, *rest = (t[idx] for t in self.tensors)
                yield idx, (decode_inputs(x), *rest)
            else:  # the same rows, read from the dataset
                yield idx, tuple(_memory_format(t, self.channels_last) for t in next(loaded))


def _memory_format(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t
