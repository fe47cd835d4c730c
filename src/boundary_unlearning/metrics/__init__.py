"""Evaluation metrics: pure functions of a model's outputs, each with its direction.

:func:`compute_metrics` runs all of them for one model; :data:`METRICS` declares each reported
number once: its label, which way is good and what it means.
"""

from .accuracy import accuracy, evaluate, predict_logits
from .distances import activation_distance, entropy, js_divergence, zrf_score
from .estimate import Estimate, estimate_accuracy
from .forgotten import class_evidence, class_holds
from .mia import confidence_svc, entropy_attack, loss_lr, paper_asr, ulira
from .probe import (
    depth_evidence,
    depth_shares,
    probe_forget_accuracy,
    probe_forget_draws,
    standard_error,
)
from .relearn import relearn_steps
from .suite import METRICS, Metric, compute_metrics

__all__ = [
    "METRICS",
    "Estimate",
    "Metric",
    "accuracy",
    "activation_distance",
    "class_evidence",
    "class_holds",
    "compute_metrics",
    "confidence_svc",
    "depth_evidence",
    "depth_shares",
    "entropy",
    "entropy_attack",
    "estimate_accuracy",
    "evaluate",
    "js_divergence",
    "loss_lr",
    "paper_asr",
    "predict_logits",
    "probe_forget_accuracy",
    "probe_forget_draws",
    "relearn_steps",
    "standard_error",
    "ulira",
    "zrf_score",
]
