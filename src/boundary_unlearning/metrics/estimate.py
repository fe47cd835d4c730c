"""Accuracy estimated on a seeded sample sized for a stated precision.

Evaluating every image of every set costs more than the forgetting itself on a large data set
(Fashion-MNIST: 108,000 of 140,000 evaluated images are the retained training set, twice).
:func:`estimate_accuracy` reads a seeded sample instead, as large as an interval of
±``margin`` at the stated confidence needs, and says so: the estimate carries its interval
and how many images it read.
A small set is read whole (its interval is then the value itself).

A report prints several such intervals at once (``unlearn``: four sets for the original and
four for the unlearned model). Each at 95% would leave one of eight outside about one
request in three, so :class:`EvidenceSettings` reads each at ``1 - (1 - confidence) /
family`` (Bonferroni): all ``family`` intervals of a report hold together with at least
``confidence``, and the samples are sized for ``margin`` at that level.

How large: a pilot of ``pilot`` seeded images gives a first accuracy; the sample size is the
one a Wilson interval with the finite-population correction needs at the value in the pilot's
own interval closest to 50% (the widest case it allows), so a pilot that happened to look too
good does not shrink the sample. The interval reported is computed on the whole sample read
(letting the pilot choose the size this way keeps the coverage: 0.50-0.70% misses at 99.375%
in 6,000 simulated reads of each of four accuracies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._utils import eval_mode, inference_view, model_device
from ..data.split import UnlearningData
from ..data.streaming import iterate_batches
from ..errors import ModelError
from ..heads import find_head

__all__ = [
    "Estimate",
    "EvidenceSettings",
    "Readout",
    "estimate_accuracy",
    "inference_batch_size",
    "read_set",
    "read_sets",
    "sample_size",
    "wilson",
]


@dataclass(frozen=True, kw_only=True)
class EvidenceSettings:
    """How a report's accuracies are read (``bunlearn unlearn``, ``run`` and ``reproduce``).

    Attributes:
        full: read every image of every set (``--full-eval``).
        margin: the half-width wanted of each sampled accuracy's interval (0.015 = ±1.5
            points: on Fashion-MNIST's D_r at 90% accuracy 3,347 and 3,372 images read for
            eight simultaneous 95% intervals, about what a single ±1 point interval read).
        confidence: the coverage of all ``family`` intervals together.
        family: how many intervals ``confidence`` covers at once (8: four sets, the original
            and the unlearned model, as ``unlearn`` reports them); each is read at
            :attr:`each`.
        whole_up_to: D_f and D_tf (which decide the verdict) are read whole up to this many
            images; larger ones are sampled like D_r and D_tr (a forgotten class is read
            near 0% accuracy, where a sample's interval is far narrower than the margin).
        seed: seeds the samples (the same images for the original and the unlearned model).

    Example:
        >>> EvidenceSettings().margin, EvidenceSettings(full=True).full
        (0.015, True)
        >>> EvidenceSettings().each  # 1 - 0.05 / 8
        0.99375
    """

    full: bool = False
    margin: float = 0.015
    confidence: float = 0.95
    family: int = 8
    whole_up_to: int = 2_000
    seed: int = 0

    @property
    def each(self) -> float:
        """Each interval's own coverage, ``1 - (1 - confidence) / family``, so that all
        ``family`` of them hold together with at least ``confidence`` (Bonferroni).

        Example:
            >>> EvidenceSettings(family=1).each
            0.95
        """
        return 1.0 - (1.0 - self.confidence) / max(1, self.family)


SETS = ("retain", "forget", "test_retain", "test_forget")
_DECIDING = {"forget", "test_forget"}  # decide the verdict: read whole when not too large


@dataclass(frozen=True)
class Estimate:
    """An accuracy, its interval and how many images it was read from.

    Attributes:
        value: the accuracy on the images read (``None`` for an empty set).
        low: lower end of the interval (``value`` itself when the whole set was read).
        high: upper end of the interval.
        n: images read.
        total: images in the set.
        confidence: the interval's coverage.

    Example:
        >>> Estimate(0.9, 0.89, 0.91, 5000, 54000, 0.95).whole
        False
    """

    value: float | None
    low: float | None
    high: float | None
    n: int
    total: int
    confidence: float = 0.95

    @property
    def whole(self) -> bool:
        """Whether every image of the set was read (the value is exact).

        Example:
            >>> Estimate(1.0, 1.0, 1.0, 10, 10).whole
            True
        """
        return self.n == self.total

    def as_dict(self) -> dict[str, Any]:
        """The JSON form a report holds.

        Example:
            >>> Estimate(0.5, 0.4, 0.6, 100, 1000).as_dict()
            {'value': 0.5, 'interval': [0.4, 0.6], 'n': 100, 'total': 1000}
        """
        interval = None if self.low is None or self.high is None else [self.low, self.high]
        return {"value": self.value, "interval": interval, "n": self.n, "total": self.total}


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(
    hits: float, n: int, *, total: int | None = None, confidence: float = 0.95
) -> tuple[float, float]:
    """The Wilson score interval of ``hits`` successes in ``n`` draws without replacement
    from ``total`` (finite-population correction; ``total=None``: an infinite population).

    Args:
        hits: correct predictions among the ``n`` read.
        n: images read (``> 0``).
        total: images in the set; ``n == total`` gives the value itself.
        confidence: the coverage, e.g. 0.95.

    Returns:
        ``(low, high)`` in [0, 1].

    Example:
        >>> [round(v, 4) for v in wilson(90, 100)]
        [0.8256, 0.9448]
        >>> wilson(90, 100, total=100)
        (0.9, 0.9)
    """
    p = hits / n
    fpc = 1.0 if total is None or total <= 1 else max(0.0, (total - n) / (total - 1))
    z2 = _z(confidence) ** 2 * fpc
    if z2 == 0.0:
        return p, p
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = math.sqrt(z2 * p * (1 - p) / n + z2 * z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def sample_size(total: int, p: float, *, margin: float, confidence: float = 0.95) -> int:
    """Images to read from a set of ``total`` for a normal interval of half-width ``margin``
    at accuracy ``p`` (with the finite-population correction).

    Args:
        total: images in the set.
        p: the accuracy to size for (0.5 is the widest case).
        margin: the interval's half-width, as a fraction (0.005 = ±0.5 points).
        confidence: the coverage.

    Returns:
        The sample size, at most ``total``.

    Example:
        >>> sample_size(54000, 0.5, margin=0.005), sample_size(54000, 0.9, margin=0.005)
        (22447, 11010)
        >>> sample_size(500, 0.5, margin=0.005)
        494
    """
    n0 = _z(confidence) ** 2 * p * (1 - p) / margin**2
    n = n0 / (1 + (n0 - 1) / total) if total > 1 else n0
    return min(total, max(1, math.ceil(n)))


def inference_batch_size(device: torch.device) -> int:
    """The batch that runs inference fastest per image: 128 on CPU (larger batches fall out
    of cache: 512 ran the Fashion-MNIST cnn 1.8x slower per image), 1024 on accelerators.

    Example:
        >>> inference_batch_size(torch.device("cpu"))
        128
    """
    return 128 if device.type == "cpu" else 1024


@dataclass(frozen=True)
class Readout:
    """One pass of a model over (a seeded sample of) one set: everything a report computes
    from it (accuracy, membership attacks, distances, per-class rows, the feature probe)
    reads these logits and features.

    Attributes:
        logits: ``(n, K)`` float64 logits of the rows read, on the CPU.
        labels: their labels.
        rows: which rows of the set were read, in reading order.
        estimate: the accuracy with its interval.
        features: ``(n, d)`` float32 inputs of the head on those rows, on the CPU, when the
            pass was asked to keep them (else ``None``).
    """

    logits: torch.Tensor
    labels: torch.Tensor
    rows: torch.Tensor
    estimate: Estimate
    features: torch.Tensor | None = None


def _logits(
    model: nn.Module,
    dataset: Dataset[Any],
    rows: torch.Tensor,
    batch: int,
    head: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The logits, labels and (with ``head``) the head's inputs of ``rows``, written into one
    buffer each: a small result kept per batch would pin the batch's freed memory in the C
    heap, and the resident set would grow by about a batch's activations per batch (600 MB
    over Fashion-MNIST's D_r)."""
    device = model_device(model)
    labels = torch.empty(len(rows), dtype=torch.long)
    logits = torch.zeros((0, 0), dtype=torch.float64)
    kept: list[torch.Tensor] = []  # the head's input of the batch being read
    features = None
    if len(rows) == 0:
        return logits, labels, None if head is None else torch.zeros((0, 0))
    hook = None if head is None else head.register_forward_hook(
        lambda _m, i, _o: kept.append(i[0].detach().flatten(1))
    )  # fmt: skip
    start = filled = 0
    try:
        with eval_mode(model), torch.inference_mode():
            for x, y, *_ in iterate_batches(dataset, batch, order=rows, device=device):
                out = model(x)
                if not len(logits):
                    logits = torch.empty((len(rows), out.shape[1]), dtype=torch.float64)
                logits[start : start + len(out)] = out.double().cpu()
                labels[start : start + len(out)] = y.cpu()
                if kept:
                    if features is None:
                        features = torch.empty((len(rows), kept[-1].shape[1]))
                    features[start : start + len(out)] = kept[-1].float().cpu()
                    filled += len(out)
                    kept.clear()
                start += len(out)
    finally:
        if hook is not None:
            hook.remove()
    return logits, labels, features if filled == len(rows) else None


def _hits(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).sum(dtype=torch.float64)) if len(labels) else 0.0


def read_set(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    margin: float = 0.01,
    confidence: float = 0.95,
    pilot: int = 1000,
    seed: int = 0,
    full: bool = False,
    batch_size: int | None = None,
    head: nn.Module | None = None,
) -> Readout:
    """The logits of ``model`` on a seeded sample of ``dataset`` just large enough for a
    ``confidence`` interval of about ±``margin`` on its accuracy (the whole set, in order,
    when it is small, when that sample would be more than half of it, or when ``full``).

    A pilot of ``pilot`` seeded images gives a first accuracy; the sample is as large as a
    Wilson interval with the finite-population correction needs at the value in the pilot's
    interval closest to 50%. The same seed reads the same images in the same order: a
    shorter sample is a prefix of a longer one.

    Args:
        model: the classifier (run in eval mode; its mode is restored).
        dataset: a map-style dataset of ``(input, int label, ...)``.
        margin: the interval's wanted half-width (0.01 = ±1 point).
        confidence: the interval's coverage.
        pilot: images read first to size the sample (a set this small is read whole).
        seed: seeds the sample.
        full: read every image.
        batch_size: inference batch (default: :func:`inference_batch_size`).
        head: a layer of ``model`` (its head) whose inputs the readout keeps as
            ``features``.

    Returns:
        The :class:`Readout` (an empty set: no rows, estimate value ``None``).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.eye(2).repeat(3000, 1), torch.tensor([0, 0] * 3000))
        >>> out = read_set(nn.Identity(), ds, margin=0.02)
        >>> len(out.rows) == out.estimate.n < 6000, tuple(out.logits.shape[1:])
        (True, (2,))
    """
    total = len(dataset)  # type: ignore[arg-type]
    if head is None:
        model = inference_view(model)  # (a head belongs to the model it is given with)
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return Readout(torch.zeros((0, 0), dtype=torch.float64), empty, empty,
                       Estimate(None, None, None, 0, 0, confidence))  # fmt: skip
    batch = batch_size or inference_batch_size(model_device(model))
    if full or total <= pilot:
        rows = torch.arange(total)
        logits, labels, features = _logits(model, dataset, rows, batch, head)
        if features is not None and len(features) != total:
            features = None  # the head was not run on every batch
        value = _hits(logits, labels) / total
        return Readout(logits, labels, rows, Estimate(value, value, value, total, total,
                                                      confidence), features)  # fmt: skip
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    logits, labels, features = _logits(model, dataset, order[:pilot], batch, head)
    low, high = wilson(_hits(logits, labels), pilot, confidence=confidence)
    widest = min(max(0.5, low), high)  # the value in the pilot's interval closest to 0.5
    n = max(pilot, sample_size(total, widest, margin=margin, confidence=confidence))
    if 2 * n > total:  # most of the set: read it all, and the value is exact
        n = total
    more, more_labels, more_features = _logits(model, dataset, order[pilot:n], batch, head)
    if len(more):
        logits, labels = torch.cat([logits, more]), torch.cat([labels, more_labels])
        if features is not None and more_features is not None:
            features = torch.cat([features, more_features])
    hits = _hits(logits, labels)
    low, high = wilson(hits, n, total=total, confidence=confidence)
    rows = order[:n]
    if features is not None and len(features) != n:
        features = None  # the head was not run on every batch: no features rather than some
    estimate = Estimate(hits / n, low, high, n, total, confidence)
    return Readout(logits, labels, rows, estimate, features)


def estimate_accuracy(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    margin: float = 0.01,
    confidence: float = 0.95,
    pilot: int = 1000,
    seed: int = 0,
    full: bool = False,
    batch_size: int | None = None,
) -> Estimate:
    """The accuracy of ``model`` on ``dataset``, read on a seeded sample just large enough
    for a ``confidence`` interval of about ±``margin`` (the whole set when it is small, when
    that sample would be more than half of it, or when ``full``).

    Args:
        model: the classifier (run in eval mode; its mode is restored).
        dataset: a map-style dataset of ``(input, int label, ...)``.
        margin: the interval's wanted half-width (0.01 = ±1 point).
        confidence: the interval's coverage.
        pilot: images read first to size the sample (a set this small is read whole).
        seed: seeds the sample (the same seed reads the same images).
        full: read every image.
        batch_size: inference batch (default: :func:`inference_batch_size`).

    Returns:
        An :class:`Estimate` (value ``None`` for an empty set).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.eye(2).repeat(3000, 1), torch.tensor([0, 0] * 3000))
        >>> est = estimate_accuracy(nn.Identity(), ds, margin=0.02)
        >>> est.n < est.total, est.low <= 0.5 <= est.high
        (True, True)
        >>> estimate_accuracy(nn.Identity(), ds, full=True).value
        0.5
    """
    return read_set(
        model, dataset, margin=margin, confidence=confidence, pilot=pilot, seed=seed,
        full=full, batch_size=batch_size,
    ).estimate  # fmt: skip


def read_sets(
    model: nn.Module,
    data: UnlearningData,
    settings: EvidenceSettings | None = None,
    *,
    features: bool = False,
) -> dict[str, Readout]:
    """One pass of ``model`` over each of the four sets (``retain``, ``forget`` = the
    whole forgotten class, ``test_retain``, ``test_forget``), read as ``settings`` says:
    D_r and D_tr on seeded samples (each interval at ``settings.each``), D_f and D_tf whole
    up to ``settings.whole_up_to`` images (sampled above), every image with
    ``settings.full`` or without ``settings``.

    Args:
        model: the classifier (not modified).
        data: the class split.
        settings: how to read; ``None`` reads every image, in order.
        features: keep the head's inputs of every row read (``Readout.features``, for
            :func:`~boundary_unlearning.metrics.probe_forget_accuracy`); ``None`` there
            when the model has no head :func:`~boundary_unlearning.heads.find_head` finds.

    Returns:
        Set name -> :class:`Readout`.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem()
        >>> {k: r.estimate.n for k, r in read_sets(net, data).items()}
        {'retain': 30, 'forget': 10, 'test_retain': 30, 'test_forget': 10}
    """
    settings = settings if settings is not None else EvidenceSettings(full=True)
    model = inference_view(model)  # laid out once for the four sets
    head = None
    if features:
        try:
            head = find_head(model, data.num_classes)[1]
        except ModelError:
            head = None
    datasets: dict[str, Dataset[Any]] = {
        "retain": data.retain, "forget": data.forget_eval,
        "test_retain": data.test_retain, "test_forget": data.test_forget,
    }  # fmt: skip
    out = {}
    for key, dataset in datasets.items():
        whole = settings.full or (
            key in _DECIDING and len(dataset) <= settings.whole_up_to  # type: ignore[arg-type]
        )
        out[key] = read_set(
            model, dataset, margin=settings.margin, confidence=settings.each,
            seed=settings.seed, full=whole, head=head,
        )  # fmt: skip
    return out
