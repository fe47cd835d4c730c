"""Every metric of one model in one call, from one batched forward pass per model and set.

:data:`METRIC_INFO` documents each reported key: its label, which direction is good and what
the number means. Reports print the retrained model's value beside every metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..data.split import UnlearningData, dataset_labels, to_tensors
from ..data.streaming import tensor_backed
from . import mia as _mia
from .accuracy import predict_logits
from .distances import activation_distance, entropy, js_divergence, zrf_score
from .mia import confidence_svc, entropy_attack, loss_lr, paper_asr
from .relearn import relearn_steps

__all__ = ["DIRECTIONS", "METRIC_INFO", "compute_metrics"]

DIRECTIONS = ("higher", "lower", "closer_to_retrain", "closer_to_0.5")

METRIC_INFO: dict[str, dict[str, str]] = {
    "acc.retain": {
        "label": "Acc on D_r",
        "direction": "higher",
        "meaning": "accuracy on the remaining training data; higher is better, retrain's "
        "value is the reference",
    },
    "acc.forget": {
        "label": "Acc on D_f",
        "direction": "closer_to_retrain",
        "meaning": "accuracy on the forgotten class's training data; the retrained model's "
        "value (about 0) is the target",
    },
    "acc.test_retain": {
        "label": "Acc on D_tr",
        "direction": "higher",
        "meaning": "accuracy on test data of the remaining classes; higher is better, "
        "retrain's value is the reference",
    },
    "acc.test_forget": {
        "label": "Acc on D_tf",
        "direction": "closer_to_retrain",
        "meaning": "accuracy on test data of the forgotten class; the retrained model's "
        "value (about 0) is the target",
    },
    "mia.paper_asr": {
        "label": "MIA ASR (paper)",
        "direction": "closer_to_retrain",
        "meaning": "fraction of D_f that a logistic-regression attack on sorted output "
        "log-probabilities, trained on D_r (members) vs D_tr (non-members), calls member; "
        "lower after unlearning, retrain's value is the target",
    },
    "mia.confidence_svc": {
        "label": "MIA-efficacy (SVC)",
        "direction": "closer_to_retrain",
        "meaning": "SalUn's MIA-efficacy: fraction of D_f that an RBF SVC on the true-label "
        "confidence p_y, trained on D_r vs D_tr, calls NON-member; higher after unlearning, "
        "retrain's value is the target",
    },
    "mia.loss_lr": {
        "label": "MIA loss-LR acc",
        "direction": "closer_to_0.5",
        "meaning": "5-fold cross-validated accuracy of logistic regression telling D_f losses "
        "from held-out same-class (D_tf) losses; 0.5 = indistinguishable (ideal), above 0.5 "
        "the model still remembers D_f",
    },
    "mia.entropy": {
        "label": "MIA entropy",
        "direction": "closer_to_retrain",
        "meaning": "fraction of D_f that a logistic regression on output entropy, trained on "
        "D_r vs D_tr, calls member; lower after unlearning, retrain's value is the target",
    },
    "mia.ulira": {
        "label": "MIA U-LiRA",
        "direction": "closer_to_retrain",
        "meaning": "fraction of D_f that a per-example Gaussian likelihood ratio over shadow "
        "models (in/out) calls member; lower after unlearning, retrain's value is the target",
    },
    "js_to_retrain": {
        "label": "JS to retrain",
        "direction": "lower",
        "meaning": "mean over D_f of the Jensen-Shannon divergence (nats, 0..ln 2) between "
        "this model's and the retrained model's output distributions; 0 = same outputs",
    },
    "activation_distance": {
        "label": "Activation distance",
        "direction": "lower",
        "meaning": "mean over D_f of the L2 distance between this model's and the retrained "
        "model's probability vectors (0..sqrt 2); 0 = same outputs",
    },
    "zrf": {
        "label": "ZRF",
        "direction": "closer_to_retrain",
        "meaning": "1 - mean JS (nats) on D_f to a randomly initialised model of the same "
        "architecture (1 - ln 2 .. 1); 1 = answers like a random network",
    },
    "relearn_steps": {
        "label": "Relearn steps",
        "direction": "closer_to_retrain",
        "meaning": "full-batch SGD steps (lr 1e-3) on 8 forget samples until D_f accuracy is "
        "back to 50% (capped at 100); few steps = the class was hidden rather than forgotten",
    },
    "verdict": {
        "label": "Verdict",
        "direction": "closer_to_retrain",
        "meaning": "forgot = D_f accuracy at most 5 points above the retrained model's; a "
        "method that did not forget gets no speed-up",
    },
    "stats.steps": {
        "label": "Unlearning steps",
        "direction": "lower",
        "meaning": "optimiser steps the method took (forget-only methods stop at their "
        "forgetting target)",
    },
    "seconds": {
        "label": "Time (s)",
        "direction": "lower",
        "meaning": "wall-clock seconds of the method (training time for original and retrain)",
    },
    "speedup": {
        "label": "Speed-up vs retrain",
        "direction": "higher",
        "meaning": "retrain's seconds divided by this method's seconds",
    },
}


@dataclass(frozen=True)
class _Outputs:
    """Logits of one model on the four sets (one batched forward pass each)."""

    retain: torch.Tensor
    forget: torch.Tensor
    test_retain: torch.Tensor
    test_forget: torch.Tensor


_Set = tuple[torch.Tensor | Dataset[Any], torch.Tensor]


@dataclass(frozen=True)
class _Sets:
    """Inputs (a tensor, or the dataset when it is read batch by batch) and labels."""

    retain: _Set
    forget: _Set
    test_retain: _Set
    test_forget: _Set


def _inputs_and_labels(dataset: Dataset[Any]) -> _Set:
    if tensor_backed(dataset):
        return to_tensors(dataset)
    return dataset, dataset_labels(dataset)


def _sets(data: UnlearningData) -> _Sets:
    return _Sets(
        retain=_inputs_and_labels(data.retain),
        forget=_inputs_and_labels(data.forget_eval),
        test_retain=_inputs_and_labels(data.test_retain),
        test_forget=_inputs_and_labels(data.test_forget),
    )


def _outputs(model: nn.Module, sets: _Sets) -> _Outputs:
    def run(xy: _Set) -> torch.Tensor:
        return predict_logits(model, xy[0]).double().cpu()

    return _Outputs(run(sets.retain), run(sets.forget), run(sets.test_retain),
                    run(sets.test_forget))  # fmt: skip


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((logits.argmax(1) == labels).float().mean())


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if len(labels) == 0:
        return torch.zeros(0, dtype=torch.float64)
    return F.cross_entropy(logits, labels, reduction="none")


def _p_y(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return probs.gather(1, labels.view(-1, 1)).squeeze(1)


def compute_metrics(
    model: nn.Module,
    data: UnlearningData,
    *,
    retrained: nn.Module | None = None,
    original: nn.Module | None = None,
    random_model: nn.Module | None = None,
    seed: int = 0,
    relearn: bool = True,
    ulira: bool = False,
) -> dict[str, Any]:
    """All metrics of ``model`` on ``data`` as a JSON-able dict (see :data:`METRIC_INFO`).

    Keys: ``acc`` (``retain``, ``forget``, ``test_retain``, ``test_forget`` as in
    :func:`evaluate`), ``mia`` (``paper_asr``, ``confidence_svc``, ``loss_lr``, ``entropy``,
    plus ``ulira`` when ``ulira=True``), ``js_to_retrain`` and ``activation_distance`` (vs
    ``retrained`` on D_f), ``zrf`` (vs ``random_model`` on D_f), ``relearn_steps`` (when
    ``relearn``). A metric whose reference model is not given is ``None``; so is one that
    cannot be computed (an empty set). ``original`` is accepted for symmetry and currently
    unused. Every attack is seeded with ``seed``.
    """
    del original
    sets = _sets(data)
    out = _outputs(model, sets)
    y_r, y_f = sets.retain[1], sets.forget[1]
    y_tr, y_tf = sets.test_retain[1], sets.test_forget[1]
    p_r, p_f = out.retain.softmax(1), out.forget.softmax(1)
    p_tr = out.test_retain.softmax(1)
    result: dict[str, Any] = {
        "acc": {
            "retain": _acc(out.retain, y_r),
            "forget": _acc(out.forget, y_f),
            "test_retain": _acc(out.test_retain, y_tr),
            "test_forget": _acc(out.test_forget, y_tf),
        }
    }
    losses_f = _losses(out.forget, y_f)
    losses_tf = _losses(out.test_forget, y_tf)
    mia: dict[str, float | None] = {
        "paper_asr": _clean(paper_asr(p_r, p_tr, p_f, seed=seed)),
        "confidence_svc": _clean(
            confidence_svc(_p_y(p_r, y_r), _p_y(p_tr, y_tr), _p_y(p_f, y_f), seed=seed)
        ),
        "loss_lr": _clean(loss_lr(losses_f, losses_tf, seed=seed)),
        "entropy": _clean(entropy_attack(entropy(p_r), entropy(p_tr), entropy(p_f), seed=seed)),
    }
    if ulira:
        mia["ulira"] = _clean(_mia.ulira(model, data, seed=seed))
    result["mia"] = mia
    if retrained is not None:
        q_f = predict_logits(retrained, sets.forget[0]).double().cpu().softmax(1)
        result["js_to_retrain"] = _clean(js_divergence(p_f, q_f))
        result["activation_distance"] = _clean(activation_distance(p_f, q_f))
    else:
        result["js_to_retrain"] = result["activation_distance"] = None
    if random_model is not None:
        r_f = predict_logits(random_model, sets.forget[0]).double().cpu().softmax(1)
        result["zrf"] = _clean(zrf_score(p_f, r_f))
    else:
        result["zrf"] = None
    result["relearn_steps"] = relearn_steps(model, data, seed=seed) if relearn else None
    return result
