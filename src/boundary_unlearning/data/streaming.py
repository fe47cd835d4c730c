"""Data that need not fit in memory: which datasets are held as tensors, batches from the
rest through a ``DataLoader``, and a normalising view of a dataset.

The rule every consumer follows (``fit``, the neighbour search, ``evaluate``, the metrics):
a dataset backed by tensors (a ``TensorDataset`` or a ``Subset`` of one) within
:data:`MEMORY_BUDGET` bytes is sliced as tensors, the fast path; anything else (an
``ImageFolder``, a torchvision data set with its transforms, a lazy dataset of any size) is
read in batches by a ``DataLoader`` and never held whole.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from ..errors import DataError
from .normalization import Normalization, channel_view
from .pixels import decode_inputs, decoded_nbytes, is_bytes, tensor_dataset
from .split import dataset_labels, to_tensors

__all__ = [
    "DECODE_BUDGET",
    "MEMORY_BUDGET",
    "Columns",
    "NormalizedDataset",
    "concat",
    "input_batches",
    "inputs_and_labels",
    "iterate_batches",
    "loader_workers",
    "normalized",
    "release_free_memory",
    "stored_tensors",
    "take_rows",
    "tensor_backed",
    "with_columns",
]

# Bytes of inputs a tensor-backed dataset may have and still be sliced as tensors (and
# moved to the model's device whole); larger ones are batched like any other dataset.
MEMORY_BUDGET = int(os.environ.get("BUNLEARN_MEMORY_BUDGET", str(2 * 1024**3)))
# Bytes a tensor-backed set held as pixel bytes may take once decoded to float32 and still be
# handed to a consumer whole (inputs_and_labels); a larger one is handed over as the dataset
# and decoded batch by batch (Fashion-MNIST's D_r: 169 MB decoded, 42 MB as bytes).
DECODE_BUDGET = int(os.environ.get("BUNLEARN_DECODE_BUDGET", str(64 * 1024**2)))


def _base(dataset: Dataset[Any]) -> tuple[Dataset[Any], int]:
    """The dataset under any ``Subset`` wrappers, and how many samples ``dataset`` has."""
    n = len(dataset)  # type: ignore[arg-type]
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    return base, n


def tensor_backed(dataset: Dataset[Any], budget: int | None = None) -> bool:
    """Whether ``dataset`` is held as tensors (a ``TensorDataset`` or ``Subset`` of one)
    whose inputs take at most ``budget`` bytes (default :data:`MEMORY_BUDGET`).

    Args:
        dataset: any map-style dataset.
        budget: the most bytes of inputs that count as held in memory.

    Returns:
        ``True`` when consumers may slice ``dataset`` as tensors.

    Example:
        >>> tensor_backed(TensorDataset(torch.zeros(4, 2), torch.zeros(4)))
        True
        >>> tensor_backed(TensorDataset(torch.zeros(4, 2), torch.zeros(4)), budget=16)
        False
    """
    base, n = _base(dataset)
    if not isinstance(base, TensorDataset):
        return False
    x = base.tensors[0]
    per_sample = x[0].numel() * x.element_size() if len(x) else 0
    return n * per_sample <= (MEMORY_BUDGET if budget is None else budget)


def take_rows(
    inputs: torch.Tensor | Dataset[Any], rows: torch.Tensor
) -> torch.Tensor | Dataset[Any]:
    """``rows`` of inputs as :func:`inputs_and_labels` hands them over: the tensor's rows, or
    a ``Subset`` of the dataset (read later, batch by batch).

    Example:
        >>> take_rows(torch.tensor([[1], [2], [3]]), torch.tensor([2, 0])).tolist()
        [[3], [1]]
        >>> take_rows(TensorDataset(torch.arange(3)), torch.tensor([2]))[0]
        (tensor(2),)
    """
    if isinstance(inputs, torch.Tensor):
        return inputs[rows]
    return Subset(inputs, rows.tolist())


def inputs_and_labels(
    dataset: Dataset[Any],
) -> tuple[torch.Tensor | Dataset[Any], torch.Tensor]:
    """A dataset's inputs and labels: the inputs as a tensor when it is tensor-backed within
    the budget (and, held as pixel bytes, within :data:`DECODE_BUDGET` once decoded), else
    the dataset itself (to be read batch by batch); the labels always as a tensor, read
    without loading an input where the dataset allows.

    Example:
        >>> x, y = inputs_and_labels(TensorDataset(torch.zeros(2, 3), torch.tensor([1, 0])))
        >>> type(x).__name__, y.tolist()
        ('Tensor', [1, 0])
    """
    if tensor_backed(dataset) and _decoded_within_budget(dataset):
        return to_tensors(dataset)
    return dataset, dataset_labels(dataset)


def _decoded_within_budget(dataset: Dataset[Any]) -> bool:
    base, n = _base(dataset)
    x = base.tensors[0]  # type: ignore[attr-defined]
    return not is_bytes(x) or not len(x) or n * decoded_nbytes(x[0]) <= DECODE_BUDGET


def stored_tensors(dataset: Dataset[Any]) -> tuple[torch.Tensor, ...]:
    """The tensors of a tensor-backed dataset's rows as stored (pixel bytes stay bytes: a
    quarter of the float copy :func:`~boundary_unlearning.data.split.to_tensors` makes).

    Example:
        >>> base = TensorDataset(torch.tensor([[7], [8], [9]], dtype=torch.uint8), torch.arange(3))
        >>> [t.tolist() for t in stored_tensors(Subset(base, [2, 0]))]
        [[[9], [7]], [2, 0]]
    """
    base, rows = _tensor_rows(dataset)
    if isinstance(dataset, TensorDataset):
        return tuple(base.tensors)
    return tuple(t[rows] for t in base.tensors)


def concat(*datasets: Dataset[Any]) -> Dataset[Any]:
    """The datasets one after the other, kept on the tensor path where they allow it: a
    ``Subset`` of the one ``TensorDataset`` they all index, or one ``TensorDataset`` of
    their tensors when each is tensor-backed; else a ``ConcatDataset``, read lazily.

    Args:
        *datasets: map-style datasets of ``(input, label)`` tuples.

    Returns:
        A dataset of all their items, in order.

    Example:
        >>> base = TensorDataset(torch.arange(6.0)[:, None], torch.arange(6))
        >>> both = concat(Subset(base, [4, 5]), Subset(base, [0]))
        >>> type(both).__name__, to_tensors(both)[1].tolist()
        ('Subset', [4, 5, 0])
    """
    bases = [_base(d)[0] for d in datasets]
    if all(isinstance(b, TensorDataset) for b in bases):
        if all(b is bases[0] for b in bases):
            rows = torch.cat([_tensor_rows(d)[1] for d in datasets])
            return Subset(bases[0], rows.tolist())
        if all(tensor_backed(d) for d in datasets):
            stored = [stored_tensors(d) for d in datasets]
            same = len({part[0].dtype for part in stored}) == 1  # bytes stay bytes
            parts = stored if same else [to_tensors(d) for d in datasets]
            return tensor_dataset(*(torch.cat(column) for column in zip(*parts, strict=True)))
    return ConcatDataset(datasets)


def loader_workers() -> int:
    """``DataLoader`` worker processes: up to 4, one core left to the main process
    (``BUNLEARN_WORKERS`` overrides).

    Returns:
        The number of workers, >= 0.

    Example:
        >>> import os
        >>> os.environ["BUNLEARN_WORKERS"] = "2"
        >>> loader_workers()
        2
        >>> del os.environ["BUNLEARN_WORKERS"]
        >>> 0 <= loader_workers() <= 4
        True
    """
    given = os.environ.get("BUNLEARN_WORKERS")
    if given is not None:
        return max(0, int(given))
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# Batches between two calls of release_free_memory while streaming (in the main process and
# in each loader worker).
_TRIM_EVERY = 8
_COLLATED = [0]


def _collate(items: Sequence[Any]) -> tuple[torch.Tensor, ...]:
    """Stack each position of the items: inputs as float32 (pixel bytes decoded), labels and
    extras as given
    (in a loader worker: hand its free heap pages back every few batches, see
    :func:`release_free_memory`)."""
    _COLLATED[0] += 1
    if _COLLATED[0] % _TRIM_EVERY == 0:
        release_free_memory()
    first = items[0] if items else None
    if not isinstance(first, (tuple, list)) or len(first) < 2:
        raise DataError(
            f"a dataset item is {type(first).__name__}, not an (image tensor, int label) pair"
        )
    columns = list(zip(*items, strict=True))
    inputs = [torch.as_tensor(v) for v in columns[0]]
    x = torch.stack([decode_inputs(v) if is_bytes(v) else v.to(torch.float32) for v in inputs])
    rest = [
        torch.stack([torch.as_tensor(v) for v in col]) if isinstance(col[0], torch.Tensor)
        else torch.as_tensor(col)
        for col in columns[1:]
    ]  # fmt: skip
    if rest[0].dtype != torch.long and not rest[0].is_floating_point():
        rest[0] = rest[0].long()
    return (x, *rest)


def iterate_batches(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    order: Sequence[int] | torch.Tensor | None = None,
    device: torch.device | None = None,
    workers: int | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """``(x, y, ...)`` batches of ``dataset`` in ``order`` (default: as stored), on
    ``device``.

    Tensor-backed data are sliced (pixel bytes decoded batch by batch, on ``device``);
    anything else goes through a ``DataLoader`` with
    ``workers`` processes (default :func:`loader_workers`) and ``pin_memory`` on CUDA, so at
    most a few batches are in memory at a time.

    Args:
        dataset: a map-style dataset of ``(input, label, ...)`` tuples.
        batch_size: samples per batch.
        order: the sample indices to visit, in order.
        device: where the batches go (default: the CPU).
        workers: loader processes for a dataset that is not tensor-backed.

    Returns:
        An iterator of tuples of tensors, one per position of the items.

    Raises:
        DataError: an item of a streamed dataset is not an ``(input, label, ...)`` tuple.

    Example:
        >>> ds = TensorDataset(torch.arange(5.0)[:, None], torch.arange(5))
        >>> [y.tolist() for _, y in iterate_batches(ds, 2, order=[4, 0, 2])]
        [[4, 0], [2]]
    """
    n = len(dataset)  # type: ignore[arg-type]
    index = torch.arange(n) if order is None else torch.as_tensor(order, dtype=torch.long)
    target = device if device is not None else torch.device("cpu")
    if tensor_backed(dataset):
        base, rows = _tensor_rows(dataset)
        for start in range(0, len(index), batch_size):
            idx = rows[index[start : start + batch_size]]
            x, *rest = (t[idx].to(target) for t in base.tensors)
            yield (decode_inputs(x), *rest)
        return
    chunks = [index[s : s + batch_size].tolist() for s in range(0, len(index), batch_size)]
    workers = loader_workers() if workers is None else workers
    loader = DataLoader(
        dataset,
        batch_sampler=chunks,
        num_workers=workers if len(chunks) > 1 else 0,
        pin_memory=target.type == "cuda",
        collate_fn=_collate,
    )
    for number, batch in enumerate(loader):
        yield tuple(t.to(target, non_blocking=True) for t in batch)
        if number % _TRIM_EVERY == _TRIM_EVERY - 1:
            release_free_memory()


@functools.cache
def _malloc_trim() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim``; a no-op
    elsewhere). Streaming allocates and frees a batch-sized buffer many times; freed blocks
    pinned between small live ones are otherwise kept, and the resident set grows with the
    number of batches instead of staying flat.

    Returns:
        ``None``.

    Example:
        >>> release_free_memory()
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _tensor_rows(dataset: Dataset[Any]) -> tuple[TensorDataset, torch.Tensor]:
    """The ``TensorDataset`` under ``Subset`` wrappers and the rows of it ``dataset`` is."""
    if isinstance(dataset, Subset):
        base, rows = _tensor_rows(dataset.dataset)
        return base, rows[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    assert isinstance(dataset, TensorDataset)
    return dataset, torch.arange(len(dataset))


def input_batches(
    inputs: torch.Tensor | Dataset[Any], batch_size: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """The inputs of a tensor or a dataset, in order, ``batch_size`` at a time, on
    ``device``.

    Args:
        inputs: a tensor of inputs, or a dataset of ``(input, label, ...)`` tuples.
        batch_size: inputs per batch.
        device: where the batches go.

    Returns:
        An iterator of input tensors (the labels are dropped).

    Example:
        >>> x = torch.arange(5.0)[:, None]
        >>> [b.flatten().tolist() for b in input_batches(x, 2, torch.device("cpu"))]
        [[0.0, 1.0], [2.0, 3.0], [4.0]]
        >>> ds = TensorDataset(x, torch.arange(5))
        >>> [len(b) for b in input_batches(ds, 3, torch.device("cpu"))]
        [3, 2]
    """
    if isinstance(inputs, torch.Tensor):
        for start in range(0, len(inputs), batch_size):
            yield decode_inputs(inputs[start : start + batch_size].to(device))
        return
    for batch in iterate_batches(inputs, batch_size, device=device):
        yield batch[0]


class Columns(Dataset[tuple[Any, ...]]):
    """The inputs of ``dataset`` with other per-sample columns: item ``i`` is
    ``(dataset[i][0], columns[0][i], columns[1][i], ...)`` (e.g. new labels).

    Args:
        dataset: a map-style dataset of ``(input, ...)`` tuples.
        *columns: tensors with one entry per sample of ``dataset``.

    Raises:
        DataError: a column's length differs from the dataset's.

    Example:
        >>> ds = Columns(TensorDataset(torch.zeros(3, 2), torch.zeros(3)), torch.tensor([7, 8, 9]))
        >>> ds[1][1].item(), len(ds)
        (8, 3)
    """

    def __init__(self, dataset: Dataset[Any], *columns: torch.Tensor) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        if any(len(c) != n for c in columns):
            raise DataError("the columns differ in length from the dataset")
        self.dataset, self.columns = dataset, tuple(c.cpu() for c in columns)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (self.dataset[index][0], *(c[index] for c in self.columns))


def with_columns(
    inputs: torch.Tensor | Dataset[Any], *columns: torch.Tensor
) -> tuple[torch.Tensor, ...] | Dataset[Any]:
    """Training data for ``fit``: ``(inputs, *columns)`` as tensors when ``inputs`` is a
    tensor, a tensor dataset of the stored inputs and the columns when ``inputs`` is a
    tensor-backed dataset (pixel bytes stay bytes until a batch is read), else a
    :class:`Columns` dataset that loads the inputs batch by batch.

    Args:
        inputs: a tensor of inputs, or a dataset whose items start with the input.
        *columns: per-sample tensors to pair with the inputs (e.g. new labels).

    Returns:
        ``(inputs, *columns)`` for a tensor, else a :class:`Columns` dataset.

    Raises:
        DataError: a column's length differs from the dataset's.

    Example:
        >>> x, y = torch.zeros(3, 2), torch.tensor([2, 0, 1])
        >>> [tuple(t.shape) for t in with_columns(x, y)]
        [(3, 2), (3,)]
        >>> with_columns(TensorDataset(x, torch.zeros(3)), y)[0][1].item()
        2
    """
    if isinstance(inputs, torch.Tensor):
        return (inputs, *columns)
    if tensor_backed(inputs):
        if any(len(c) != len(inputs) for c in columns):  # type: ignore[arg-type]
            raise DataError("the columns differ in length from the dataset")
        return tensor_dataset(stored_tensors(inputs)[0], *(c.cpu() for c in columns))
    return Columns(inputs, *columns)


class NormalizedDataset(Dataset[tuple[torch.Tensor, int]]):
    """``dataset`` with each input mapped to ``(x - mean) / std`` (per channel); labels and
    the ``targets`` attribute pass through, so splitting loads no image.

    Args:
        dataset: a map-style dataset of ``(image, int label)`` pairs, pixels in [0, 1].
        normalization: ``(mean, std)``, one value or one per channel.

    Example:
        >>> ds = NormalizedDataset(
        ...     TensorDataset(torch.ones(2, 1, 2, 2), torch.tensor([0, 1])), ((0.5,), (0.25,))
        ... )
        >>> ds[1][0].flatten().tolist(), ds[1][1], ds.targets.tolist()
        ([2.0, 2.0, 2.0, 2.0], 1, [0, 1])
    """

    def __init__(self, dataset: Dataset[Any], normalization: Normalization) -> None:
        self.dataset = dataset
        mean, std = normalization
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.targets = dataset_labels(dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.dataset[index][:2]
        x = torch.as_tensor(x)
        x = decode_inputs(x) if is_bytes(x) else x.to(torch.float32)
        mean, std = (
            (self.mean, self.std) if x.dim() == 3 else (self.mean.flatten(), self.std.flatten())
        )
        return (x - mean) / std, int(y)


def normalized(dataset: Dataset[Any], normalization: Normalization) -> Dataset[Any]:
    """``dataset`` as a model that eats normalised inputs consumes it: a new
    ``TensorDataset`` for tensor-backed data, else a :class:`NormalizedDataset` view.

    Args:
        dataset: a map-style dataset of ``(image, int label)`` pairs, pixels in [0, 1].
        normalization: ``(mean, std)``, one value or one per channel.

    Returns:
        The normalised dataset (``dataset`` itself is left unchanged).

    Example:
        >>> ones = TensorDataset(torch.ones(2, 1, 2, 2), torch.zeros(2))
        >>> normalized(ones, ((0.5,), (0.25,)))[0][0].flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
    """
    if tensor_backed(dataset):
        x, y = to_tensors(dataset)
        mean, std = normalization
        return TensorDataset((x - channel_view(mean, x)) / channel_view(std, x), y)
    return NormalizedDataset(dataset, normalization)
