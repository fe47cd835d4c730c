"""Every metric of one model in one call, from one batched forward pass per model and set
(over every image, or the seeded samples of :class:`~boundary_unlearning.metrics.estimate.
EvidenceSettings`): accuracy, the membership attacks, the distances and the per-class rows
all read the same logits.

:data:`METRICS` declares each reported key once: its label, which direction is good, how it is
shown and what the number means; the report tables derive from it. Reports print the
retrained model's value beside every metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from .._utils import inference_view
from ..data.split import UnlearningData
from . import mia as _mia
from .accuracy import predict_logits
from .distances import activation_distance, entropy, js_divergence, zrf_score
from .estimate import EvidenceSettings, Readout, read_sets
from .forgotten import class_evidence
from .mia import confidence_svc, entropy_attack, loss_lr, paper_asr
from .probe import depth_evidence

__all__ = [
    "DIRECTIONS",
    "METRICS",
    "METRIC_BY_KEY",
    "RAW_FIELDS",
    "Metric",
    "compute_metrics",
    "depth_evidence",
]

Direction = Literal["higher", "lower", "closer_to_retrain", "closer_to_0.5"]
Unit = Literal["fraction", "distance", "count", "share", "ratio", "seconds", "text"]

DIRECTIONS: tuple[str, ...] = get_args(Direction)


@dataclass(frozen=True)
class Metric:
    """One reported number, declared once: where it sits in a model's report entry, how the
    tables label and show it, and which way is good (torchmetrics' ``higher_is_better``).

    Attributes:
        key: dotted path in a model's entry of ``report["results"]``: ``"mia.loss_lr"`` is
            ``entry["mia"]["loss_lr"]``.
        label: the row label in the report tables.
        direction: which value is good: ``"higher"``, ``"lower"``, ``"closer_to_retrain"``
            (the retrained model's value is the target) or ``"closer_to_0.5"``.
        unit: how a value is shown: ``"fraction"`` (as a percentage), ``"distance"`` (four
            decimals), ``"count"`` (a whole number), ``"share"`` (two decimals, 0..1),
            ``"ratio"`` (``17.0×``), ``"seconds"``
            or ``"text"`` (the verdict, not a number).
        meaning: what the number means, for the reports' glossary.

    Example:
        >>> m = Metric("acc.forget", "Acc on D_f", "closer_to_retrain", "fraction", "...")
        >>> m.path, m.higher_is_better
        (('acc', 'forget'), None)
    """

    key: str
    label: str
    direction: Direction
    unit: Unit
    meaning: str

    @property
    def path(self) -> tuple[str, ...]:
        """The keys leading to the value in a model's report entry.

        Returns:
            ``key`` split at its dots.

        Example:
            >>> METRIC_BY_KEY["js_to_retrain"].path
            ('js_to_retrain',)
        """
        return tuple(self.key.split("."))

    @property
    def higher_is_better(self) -> bool | None:
        """torchmetrics' flag: True for "higher", False for "lower", None when the target is
        a value (the retrained model's, or 0.5).

        Returns:
            Whether a larger value is better, or None when neither direction is.

        Example:
            >>> METRIC_BY_KEY["speedup"].higher_is_better, METRIC_BY_KEY["zrf"].higher_is_better
            (True, None)
        """
        return {"higher": True, "lower": False}.get(self.direction)


# Every reported metric, in the order the report tables show them. compute_metrics writes the
# accuracies, attacks, distances, relearn steps and the probe; the experiment adds depth (from
# the original's and the retrained model's values), seconds, speed-up and the method's stats;
# the verdict is judged by the report from acc.forget and depth.
METRICS: tuple[Metric, ...] = (
    Metric(
        key="acc.retain",
        label="Acc on D_r",
        direction="higher",
        unit="fraction",
        meaning="accuracy on the remaining training data; higher is better, retrain's value is "
        "the reference",
    ),
    Metric(
        key="acc.forget",
        label="Acc on D_f",
        direction="closer_to_retrain",
        unit="fraction",
        meaning="accuracy on the forgotten class's training data; the retrained model's value "
        "(about 0) is the target",
    ),
    Metric(
        key="acc.test_retain",
        label="Acc on D_tr",
        direction="higher",
        unit="fraction",
        meaning="accuracy on test data of the remaining classes; higher is better, retrain's "
        "value is the reference",
    ),
    Metric(
        key="acc.test_forget",
        label="Acc on D_tf",
        direction="closer_to_retrain",
        unit="fraction",
        meaning="accuracy on test data of the forgotten class; the retrained model's value "
        "(about 0) is the target",
    ),
    Metric(
        key="verdict",
        label="Verdict",
        direction="closer_to_retrain",
        unit="text",
        meaning="forgot = D_f accuracy at most 5 points above the retrained model's AND depth >= "
        "0.5 (gone from the features); hid = D_f at the target but depth below 0.5 (the class "
        "is still in the features); no longer predicted = D_f at the target, depth not "
        "measured (no retrained model); a method that did not forget gets no speed-up",
    ),
    Metric(
        key="mia.paper_asr",
        label="MIA ASR (paper)",
        direction="closer_to_retrain",
        unit="fraction",
        meaning="fraction of D_f that a logistic-regression attack on sorted output log-"
        "probabilities, trained on D_r (members) vs D_tr (non-members), calls member; "
        "lower after unlearning, retrain's value is the target",
    ),
    Metric(
        key="mia.confidence_svc",
        label="MIA-efficacy (SVC)",
        direction="closer_to_retrain",
        unit="fraction",
        meaning="SalUn's MIA-efficacy: fraction of D_f that an RBF SVC on the true-label "
        "confidence p_y, trained on D_r vs D_tr, calls NON-member; higher after "
        "unlearning, retrain's value is the target",
    ),
    Metric(
        key="mia.loss_lr",
        label="MIA loss-LR acc",
        direction="closer_to_0.5",
        unit="fraction",
        meaning="5-fold cross-validated accuracy of logistic regression telling D_f losses from"
        " held-out same-class (D_tf) losses; 0.5 = indistinguishable (ideal), above 0.5"
        " the model still remembers D_f",
    ),
    Metric(
        key="mia.entropy",
        label="MIA entropy",
        direction="closer_to_retrain",
        unit="fraction",
        meaning="fraction of D_f that a logistic regression on output entropy, trained on D_r "
        "vs D_tr, calls member; lower after unlearning, retrain's value is the target",
    ),
    Metric(
        key="mia.ulira",
        label="MIA U-LiRA",
        direction="closer_to_retrain",
        unit="fraction",
        meaning="fraction of D_f that a per-example Gaussian likelihood ratio over shadow "
        "models (in/out) calls member; lower after unlearning, retrain's value is the "
        "target",
    ),
    Metric(
        key="js_to_retrain",
        label="JS to retrain",
        direction="lower",
        unit="distance",
        meaning="mean over D_f of the Jensen-Shannon divergence (nats, 0..ln 2) between this "
        "model's and the retrained model's output distributions; 0 = same outputs",
    ),
    Metric(
        key="activation_distance",
        label="Activation distance",
        direction="lower",
        unit="distance",
        meaning="mean over D_f of the L2 distance between this model's and the retrained "
        "model's probability vectors (0..sqrt 2); 0 = same outputs",
    ),
    Metric(
        key="zrf",
        label="ZRF",
        direction="closer_to_retrain",
        unit="distance",
        meaning="1 - mean JS (nats) on D_f to a randomly initialised model of the same "
        "architecture (1 - ln 2 .. 1); 1 = answers like a random network",
    ),
    Metric(
        key="relearn_steps",
        label="Relearn steps",
        direction="closer_to_retrain",
        unit="count",
        meaning="full-batch SGD steps (lr 1e-3) on 8 forget samples until D_f accuracy is back "
        "to 50% (capped at 100); few steps = the class was hidden rather than forgotten",
    ),
    Metric(
        key="probe_forget_acc",
        label="Few-shot probe on D_tf",
        direction="closer_to_retrain",
        unit="fraction",
        meaning="share of the forgotten class's test images that a fresh linear classifier on "
        "the frozen features (the head's inputs) recognises after seeing 8 of them beside "
        "3,000 retained images (mean of 5 draws); it never reads the model's head, so only "
        "features count: near the original's value = the class is still in the features",
    ),
    Metric(
        key="probe_forget_acc_se",
        label="Probe's standard error",
        direction="lower",
        unit="fraction",
        meaning="the standard error of the probe's mean over its 5 draws (another draw of 8 "
        "images moves it by about this much); a depth within two of its standard errors of "
        "0.5 is a close call, and the report says so",
    ),
    Metric(
        key="depth",
        label="Depth",
        direction="higher",
        unit="share",
        meaning="the smaller share of the original-to-retrained gap the method closed on relearn "
        "steps and on the probe (0 = features as the original's, 1 = as the retrained "
        "model's; a metric whose gap is under 3 steps / 5 points does not count); forgot "
        "needs >= 0.5",
    ),
    Metric(
        key="stats.steps",
        label="Unlearning steps",
        direction="lower",
        unit="count",
        meaning="optimiser steps the method took (forget-only methods stop at their forgetting "
        "target)",
    ),
    Metric(
        key="seconds",
        label="Time (s)",
        direction="lower",
        unit="seconds",
        meaning="wall-clock seconds of the method (training time for original and retrain)",
    ),
    Metric(
        key="speedup",
        label="Speed-up vs retrain",
        direction="higher",
        unit="ratio",
        meaning="retrain's seconds divided by this method's seconds",
    ),
)

METRIC_BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}
# What an entry holds beside its metrics, for other computations rather than a table row.
RAW_FIELDS: dict[str, str] = {
    "probe_forget_draws": "each of the probe's draws' scores, in draw order (one seed shows "
    "every model the same images in a draw, so depth_shares pairs them across models)",
}


@dataclass(frozen=True)
class _Outputs:
    """One model's pass over the four sets (one batched forward pass each)."""

    retain: Readout
    forget: Readout
    test_retain: Readout
    test_forget: Readout


def _outputs(
    model: nn.Module, data: UnlearningData, evidence: EvidenceSettings | None, *, features: bool
) -> _Outputs:
    return _Outputs(**read_sets(model, data, evidence, features=features))


def _forget_logits(model: nn.Module, data: UnlearningData, read: Readout) -> torch.Tensor:
    """A reference's logits on ``read``'s D_f rows, laid out as read_sets lays one out."""
    dataset: Dataset[Any] = data.forget_eval
    total = len(dataset)  # type: ignore[arg-type]
    if len(read.rows) != total or not torch.equal(read.rows, torch.arange(total)):
        dataset = Subset(dataset, read.rows.tolist())  # a sample, or the set in its order
    return predict_logits(inference_view(model), dataset).double().cpu()


def _acc(read: Readout) -> float | None:
    """The accuracy: on a set read whole as it always was (a float32 mean), on a sample the
    estimate (hits / images read)."""
    if len(read.labels) == 0:
        return None  # an empty set has no accuracy
    if not read.estimate.whole:
        return read.estimate.value
    return float((read.logits.argmax(1) == read.labels).float().mean())


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if len(labels) == 0:
        return torch.zeros(0, dtype=torch.float64)
    return F.cross_entropy(logits, labels, reduction="none")


def _p_y(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return probs.gather(1, labels.view(-1, 1)).squeeze(1)


def _nested(values: dict[str, float | None]) -> dict[str, Any]:
    """Values by metric key, nested the way a report entry holds them.

    Args:
        values: metric key (declared in :data:`METRICS`) -> value, in the order to write.

    Returns:
        ``{"acc.forget": v}`` as ``{"acc": {"forget": v}}``; keys without a dot stay on top.

    Raises:
        KeyError: a key is not declared in :data:`METRICS` (declare it there first).

    Example:
        >>> _nested({"acc.forget": 0.0, "mia.loss_lr": 0.5, "zrf": None})
        {'acc': {'forget': 0.0}, 'mia': {'loss_lr': 0.5}, 'zrf': None}
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in METRIC_BY_KEY:
            raise KeyError(f"metric {key!r} is not declared; add it to METRICS")
        *groups, name = METRIC_BY_KEY[key].path
        node = out
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = value
    return out


def compute_metrics(
    model: nn.Module,
    data: UnlearningData,
    *,
    retrained: nn.Module | None = None,
    random_model: nn.Module | None = None,
    seed: int = 0,
    relearn: bool = True,
    probe: bool = True,
    ulira: bool = False,
    evidence: EvidenceSettings | None = None,
    per_class: bool = False,
) -> dict[str, Any]:
    """All metrics of ``model`` on ``data`` as a JSON-able dict (see :data:`METRICS`), from
    one forward pass per set.

    Keys: ``acc`` (``retain``, ``forget``, ``test_retain``, ``test_forget`` as in
    :func:`evaluate`), ``mia`` (``paper_asr``, ``confidence_svc``, ``loss_lr``, ``entropy``,
    plus ``ulira`` when ``ulira=True``), ``js_to_retrain`` and ``activation_distance`` (vs
    ``retrained`` on D_f), ``zrf`` (vs ``random_model`` on D_f), ``relearn_steps`` (when
    ``relearn``), ``probe_forget_acc`` (when ``probe``). A metric whose reference model is
    not given is ``None``; so is one that cannot be computed (an empty set): never NaN. Every
    attack is seeded with ``seed``.

    With ``evidence`` the sets are read as it says (by default D_r and D_tr on seeded
    samples, D_f and D_tf whole up to 2,000 images): every number above is computed on the
    images read, and the entry also holds ``acc_interval`` (``[low, high]`` per set) and
    ``acc_samples`` (images read per set). Without it every image is read.

    Args:
        model: the model to score.
        data: the four sets D_r, D_f, D_tr, D_tf.
        retrained: the reference for ``js_to_retrain`` and ``activation_distance``.
        random_model: the reference for ``zrf``.
        seed: seed of every attack and of the relearn test.
        relearn: compute ``relearn_steps`` (a few SGD steps on a copy).
        probe: compute ``probe_forget_acc`` (a linear probe on the frozen features).
        ulira: run the slow shadow-model attack ``mia.ulira``.
        evidence: how the four sets are read (``None``: every image).
        per_class: add ``per_class``
            (:func:`~boundary_unlearning.metrics.forgotten.class_evidence`, this request's
            classes read from the same pass).

    Returns:
        The metrics nested as a report entry holds them (``entry["mia"]["loss_lr"]``).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from boundary_unlearning.data.split import class_split
        >>> ds = TensorDataset(
        ...     torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]] * 4), torch.tensor([0, 1, 2] * 4)
        ... )
        >>> model = nn.Linear(2, 3)  # never answers class 2:
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        ...     _ = model.bias.zero_()
        >>> metrics = compute_metrics(model, class_split(ds, ds, 2), relearn=False, probe=False)
        >>> metrics["acc"]
        {'retain': 1.0, 'forget': 0.0, 'test_retain': 1.0, 'test_forget': 0.0}
        >>> metrics["mia"]["loss_lr"], metrics["zrf"], metrics["relearn_steps"]
        (0.5, None, None)
    """
    view = inference_view(model)  # one copy laid out for the CPU, for the passes below
    out = _outputs(view, data, evidence, features=probe)
    y_r, y_f = out.retain.labels, out.forget.labels
    y_tr, y_tf = out.test_retain.labels, out.test_forget.labels
    p_r, p_f = out.retain.logits.softmax(1), out.forget.logits.softmax(1)
    p_tr = out.test_retain.logits.softmax(1)
    losses_f = _losses(out.forget.logits, y_f)
    losses_tf = _losses(out.test_forget.logits, y_tf)
    values: dict[str, float | None] = {
        "acc.retain": _acc(out.retain),
        "acc.forget": _acc(out.forget),
        "acc.test_retain": _acc(out.test_retain),
        "acc.test_forget": _acc(out.test_forget),
        "mia.paper_asr": _clean(paper_asr(p_r, p_tr, p_f, seed=seed)),
        "mia.confidence_svc": _clean(
            confidence_svc(_p_y(p_r, y_r), _p_y(p_tr, y_tr), _p_y(p_f, y_f), seed=seed)
        ),
        "mia.loss_lr": _clean(loss_lr(losses_f, losses_tf, seed=seed)),
        "mia.entropy": _clean(entropy_attack(entropy(p_r), entropy(p_tr), entropy(p_f), seed=seed)),
    }
    if ulira:
        values["mia.ulira"] = _clean(_mia.ulira(model, data, seed=seed))
    values["js_to_retrain"] = values["activation_distance"] = values["zrf"] = None
    if retrained is not None:
        q_f = _forget_logits(retrained, data, out.forget).softmax(1)
        values["js_to_retrain"] = _clean(js_divergence(p_f, q_f))
        values["activation_distance"] = _clean(activation_distance(p_f, q_f))
    if random_model is not None:
        r_f = _forget_logits(random_model, data, out.forget).softmax(1)
        values["zrf"] = _clean(zrf_score(p_f, r_f))
    depth = depth_evidence(view, data, seed=seed, relearn=relearn, probe=probe,
                           readouts=vars(out))  # fmt: skip
    draws = depth.pop("probe_forget_draws")  # a raw field (RAW_FIELDS), not a metric
    values.update(depth)
    entry = _nested(values)
    entry["probe_forget_draws"] = draws
    if evidence is not None:
        read = {k: getattr(out, k).estimate for k in ("retain", "forget", "test_retain",
                                                      "test_forget")}  # fmt: skip
        entry["acc_interval"] = {
            k: [entry["acc"][k]] * 2 if e.whole and e.n else e.as_dict()["interval"]
            for k, e in read.items()
        }  # a set read whole: the value itself, as reported
        entry["acc_samples"] = {k: e.n for k, e in read.items()}
    if per_class:
        entry["per_class"] = class_evidence(model, data, readouts=vars(out))
    return entry
