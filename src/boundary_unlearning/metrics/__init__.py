"""Evaluation metrics: pure functions of a model's outputs."""

from .accuracy import accuracy, evaluate, predict_logits

__all__ = ["accuracy", "evaluate", "predict_logits"]
