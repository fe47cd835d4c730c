"""Batched inference and accuracy on the paper's four sets."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._utils import eval_mode, model_device
from ..data.split import UnlearningData, to_tensors
from ..distributed import all_reduce_sum, is_distributed, shard_range

__all__ = ["accuracy", "evaluate", "predict_logits"]


def predict_logits(
    model: nn.Module, inputs: torch.Tensor, *, batch_size: int | None = None
) -> torch.Tensor:
    """Logits of ``model`` on ``inputs`` in eval mode (mode restored), on the model's device.

    ``batch_size`` defaults to 128 on CPU (larger batches fall out of cache and run slower per
    image) and 1024 on accelerators."""
    device = model_device(model)
    if batch_size is None:
        batch_size = 128 if device.type == "cpu" else 1024
    outs: list[torch.Tensor] = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            outs.append(model(inputs[start : start + batch_size].to(device)))
    if not outs:
        return torch.zeros((0, 0), device=device)
    return torch.cat(outs)


def accuracy(model: nn.Module, dataset: Dataset[Any], *, batch_size: int | None = None) -> float:
    """Fraction of ``dataset`` that ``model`` classifies correctly (NaN for an empty set).

    Under torchrun each rank scores its share and the counts are summed (every rank must
    call it; all get the same value)."""
    x, y = to_tensors(dataset)
    if len(y) == 0:
        return float("nan")
    if is_distributed():
        lo, hi = shard_range(len(y))
        hits = torch.zeros((), dtype=torch.float32)
        if hi > lo:
            logits = predict_logits(model, x[lo:hi], batch_size=batch_size)
            hits = (logits.argmax(1).cpu() == y[lo:hi]).float().sum()
        return float(all_reduce_sum(hits) / len(y))
    logits = predict_logits(model, x, batch_size=batch_size)
    return float((logits.argmax(1).cpu() == y).float().mean())


def evaluate(
    model: nn.Module, data: UnlearningData, *, batch_size: int | None = None
) -> dict[str, float]:
    """Accuracy on D_r, D_f (the whole forgotten class), D_tr and D_tf (higher on retain sets
    is better; on forget sets the retrained model's value, about 0, is the target)."""
    return {
        "retain": accuracy(model, data.retain, batch_size=batch_size),
        "forget": accuracy(model, data.forget_eval, batch_size=batch_size),
        "test_retain": accuracy(model, data.test_retain, batch_size=batch_size),
        "test_forget": accuracy(model, data.test_forget, batch_size=batch_size),
    }
