"""Depth of forgetting: is the class gone from the features, or only from the head?

A model can stop predicting a class by changing its final layer alone (its logit, its bias):
the features below still single the class out, and a few labelled images bring it back. Two
measurements look below the head:

- :func:`relearn_steps` (in :mod:`.relearn`): how many SGD steps on a few forget images bring
  the class back;
- :func:`probe_forget_accuracy`: freeze the network, fit a *fresh* linear classifier on its
  features (the head's inputs) from many retained images and only a few images of the
  forgotten class, and see how much of the rest of that class it still recognises. The
  probe never reads the model's own head, so no logit or bias trick can lower it: only
  features count.

:func:`depth_shares` turns both into the share of the original-to-retrained gap a method
closed; ``depth`` is the smaller share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .._utils import inference_view
from ..data.split import UnlearningData, dataset_labels
from ..errors import ModelError
from ..heads import head_inputs
from ._logistic import LogisticProbe
from .estimate import Readout
from .relearn import relearn_steps

__all__ = [
    "MIN_GAP",
    "depth_evidence",
    "depth_shares",
    "probe_forget_accuracy",
    "probe_forget_draws",
    "standard_error",
]

# The smallest original-to-retrained gap a depth metric must show to count: below it the
# share a method closed is noise (a relearn count moves by a step or two between seeds; the
# probe's accuracy by a few points on a small test class).
MIN_GAP: dict[str, float] = {"relearn_steps": 3.0, "probe_forget_acc": 0.05}


def _pick(n: int, k: int, generator: torch.Generator) -> list[int]:
    return sorted(torch.randperm(n, generator=generator)[: min(k, n)].tolist())


def probe_forget_accuracy(
    model: nn.Module,
    data: UnlearningData,
    *,
    forget_samples: int = 8,
    retain_samples: int = 3000,
    draws: int = 5,
    max_eval: int = 2000,
    head: str | None = None,
    seed: int = 0,
    readouts: Mapping[str, Readout] | None = None,
) -> float | None:
    """Few-shot linear probe: the share of the forgotten class's test images that a fresh
    classifier on the model's features recognises after seeing only ``forget_samples`` of
    them.

    The network is frozen (eval mode); its features are the inputs of its final
    ``nn.Linear`` (:func:`~boundary_unlearning.heads.find_head`), standardised. A
    class-balanced, L2-regularised multinomial logistic regression (``C=1``: scikit-learn's
    objective and default tolerance, solved in torch by
    :class:`~boundary_unlearning.metrics._logistic.LogisticProbe`) is fitted on
    ``retain_samples`` seeded images of D_r (the first of the seeded order in which
    :func:`~boundary_unlearning.metrics.estimate.read_set` samples a set, so that a report's
    sample of D_r holds them) plus ``forget_samples`` images of each
    forgotten class drawn from D_tf, and scored on the rest of D_tf (at most ``max_eval``
    images); the result is the mean over ``draws`` draws of those few images,
    as one draw of eight images varies by several points.

    The few forget images come from the test set on purpose: a method could make the images
    it trained on (D_f) look like another class and leave the class itself recognisable; an
    auditor's question is whether *new* images of the class are still singled out, as an
    attacker holding a few fresh photos of a person would try. Features that still single the
    class out give a high score; those of a model that never learnt it (the retrained model)
    a lower one. Compare with the original's and the retrained model's (:func:`depth_shares`).

    Args:
        model: the model whose features are probed (not modified).
        data: the class split; D_r gives the probe's retained images, D_tf the forgotten
            class's few training images and its test.
        forget_samples: images of each forgotten class the probe is fitted on.
        retain_samples: retained images the probe is fitted on.
        draws: independent draws of the few forget images; the scores are averaged.
        max_eval: the most D_tf images used (drawn once, seeded).
        head: the head's dotted name, or ``None`` to search.
        seed: which images are drawn.
        readouts: the model's passes over ``retain`` and ``test_forget``
            (:func:`~boundary_unlearning.metrics.estimate.read_sets` with ``features=True``):
            the features of the images they read are taken from them instead of read again
            (with ``head=None`` only; the same features up to rounding: the batches differ).

    Returns:
        The mean accuracy in [0, 1], or ``None`` when D_r is empty or a forgotten class has
        no more than ``forget_samples`` test images.

    Raises:
        ModelError: no head is found.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem(n=120)
        >>> score = probe_forget_accuracy(net, data, retain_samples=90)
        >>> 0.0 <= score <= 1.0
        True
    """
    scores = probe_forget_draws(
        model, data, forget_samples=forget_samples, retain_samples=retain_samples, draws=draws,
        max_eval=max_eval, head=head, seed=seed, readouts=readouts,
    )  # fmt: skip
    return None if scores is None else sum(scores) / len(scores)


def probe_forget_draws(
    model: nn.Module,
    data: UnlearningData,
    *,
    forget_samples: int = 8,
    retain_samples: int = 3000,
    draws: int = 5,
    max_eval: int = 2000,
    head: str | None = None,
    seed: int = 0,
    readouts: Mapping[str, Readout] | None = None,
) -> list[float] | None:
    """Each draw's score of :func:`probe_forget_accuracy` (which is their mean; the same
    arguments): how far apart they are is how precise the mean is
    (:func:`standard_error`).

    Returns:
        ``draws`` accuracies in [0, 1], or ``None`` as :func:`probe_forget_accuracy`.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem(n=120)
        >>> scores = probe_forget_draws(net, data, retain_samples=90, draws=3)
        >>> len(scores), sum(scores) / 3 == probe_forget_accuracy(net, data, retain_samples=90,
        ...                                                      draws=3)
        (3, True)
    """
    test_y = dataset_labels(data.test_forget)
    retain_y = dataset_labels(data.retain)
    gen = torch.Generator().manual_seed(seed)
    test_rows = torch.tensor(_pick(len(test_y), max_eval, gen), dtype=torch.long)
    by_class = [torch.nonzero(test_y[test_rows] == c).flatten() for c in data.forget_classes]
    if len(retain_y) == 0 or any(len(rows) <= forget_samples for rows in by_class):
        return None
    order = torch.randperm(len(retain_y), generator=torch.Generator().manual_seed(seed))
    retain_rows = order[:retain_samples]
    k = data.num_classes
    model = inference_view(model)
    known = dict(readouts or {}) if head is None else {}

    def features(key: str, dataset: Dataset[Any], rows: torch.Tensor) -> torch.Tensor:
        return _features(model, dataset, rows, known.get(key), num_classes=k, head=head)

    x_retain = features("retain", data.retain, retain_rows)
    y_retain = retain_y[retain_rows]
    x_test = features("test_forget", data.test_forget, test_rows)
    y_test = test_y[test_rows]
    if not torch.isfinite(x_retain).all() or not torch.isfinite(x_test).all():
        return None
    scores, first = [], None
    for _ in range(draws):
        shown = torch.cat([rows[torch.randperm(len(rows), generator=gen)[:forget_samples]]
                           for rows in by_class])  # fmt: skip
        hidden = torch.ones(len(y_test), dtype=torch.bool)
        hidden[shown] = False
        x_fit = torch.cat([x_retain, x_test[shown]])
        y_fit = torch.cat([y_retain, y_test[shown]])
        mean, std = x_fit.mean(0), x_fit.std(0, correction=0)
        std[std < 1e-8] = 1.0
        probe = LogisticProbe(c=1.0, max_iter=2000).fit((x_fit - mean) / std, y_fit,
                                                        start=first)  # fmt: skip
        first = first or probe  # the draws differ in a few images: start from the first
        predicted = probe.predict((x_test[hidden] - mean) / std)
        scores.append(float((predicted == y_test[hidden]).double().mean()))
    return scores


def _features(
    model: nn.Module,
    dataset: Dataset[Any],
    rows: torch.Tensor,
    read: Readout | None,
    *,
    num_classes: int,
    head: str | None,
) -> torch.Tensor:
    """The head's inputs on ``rows`` of ``dataset`` (float64): those ``read`` holds taken
    from it, the rest read now."""

    def read_now(wanted: torch.Tensor) -> torch.Tensor:
        subset: Dataset[Any] = Subset(dataset, wanted.tolist())
        return head_inputs(model, subset, num_classes=num_classes, head=head).double()

    if read is None or read.features is None or not len(read.rows):
        return read_now(rows)
    at = torch.full((len(dataset),), -1, dtype=torch.long)  # type: ignore[arg-type]
    at[read.rows] = torch.arange(len(read.rows))
    found = at[rows]
    missing = found < 0
    out = torch.empty((len(rows), read.features.shape[1]), dtype=torch.float64)
    out[~missing] = read.features[found[~missing]].double()
    if bool(missing.any()):
        out[missing] = read_now(rows[missing])
    return out


def standard_error(scores: Sequence[float] | None) -> float | None:
    """The standard error of the mean of ``scores`` (their sample standard deviation over
    the square root of their number); ``None`` for fewer than two.

    Example:
        >>> round(standard_error([0.5, 0.7, 0.6]), 4)
        0.0577
        >>> standard_error([0.5]) is None
        True
    """
    if scores is None or len(scores) < 2:
        return None
    mean = sum(scores) / len(scores)
    spread = sum((v - mean) ** 2 for v in scores) / (len(scores) - 1)
    return math.sqrt(spread / len(scores))


def depth_evidence(
    model: nn.Module,
    data: UnlearningData,
    *,
    seed: int = 0,
    relearn: bool = True,
    probe: bool = True,
    readouts: Mapping[str, Readout] | None = None,
) -> dict[str, Any]:
    """The two measurements below the head, as the reports hold them: ``relearn_steps``
    (:func:`~boundary_unlearning.metrics.relearn_steps`) and ``probe_forget_acc``
    (:func:`probe_forget_accuracy`; ``None`` for a model whose head is not an ``nn.Linear``
    with one output per class: there are no head inputs), with ``probe_forget_acc_se``, the
    standard error of that mean over the probe's draws, and the draws' scores themselves
    (``probe_forget_draws``, :func:`probe_forget_draws`: with one seed every model is shown
    the same images in each draw, so :func:`depth_shares` can pair them).

    Args:
        model: the model (not modified).
        data: the class split.
        seed: seeds both.
        relearn: measure relearn steps (else ``None``).
        probe: fit the probe (else ``None``).
        readouts: the model's pass over the four sets, with the features the probe reuses.

    Returns:
        ``{"relearn_steps": int | None, "probe_forget_acc": float | None,
        "probe_forget_acc_se": float | None, "probe_forget_draws": list[float] | None}``.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem()
        >>> depth_evidence(net, data, probe=False)["relearn_steps"]  # untrained: far off
        32
        >>> depth_evidence(net, data, probe=False)["probe_forget_draws"] is None
        True
    """
    try:
        scores = probe_forget_draws(model, data, seed=seed, readouts=readouts) if probe else None
    except ModelError:  # no head to probe
        scores = None
    return {
        "relearn_steps": relearn_steps(model, data, seed=seed) if relearn else None,
        "probe_forget_acc": None if scores is None else sum(scores) / len(scores),
        "probe_forget_acc_se": standard_error(scores),
        "probe_forget_draws": scores,
    }


def depth_shares(
    method: dict[str, Any], original: dict[str, Any], retrained: dict[str, Any]
) -> dict[str, Any]:
    """How much of the original-to-retrained gap a method closed on each depth metric.

    For ``relearn_steps`` (more is deeper) the share is ``(m - o) / (r - o)``, for
    ``probe_forget_acc`` (less is deeper) ``(o - m) / (o - r)``, each capped to [0, 1].
    A metric whose gap ``|r - o|`` is below :data:`MIN_GAP` (or that is missing) cannot tell
    hiding from forgetting on this data: its share is ``None`` and it does not count.
    ``depth`` is the smaller counted share (``None`` when neither counts).
    ``probe_forget_acc_se`` is the probe share's standard error over the probe's draws
    (first-order propagation; ``None`` when the probe does not count or the errors are
    missing). With each model's ``probe_forget_draws`` (:func:`depth_evidence`, one seed: the
    same images shown to every model in each draw) the draws are paired: the error is that
    of the mean of ``(o_i - m_i) - share * (o_i - r_i)`` over draws ``i``, over ``|o - r|``,
    so what moves all three models together does not count. Without them, the three
    ``probe_forget_acc_se`` are combined as if independent, which overstates it.

    Args:
        method: the method's values by metric key.
        original: the original model's.
        retrained: the retrained model's.

    Returns:
        ``{"relearn_steps": share | None, "probe_forget_acc": share | None,
        "depth": smaller share | None, "probe_forget_acc_se": float | None}``.

    Example:
        >>> o = {"relearn_steps": 0, "probe_forget_acc": 0.875}
        >>> r = {"relearn_steps": 29, "probe_forget_acc": 0.713}
        >>> hid = depth_shares({"relearn_steps": 4, "probe_forget_acc": 0.875}, o, r)
        >>> round(hid["relearn_steps"], 3), hid["probe_forget_acc"], hid["depth"]
        (0.138, 0.0, 0.0)
        >>> deep = depth_shares({"relearn_steps": 40, "probe_forget_acc": 0.75}, o, r)
        >>> deep["relearn_steps"], round(deep["depth"], 3)
        (1.0, 0.772)
        >>> none = depth_shares({"relearn_steps": 4}, {"relearn_steps": 2}, {"relearn_steps": 3})
        >>> none["relearn_steps"], none["probe_forget_acc"], none["depth"]
        (None, None, None)
        >>> se = {"probe_forget_acc_se": 0.02}
        >>> close = depth_shares({"probe_forget_acc": 0.79, **se}, {**o, **se}, {**r, **se})
        >>> round(close["depth"], 2), round(close["probe_forget_acc_se"], 2)
        (0.52, 0.15)
    """
    out: dict[str, Any] = {}
    for key, sign in (("relearn_steps", 1.0), ("probe_forget_acc", -1.0)):
        values = [_number(d.get(key)) for d in (method, original, retrained)]
        m, o, r = values
        if m is None or o is None or r is None or sign * (r - o) < MIN_GAP[key]:
            out[key] = None
            continue
        out[key] = min(1.0, max(0.0, (m - o) / (r - o)))
    counted = [v for v in out.values() if v is not None]
    out["depth"] = min(counted) if counted else None
    out["probe_forget_acc_se"] = _share_error(method, original, retrained, out)
    return out


def _share_error(
    method: dict[str, Any], original: dict[str, Any], retrained: dict[str, Any], shares: Any
) -> float | None:
    """The probe share's standard error (see :func:`depth_shares`)."""
    key = "probe_forget_acc"
    m, o, r = (_number(d.get(key)) for d in (method, original, retrained))
    if shares.get(key) is None or m is None or o is None or r is None:
        return None
    gap, share = o - r, (o - m) / (o - r)
    draws = [d.get("probe_forget_draws") for d in (method, original, retrained)]
    lists = [list(d) for d in draws if isinstance(d, list)]
    if len(lists) == 3 and len({len(d) for d in lists}) == 1:  # the same images, paired
        dm, do, dr = lists
        paired = [(a - b) - share * (a - c) for b, a, c in zip(dm, do, dr, strict=True)]
        error = standard_error(paired)
        return None if error is None else error / abs(gap)
    se_m, se_o, se_r = (_number(d.get(f"{key}_se")) for d in (method, original, retrained))
    if se_m is None or se_o is None or se_r is None:
        return None
    spread = se_m**2 + ((1 - share) * se_o) ** 2 + (share * se_r) ** 2
    return math.sqrt(spread) / abs(gap)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)
