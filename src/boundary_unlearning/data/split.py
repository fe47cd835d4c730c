"""The class split every method works on: forget / retain, train / test."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ..errors import DataError

__all__ = ["UnlearningData", "balanced_subset", "class_split", "dataset_labels", "to_tensors"]


def to_tensors(dataset: Dataset[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(input, label)`` pairs of a map-style dataset as two tensors ``(x, y)``.

    ``TensorDataset`` and ``Subset`` of one are sliced without iterating.
    """
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[0], dataset.tensors[1]
        return x, y.long()
    if isinstance(dataset, Subset):
        x, y = to_tensors(dataset.dataset)
        idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return x[idx], y[idx]
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("the dataset is empty; pass a dataset with at least one sample")
    xs: list[torch.Tensor] = []
    ys: list[int] = []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(
                f"dataset item {i} is {type(item).__name__}, not an (image tensor, int label) pair"
            )
        xs.append(torch.as_tensor(item[0], dtype=torch.float32))
        ys.append(int(item[1]))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def dataset_labels(dataset: Dataset[Any]) -> torch.Tensor:
    """The integer labels of a dataset, cheaply where the dataset exposes them."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].long()
    if isinstance(dataset, Subset):
        idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return dataset_labels(dataset.dataset)[idx]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.long)
    return to_tensors(dataset)[1]


def balanced_subset(dataset: Dataset[Any], size: int, *, seed: int = 0) -> Dataset[Any]:
    """A seeded, class-balanced subset of ``size`` samples (each class gets ``size // K``,
    the first ``size % K`` classes one more; a class with fewer samples gives all it has).

    For a quick first try on a large data set (``bunlearn train --subset N``)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"subset {size!r} must be a whole number >= 1, e.g. --subset 6000")
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
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[index] for t in dataset.tensors))
    return Subset(dataset, index.tolist())


@dataclass(frozen=True)
class UnlearningData:
    """The four sets of the paper.

    ``forget`` (D_f) is what a method may use to unlearn; with ``forget_fraction < 1`` it is a
    seeded subset of ``forget_full`` (every training sample of the forgotten classes), on
    which forget accuracy is still reported. ``retain`` is D_r, ``test_forget`` D_tf,
    ``test_retain`` D_tr.
    """

    forget: Dataset[Any]
    retain: Dataset[Any]
    test_forget: Dataset[Any]
    test_retain: Dataset[Any]
    forget_classes: tuple[int, ...]
    num_classes: int
    forget_full: Dataset[Any] | None = None

    @property
    def forget_eval(self) -> Dataset[Any]:
        """The set forget accuracy is reported on (the whole class)."""
        return self.forget_full if self.forget_full is not None else self.forget

    def sizes(self) -> dict[str, int]:
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
    forget_fraction: float = 1.0,
    seed: int = 0,
    *,
    num_classes: int | None = None,
) -> UnlearningData:
    """Split ``train``/``test`` into the paper's D_f, D_r, D_tf and D_tr.

    Accepts any map-style dataset of ``(tensor, int)`` pairs. ``forget_fraction`` keeps a
    seeded subset of the forget classes' training samples for unlearning.
    """
    classes: Sequence[int] = (
        [forget_classes] if isinstance(forget_classes, int) else list(forget_classes)
    )
    if not classes:
        raise DataError("no forget class given; pass at least one --forget-class")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise DataError(f"seed={seed!r} must be a whole number in 0 .. 2**63-1")
    if (
        isinstance(forget_fraction, bool)
        or not isinstance(forget_fraction, (int, float))
        or not 0.0 < forget_fraction <= 1.0
    ):
        raise DataError(
            f"forget fraction {forget_fraction} is outside (0, 1]; pass e.g. 0.1 for 10%"
        )
    train_y = dataset_labels(train)
    test_y = dataset_labels(test)
    if num_classes is None:
        num_classes = int(max(int(train_y.max()), int(test_y.max()) if len(test_y) else 0)) + 1
    for cls in classes:
        if not isinstance(cls, int) or isinstance(cls, bool) or not 0 <= cls < num_classes:
            raise DataError(
                f"forget class {cls!r} is outside the dataset's classes 0..{num_classes - 1}; "
                f"pick one of 0..{num_classes - 1}"
            )
    unique = tuple(sorted(set(classes)))
    if len(unique) >= num_classes:
        raise DataError(
            f"all {num_classes} classes would be forgotten; keep at least one class to retain"
        )
    cls_t = torch.tensor(unique, dtype=torch.long)
    forget_mask = torch.isin(train_y, cls_t)
    forget_idx = torch.nonzero(forget_mask).flatten()
    retain_idx = torch.nonzero(~forget_mask).flatten()
    if len(forget_idx) == 0:
        raise DataError(
            f"the training set has no sample of class(es) {list(unique)}; pick a class present "
            "in the data"
        )
    full = _subset(train, forget_idx)
    chosen = forget_idx
    if forget_fraction < 1.0:
        n = int(forget_fraction * len(forget_idx) + 0.5)
        if n == 0:
            raise DataError(
                f"forget fraction {forget_fraction} selects no sample of the "
                f"{len(forget_idx)} forget samples; use at least {1 / len(forget_idx):.4g}"
            )
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(forget_idx), generator=gen)[:n].sort().values
        chosen = forget_idx[pick]
    test_forget_mask = torch.isin(test_y, cls_t)
    return UnlearningData(
        forget=_subset(train, chosen),
        retain=_subset(train, retain_idx),
        test_forget=_subset(test, torch.nonzero(test_forget_mask).flatten()),
        test_retain=_subset(test, torch.nonzero(~test_forget_mask).flatten()),
        forget_classes=unique,
        num_classes=num_classes,
        forget_full=full if forget_fraction < 1.0 else None,
    )
