"""The class split every method works on: forget / retain, train / test."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ..checks import AtLeastOne, Seed, UnitFraction, check_setting
from ..errors import DataError
from .normalization import Normalization, NormalizationLike, check_normalization, implied_pixels
from .pixels import decode_inputs, is_bytes, tensor_dataset

__all__ = [
    "UnlearningData",
    "balanced_subset",
    "class_split",
    "dataset_labels",
    "read_item",
    "to_tensors",
]

# How far outside [0, 1] the pixels implied by the data may reach before they are called a
# mismatch (rounded mean/std in a transform shift them a little).
_PIXEL_SLACK = 0.05
# Items read from a dataset that is not held in memory, to check its range.
_RANGE_SAMPLE = 16


def to_tensors(dataset: Dataset[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(input, label)`` pairs of a map-style dataset as two tensors ``(x, y)``.

    ``TensorDataset`` and ``Subset`` of one are sliced without iterating; pixel bytes are
    decoded (:func:`~boundary_unlearning.data.pixels.decode_inputs`), so this is a float copy
    of them: to read a large set, iterate over its batches instead.

    Args:
        dataset: a map-style dataset of ``(input, int label)`` pairs.

    Returns:
        ``(x, y)``: the stacked inputs (float32 for pixel bytes) and the labels as a
        ``long`` tensor.

    Raises:
        DataError: the dataset is empty, or an item is not an ``(input, label)`` pair.

    Example:
        >>> from torch.utils.data import Subset, TensorDataset
        >>> ds = TensorDataset(torch.arange(6.0).view(3, 2), torch.tensor([0, 1, 2]))
        >>> x, y = to_tensors(Subset(ds, [2, 0]))
        >>> x.tolist(), y.tolist()
        ([[4.0, 5.0], [0.0, 1.0]], [2, 0])
    """
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[0], dataset.tensors[1]
        return decode_inputs(x), y.long()
    if isinstance(dataset, Subset):
        base, idx = dataset.dataset, torch.as_tensor(list(dataset.indices), dtype=torch.long)
        if isinstance(base, TensorDataset):  # the rows first: only they are decoded
            return decode_inputs(base.tensors[0][idx]), base.tensors[1][idx].long()
        x, y = to_tensors(base)
        return x[idx], y[idx]
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("the dataset is empty; pass a dataset with at least one sample")
    xs: list[torch.Tensor] = []
    ys: list[int] = []
    for i in range(n):
        x, label = read_item(dataset, i)
        xs.append(x)
        ys.append(label)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def read_item(dataset: Dataset[Any], index: int) -> tuple[torch.Tensor, int]:
    """Item ``index`` of ``dataset`` as ``(float32 input, int label)`` (pixel bytes
    decoded to [0, 1]).

    Raises:
        DataError: the item is not an ``(input, label)`` pair.

    Example:
        >>> read_item([(0, 3)], 0)
        (tensor(0.), 3)
        >>> read_item([(torch.tensor([255], dtype=torch.uint8), 1)], 0)
        (tensor([1.]), 1)
    """
    item = dataset[index]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(
            f"dataset item {index} is {type(item).__name__}, not an (image tensor, int label) pair"
        )
    x = torch.as_tensor(item[0])
    return decode_inputs(x) if is_bytes(x) else x.to(torch.float32), int(item[1])


def dataset_labels(dataset: Dataset[Any]) -> torch.Tensor:
    """The integer labels of a dataset, cheaply where the dataset exposes them.

    ``TensorDataset``, ``Subset`` and datasets with a ``targets`` or ``labels`` attribute
    (torchvision's, ``ImageFolder``) are read without loading an input; any other dataset is
    read item by item.

    Args:
        dataset: a map-style dataset of ``(input, int label)`` pairs.

    Returns:
        The labels as a 1-D ``long`` tensor, in dataset order.

    Raises:
        DataError: an item is not an ``(input, label)`` pair.

    Example:
        >>> from torch.utils.data import Subset, TensorDataset
        >>> ds = TensorDataset(torch.zeros(3, 2), torch.tensor([2, 0, 1]))
        >>> dataset_labels(Subset(ds, [0, 2])).tolist()
        [2, 1]
    """
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].long()
    if isinstance(dataset, Subset):
        idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return dataset_labels(dataset.dataset)[idx]
    for attribute in ("targets", "labels"):
        targets = getattr(dataset, attribute, None)
        if targets is not None and len(targets) == len(dataset):  # type: ignore[arg-type]
            return torch.as_tensor(targets, dtype=torch.long)
    labels = []  # no label attribute: read the items, keeping only their labels
    for i in range(len(dataset)):  # type: ignore[arg-type]
        labels.append(read_item(dataset, i)[1])
    return torch.tensor(labels, dtype=torch.long)


def balanced_subset(dataset: Dataset[Any], size: AtLeastOne, *, seed: Seed = 0) -> Dataset[Any]:
    """A seeded, class-balanced subset of ``size`` samples (each class gets ``size // K``,
    the first ``size % K`` classes one more; a class with fewer samples gives all it has).

    For a quick first try on a large data set (``bunlearn train --subset N``).

    Args:
        dataset: a map-style dataset of ``(input, int label)`` pairs.
        size: how many samples to keep; ``size >= len(dataset)`` returns ``dataset`` itself.
        seed: seeds which samples of each class are kept.

    Returns:
        A ``TensorDataset`` for a ``TensorDataset`` input, else a ``Subset``, in the
        original order.

    Raises:
        HyperparameterError: ``size`` is not a whole number >= 1.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.zeros(12, 1), torch.arange(12) % 3)
        >>> small = balanced_subset(ds, 5)
        >>> len(small), small.tensors[1].bincount().tolist()
        (5, [2, 2, 1])
    """
    size = check_setting("subset", size, AtLeastOne)
    labels = dataset_labels(dataset)
    if size >= len(labels):
        return dataset
    classes = torch.unique(labels).tolist()
    gen = torch.Generator().manual_seed(seed)
    share, extra = divmod(size, len(classes))
    picked = []
    for rank, cls in enumerate(classes):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        picked.append(members[: share + (1 if rank < extra else 0)])
    index = torch.cat(picked).sort().values
    return _subset(dataset, index)


def _subset(dataset: Dataset[Any], index: torch.Tensor) -> Dataset[Any]:
    if isinstance(dataset, TensorDataset):  # a copy of the rows, as stored (bytes stay bytes)
        return tensor_dataset(*(t[index] for t in dataset.tensors))
    return Subset(dataset, index.tolist())


@dataclass(frozen=True)
class UnlearningData:
    """The four sets of the paper.

    ``forget`` (D_f) is what a method may use to unlearn; with ``forget_fraction < 1`` it is a
    seeded subset of ``forget_full`` (every training sample of the forgotten classes), on
    which forget accuracy is still reported. ``retain`` is D_r, ``test_forget`` D_tf,
    ``test_retain`` D_tr. The datasets yield exactly what the model consumes;
    ``normalization`` (``None``: pixels in [0, 1]) says how that maps to pixels, for the
    methods that work in pixel space (Boundary Shrink's neighbour search). Classes the model
    was made to forget by earlier requests (``forgotten_before``) are in no retained set:
    see :attr:`all_forgotten`.

    Build one with :func:`class_split`.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.rand(8, 1, 2, 2), torch.arange(8) % 2)
        >>> data = class_split(ds, ds, 1, forget_fraction=0.5)
        >>> data.forget_classes, len(data.forget), len(data.forget_eval)
        ((1,), 2, 4)
    """

    forget: Dataset[Any]
    retain: Dataset[Any]
    test_forget: Dataset[Any]
    test_retain: Dataset[Any]
    forget_classes: tuple[int, ...]
    num_classes: int
    forget_full: Dataset[Any] | None = None
    normalization: Normalization | None = None
    forgotten_before: tuple[int, ...] = ()
    earlier: Dataset[Any] | None = None
    test_earlier: Dataset[Any] | None = None

    @property
    def all_forgotten(self) -> tuple[int, ...]:
        """Every class the model must not know: this request's and those forgotten before
        (``forgotten_before``, whose training and test samples ``earlier`` and
        ``test_earlier`` hold for evidence only; no method trains on them).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> ds = TensorDataset(torch.rand(6, 1), torch.tensor([0, 1, 2, 0, 1, 2]))
            >>> data = class_split(ds, ds, 2, forgotten=[0])
            >>> data.all_forgotten, len(data.retain), len(data.earlier)
            ((0, 2), 2, 2)
        """
        return tuple(sorted({*self.forget_classes, *self.forgotten_before}))

    @property
    def forget_eval(self) -> Dataset[Any]:
        """The set forget accuracy is reported on (the whole class).

        Returns:
            ``forget_full`` when a fraction of the class was kept, else ``forget``.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> ds = TensorDataset(torch.rand(4, 1), torch.tensor([0, 1, 0, 1]))
            >>> data = class_split(ds, ds, 0)
            >>> data.forget_eval is data.forget
            True
        """
        return self.forget_full if self.forget_full is not None else self.forget

    def sizes(self) -> dict[str, int]:
        """The number of samples in each set.

        Returns:
            ``{"forget", "forget_full", "retain", "test_forget", "test_retain"}`` -> length
            (``forget_full`` is the set forget accuracy is reported on).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> ds = TensorDataset(torch.rand(6, 1), torch.tensor([0, 1, 2, 0, 1, 2]))
            >>> class_split(ds, ds, 2).sizes()
            {'forget': 2, 'forget_full': 2, 'retain': 4, 'test_forget': 2, 'test_retain': 4}
        """
        return {
            "forget": len(self.forget),  # type: ignore[arg-type]
            "forget_full": len(self.forget_eval),  # type: ignore[arg-type]
            "retain": len(self.retain),  # type: ignore[arg-type]
            "test_forget": len(self.test_forget),  # type: ignore[arg-type]
            "test_retain": len(self.test_retain),  # type: ignore[arg-type]
        }


def class_split(
    train: Dataset[Any],
    test: Dataset[Any],
    forget_classes: int | Iterable[int],
    forget_fraction: UnitFraction = 1.0,
    seed: Seed = 0,
    *,
    num_classes: int | None = None,
    normalization: NormalizationLike | None = None,
    forgotten: Iterable[int] = (),
) -> UnlearningData:
    """Split ``train``/``test`` into the paper's D_f, D_r, D_tf and D_tr.

    Accepts any map-style dataset of ``(tensor, int)`` pairs. Labels are read from a
    ``targets`` or ``labels`` attribute when the dataset has one (``ImageFolder`` and the
    torchvision data sets do), so no image is loaded to split; the four sets are
    ``Subset``s of the inputs (``TensorDataset``s when the input is one).

    The one normalisation rule: the datasets yield exactly what the model consumes, and
    ``normalization=(mean, std)`` says how that maps to pixels in [0, 1] (``pixels = x * std
    + mean``, per channel; ``None``: the data are pixels). Every method reads it from here.
    A mismatch the data show (implied pixels far outside [0, 1], or data already in [0, 1]
    declared normalised) raises :class:`DataError`.

    Args:
        train: the training set the model was trained on.
        test: the test set.
        forget_classes: the class (or classes) to forget.
        forget_fraction: keep a seeded subset of this share of the forget classes' training
            samples for unlearning (forget accuracy is still reported on all of them).
        seed: seeds that subset.
        num_classes: the model's number of classes (default: the largest label + 1).
        normalization: ``(mean, std)`` of the normalisation the data already carry, as
            numbers or per-channel sequences (those of the ``transforms.Normalize`` the
            dataset applies).
        forgotten: classes an earlier request already made the model forget: they join
            no retained set (D_r, D_tr) and are kept apart for evidence (``earlier``,
            ``test_earlier``); a class also in ``forget_classes`` counts as this request's.

    Returns:
        The :class:`UnlearningData`.

    Raises:
        DataError: a bad class or normalisation, or an empty forget set.
        HyperparameterError: a fraction or seed out of its declared range.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> x, y = torch.rand(20, 1, 4, 4), torch.arange(20) % 4
        >>> data = class_split(TensorDataset(x, y), TensorDataset(x, y), 2)
        >>> data.sizes()["forget"], data.num_classes, data.normalization
        (5, 4, None)
        >>> normed = TensorDataset((x - 0.5) / 0.25, y)
        >>> class_split(normed, normed, 2, normalization=(0.5, 0.25)).normalization
        ((0.5,), (0.25,))
    """
    norm = check_normalization(normalization)
    classes: Sequence[int] = (
        [forget_classes] if isinstance(forget_classes, int) else list(forget_classes)
    )
    if not classes:
        raise DataError("no forget class given; pass at least one --forget-class")
    seed = check_setting("seed", seed, Seed)
    forget_fraction = check_setting("forget_fraction", forget_fraction, UnitFraction)
    train_y = dataset_labels(train)
    test_y = dataset_labels(test)
    if num_classes is None:
        num_classes = int(max(int(train_y.max()), int(test_y.max()) if len(test_y) else 0)) + 1
    before = tuple(c for c in _checked_classes(list(forgotten), num_classes, every=True)
                   if c not in classes)  # fmt: skip
    unique = _checked_classes(classes, num_classes, also=before)
    cls_t = torch.tensor(unique, dtype=torch.long)
    before_t = torch.tensor(before, dtype=torch.long)
    forget_mask = torch.isin(train_y, cls_t)
    forget_idx = torch.nonzero(forget_mask).flatten()
    if len(forget_idx) == 0:
        raise DataError(
            f"the training set has no sample of class(es) {list(unique)}; pick a class present "
            "in the data"
        )
    chosen = _fraction_of(forget_idx, forget_fraction, seed)
    test_forget_mask = torch.isin(test_y, cls_t)
    earlier, test_earlier = torch.isin(train_y, before_t), torch.isin(test_y, before_t)
    return UnlearningData(
        forget=_subset(train, chosen),
        retain=_subset(train, torch.nonzero(~(forget_mask | earlier)).flatten()),
        test_forget=_subset(test, torch.nonzero(test_forget_mask).flatten()),
        test_retain=_subset(test, torch.nonzero(~(test_forget_mask | test_earlier)).flatten()),
        forget_classes=unique,
        num_classes=num_classes,
        forget_full=_subset(train, forget_idx) if forget_fraction < 1.0 else None,
        normalization=_checked_against(train, norm),
        forgotten_before=before,
        earlier=_subset(train, torch.nonzero(earlier).flatten()) if before else None,
        test_earlier=_subset(test, torch.nonzero(test_earlier).flatten()) if before else None,
    )


def _checked_classes(
    classes: Sequence[int], num_classes: int, *, also: Sequence[int] = (), every: bool = False
) -> tuple[int, ...]:
    """The classes, sorted and unique, after checking each is a class of the data and (unless
    ``every``, which checks the classes alone) that with ``also`` (the classes forgotten
    before) at least one class is retained."""
    for cls in classes:
        if not isinstance(cls, int) or isinstance(cls, bool) or not 0 <= cls < num_classes:
            raise DataError(
                f"forget class {cls!r} is outside the dataset's classes 0..{num_classes - 1}; "
                f"pick one of 0..{num_classes - 1}"
            )
    unique = tuple(sorted(set(classes)))
    if not every and len(set(unique) | set(also)) >= num_classes:
        earlier = f" ({len(also)} of them forgotten before)" if also else ""
        raise DataError(
            f"all {num_classes} classes would be forgotten{earlier}; keep at least one class "
            "to retain"
        )
    return unique


def _fraction_of(forget_idx: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A seeded ``fraction`` of the forget rows (all of them for 1), in order."""
    if fraction >= 1.0:
        return forget_idx
    n = int(fraction * len(forget_idx) + 0.5)
    if n == 0:
        raise DataError(
            f"forget fraction {fraction} selects no sample of the {len(forget_idx)} forget "
            f"samples; use at least {1 / len(forget_idx):.4g}"
        )
    gen = torch.Generator().manual_seed(seed)
    return forget_idx[torch.randperm(len(forget_idx), generator=gen)[:n].sort().values]


def _range_sample(dataset: Dataset[Any]) -> torch.Tensor:
    """The inputs the range check looks at: all of a tensor-backed set (for pixel bytes, the
    decoded per-position minimum and maximum over the set: the same extremes, no float
    copy), else a few items spread over the set (loading them one by one)."""
    base: Any = dataset
    while isinstance(base, Subset):
        base = base.dataset
    if isinstance(base, TensorDataset):
        x = base.tensors[0]
        if is_bytes(x) and len(x):
            return decode_inputs(torch.stack([x.amin(0), x.amax(0)]))
        return x
    n = len(dataset)  # type: ignore[arg-type]
    picks = sorted({(i * n) // _RANGE_SAMPLE for i in range(min(n, _RANGE_SAMPLE))})
    return torch.stack([read_item(dataset, i)[0] for i in picks])


def _checked_against(dataset: Dataset[Any], norm: Normalization | None) -> Normalization | None:
    """``norm``, after checking that the data's range agrees with it."""
    x = _range_sample(dataset)
    if not x.is_floating_point() or x.numel() == 0:
        return norm
    pixels = implied_pixels(x.float(), norm)
    low, high = float(pixels.min()), float(pixels.max())
    raw_low, raw_high = float(x.min()), float(x.max())
    if norm is None and (low < -_PIXEL_SLACK or high > 1 + _PIXEL_SLACK):
        raise DataError(
            f"the inputs range over [{low:.3g}, {high:.3g}], not pixels in [0, 1]; if the "
            "dataset yields normalised tensors, pass class_split(..., normalization=(mean, "
            "std)) with the values of its Normalize transform"
        )
    if norm is None:
        return norm
    if low < -_PIXEL_SLACK or high > 1 + _PIXEL_SLACK:
        raise DataError(
            f"normalization={norm} maps the inputs to pixels in [{low:.3g}, {high:.3g}], "
            "outside [0, 1]; pass the mean and std the dataset's Normalize transform uses"
        )
    if raw_low >= 0.0 and raw_high <= 1.0 and high - low < 0.5:
        raise DataError(
            f"the inputs already lie in [{raw_low:.3g}, {raw_high:.3g}] (pixels) but "
            f"normalization={norm} says they are normalised; drop normalization, or normalise "
            "the data (e.g. transforms.Normalize(mean, std))"
        )
    return norm
