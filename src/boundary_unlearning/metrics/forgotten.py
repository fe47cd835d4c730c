"""Evidence for every forgotten class on its own: this request's classes and those an
earlier request made the model forget (which must stay forgotten)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..data.split import UnlearningData, dataset_labels
from .accuracy import accuracy
from .estimate import Readout

__all__ = ["class_evidence", "class_holds"]

# A forgotten class holds while at most this share of its training samples is still
# predicted as the class: the defaults' forgetting target (ForgetRecipe.target_forget_acc),
# also the report's margin for "did not forget".
HOLD_MARGIN = 0.05


def _of_class(dataset: Dataset[Any] | None, cls: int) -> Dataset[Any] | None:
    if dataset is None:
        return None
    rows = torch.nonzero(dataset_labels(dataset) == cls).flatten().tolist()
    return Subset(dataset, rows)


def class_evidence(
    model: nn.Module, data: UnlearningData, *, readouts: Mapping[str, Readout] | None = None
) -> dict[str, dict[str, Any]]:
    """Per forgotten class (index as text): the share of its training samples (``forget``)
    and of its test samples (``test_forget``) the model still predicts as the class, and
    whether an earlier request forgot it (``earlier``).

    Args:
        model: the classifier.
        data: the split; ``forget_eval``/``test_forget`` give this request's classes,
            ``earlier``/``test_earlier`` the classes forgotten before.
        readouts: the model's pass over ``forget`` and ``test_forget``
            (:func:`~boundary_unlearning.metrics.estimate.read_sets`): this request's classes
            are read from those logits (the images that pass read, all or a sample) instead
            of another pass over the data.

    Returns:
        ``{"3": {"forget": 0.0, "test_forget": 0.01, "earlier": False}, ...}`` (``None`` for
        a class without samples in a set).

    Example:
        >>> from boundary_unlearning import class_split
        >>> from torch.utils.data import TensorDataset
        >>> x, y = torch.eye(4), torch.arange(4)
        >>> data = class_split(TensorDataset(x, y), TensorDataset(x, y), 1, forgotten=[2])
        >>> class_evidence(nn.Identity(), data)["2"]
        {'forget': 1.0, 'test_forget': 1.0, 'earlier': True}
    """
    out: dict[str, dict[str, Any]] = {}
    for cls in data.all_forgotten:
        earlier = cls not in data.forget_classes
        if readouts is not None and not earlier:
            read = {key: readouts[key] for key in ("forget", "test_forget")}
            out[str(cls)] = {key: _share(r, cls) for key, r in read.items()}
            out[str(cls)]["earlier"] = False
            continue
        train = data.earlier if earlier else data.forget_eval
        test = data.test_earlier if earlier else data.test_forget
        sets = {"forget": _of_class(train, cls), "test_forget": _of_class(test, cls)}
        out[str(cls)] = {
            key: accuracy(model, subset) if subset is not None else None
            for key, subset in sets.items()
        }
        out[str(cls)]["earlier"] = earlier
    return out


def _share(readout: Readout, cls: int) -> float | None:
    """The share of the read images of class ``cls`` predicted as ``cls`` (``None``: none)."""
    mine = readout.labels == cls
    if not bool(mine.any()):
        return None
    return float((readout.logits[mine].argmax(1) == cls).double().mean())


def class_holds(value: float | None, reference: float | None = None) -> bool | None:
    """Whether a forgotten class's D_f accuracy shows it still forgotten: at most
    :data:`HOLD_MARGIN` above the retrained model's (``reference``; 0 without one).

    Args:
        value: the class's D_f accuracy.
        reference: the retrained model's on the class, if known.

    Returns:
        ``True``/``False``, or ``None`` without a value.

    Example:
        >>> class_holds(0.02), class_holds(0.3), class_holds(0.08, 0.05), class_holds(None)
        (True, False, True, None)
    """
    if value is None:
        return None
    return value <= (reference or 0.0) + HOLD_MARGIN + 1e-12
