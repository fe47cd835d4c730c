"""Neighbour search for Boundary Shrink: FGSM / PGD steps taken in pixel space.

The models of this library normalise inside (a first layer), so inputs are pixels in
[0, 1]. A user's model that expects normalised inputs passes ``normalization=(mean, std)``;
the search then undoes the normalisation, steps in pixel space, and normalises again (the
authors' code gets this wrong, see docs/paper.md).
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ._utils import eval_mode, model_device
from .checks import AtLeastOne, Positive, check_setting
from .data.normalization import (
    Normalization,
    NormalizationLike,
    channel_view,
    check_normalization,
)
from .data.streaming import iterate_batches
from .distributed import gather_rows, is_distributed, shard_range

__all__ = ["AttackName", "LabelRule", "Neighbours", "neighbour_search"]

AttackName = Literal["fgsm", "pgd"]
LabelRule = Literal["nearest_other", "argmax"]


@dataclass(frozen=True)
class Neighbours:
    """Result of the neighbour search on a set of forget samples.

    Args:
        inputs: the adversarial neighbours x' (in the caller's input space; empty with
            ``keep_inputs=False``).
        labels: the neighbour labels y_nb.
        probs: the model's softmax at x', for the optional loss re-weighting.
        success_ratio: the fraction of inputs whose neighbour label differs from the true
            one.

    Example:
        >>> probs = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
        >>> found = Neighbours(torch.zeros(0), probs.argmax(1), probs, success_ratio=0.5)
        >>> found.labels.tolist()  # the first of two class-0 samples crossed into class 1
        [1, 0]
    """

    inputs: torch.Tensor  # the adversarial neighbours x' (in the caller's input space)
    labels: torch.Tensor  # y_nb = argmax f_w0(x')
    probs: torch.Tensor  # softmax f_w0(x'), for the optional loss re-weighting
    success_ratio: float  # fraction of inputs whose neighbour label differs from the true one


def neighbour_search(
    model: nn.Module,
    inputs: torch.Tensor | Dataset[Any],
    labels: torch.Tensor,
    *,
    eps: Positive = 0.1,
    attack: AttackName = "fgsm",
    pgd_steps: AtLeastOne = 5,
    pgd_step_size: Positive = 8 / 255,
    normalization: NormalizationLike | None = None,
    quantize: bool = True,
    batch_size: int | None = None,
    label_rule: LabelRule = "argmax",
    keep_inputs: bool = True,
) -> Neighbours:
    """Nearest adversarial neighbour of each input under the frozen ``model``.

    FGSM: ``x' = x + eps * sign(grad_x CE(f(x), y))``; PGD: ``pgd_steps`` steps of
    ``pgd_step_size`` projected onto the eps-ball. In pixel space the perturbation is
    clipped to ``[-eps, eps]``, the result clamped to [0, 1] and (``quantize``) rounded to
    1/255 while staying inside the ball. The neighbour label is the argmax over all classes
    of the model's output at ``x'`` (``label_rule="argmax"``, the paper's: the true class is
    not excluded, so a sample whose step did not cross a boundary keeps its label) or over the
    other classes only (``"nearest_other"``: every sample gets the class nearest to it in the
    step's direction, the paper's label wherever the step crossed). The model's parameters
    get no gradient and its mode is restored. ``batch_size`` (default: 128 on CPU, where
    larger batches fall out of cache and run ~1.7x slower per image, 1024 on accelerators;
    fewer for large images, so that one input-sized tensor stays within 16 MB on CPU and
    256 MB on accelerators) changes only the speed and memory. ``inputs`` may be a dataset
    (read batch by batch, see :mod:`boundary_unlearning.data.streaming`);
    ``keep_inputs=False`` keeps only the labels and probabilities (``Neighbours.inputs`` is
    then empty), so memory does not grow with the forget set.

    Under torchrun each rank searches its share and the results are gathered.

    Args:
        model: the frozen original classifier.
        inputs: the forget samples (a tensor, or a dataset read batch by batch).
        labels: their true labels.
        eps: the radius of the pixel-space ball.
        attack: ``"fgsm"`` or ``"pgd"``.
        pgd_steps: PGD's number of steps.
        pgd_step_size: PGD's step size (pixels).
        normalization: ``(mean, std)`` the inputs carry (``None``: pixels in [0, 1]).
        quantize: round the neighbours to 1/255.
        batch_size: inputs per batch (speed and memory only).
        label_rule: ``"argmax"`` or ``"nearest_other"``.
        keep_inputs: return the neighbours themselves.

    Returns:
        The :class:`Neighbours`.

    Raises:
        HyperparameterError: a setting that does not fit its declared type and range (an
            unknown attack or label rule, ``eps <= 0``, bad PGD settings).
        DataError: a bad ``normalization``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))  # logits = the two pixels
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(torch.eye(2))
        ...     _ = net[1].bias.zero_()
        >>> x = torch.tensor([[[[0.55, 0.5]]], [[[0.9, 0.1]]]])  # both class 0
        >>> found = neighbour_search(net, x, torch.tensor([0, 0]), eps=0.1)
        >>> found.labels.tolist()  # the first step crossed the boundary, the second did not
        [1, 0]
        >>> [round(v, 4) for v in found.inputs[0].flatten().tolist()]  # 115/255, 153/255
        [0.451, 0.6]
        >>> neighbour_search(net, x, torch.tensor([0, 0]), label_rule="nearest_other").labels
        tensor([1, 1])
    """
    hints = typing.get_type_hints(neighbour_search, include_extras=True)
    settings = {"eps": eps, "attack": attack, "label_rule": label_rule}
    if attack == "pgd":
        settings.update(pgd_steps=pgd_steps, pgd_step_size=pgd_step_size)
    for name, value in settings.items():
        check_setting(name, value, hints[name])
    norm = check_normalization(normalization)
    device = model_device(model)
    batch_size = batch_size or _batch_size(inputs, device)
    lo, hi = shard_range(len(labels))  # under torchrun this rank's share, else everything
    if isinstance(inputs, torch.Tensor):
        batches: Iterator[torch.Tensor] = (
            inputs[s : min(s + batch_size, hi)] for s in range(lo, hi, batch_size)
        )
    else:
        batches = (b[0] for b in iterate_batches(inputs, batch_size, order=torch.arange(lo, hi)))
    out_x: list[torch.Tensor] = []
    probs = torch.zeros((0, 0), device=device)
    with _frozen(model), eval_mode(model):
        for start, x_in in zip(range(lo, hi, batch_size), batches, strict=True):
            y = labels[start : min(start + batch_size, hi)].to(device)
            x_adv, p = _attack_batch(model, x_in.to(device), y, eps, attack, pgd_steps,
                                     pgd_step_size, norm, quantize)  # fmt: skip
            if keep_inputs:
                out_x.append(x_adv)
            if not len(probs):  # one buffer for all: no small block pinned between batches
                probs = p.new_empty((hi - lo, p.shape[1]))
            probs[start - lo : start - lo + len(p)] = p
    adv = torch.cat(out_x) if out_x else torch.zeros((0,), device=device)
    if is_distributed():  # every rank's share, in order, on every rank
        probs = gather_rows(probs, len(labels))
        adv = gather_rows(adv, len(labels)) if keep_inputs else adv
    return _label(adv, probs, labels.to(device), label_rule)


def _batch_size(inputs: torch.Tensor | Dataset[Any], device: torch.device) -> int:
    """128 inputs on CPU, 1024 on accelerators; fewer for large images: the attack holds
    about ten input-sized tensors per batch, each capped at 16 MB on CPU (256 MB on
    accelerators), so memory stays flat."""
    batch_size = 128 if device.type == "cpu" else 1024
    cap = (16 if device.type == "cpu" else 256) * 1024**2
    return max(1, min(batch_size, cap // max(_sample_bytes(inputs), 1)))


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """The model's parameters get no gradient within the block (restored after)."""
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)


def _label(
    adv: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, label_rule: LabelRule
) -> Neighbours:
    """The neighbours with their labels by ``label_rule`` and the share that left their
    class (by the paper's rule)."""
    nb_labels = probs.argmax(1) if len(probs) else labels
    ratio = float((nb_labels != labels).float().mean()) if len(labels) else 0.0
    if label_rule == "nearest_other" and len(probs):
        nb_labels = probs.scatter(1, labels[:, None], -1.0).argmax(1)
    return Neighbours(adv, nb_labels, probs, ratio)


def _sample_bytes(inputs: torch.Tensor | Dataset[Any]) -> int:
    """Bytes of one input as float32 (a dataset's first item is read to tell)."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs[0].numel()) * 4 if len(inputs) else 0
    if len(inputs) == 0:  # type: ignore[arg-type]
        return 0
    return int(torch.as_tensor(inputs[0][0]).numel()) * 4


def _attack_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    attack: AttackName,
    pgd_steps: int,
    pgd_step_size: float,
    normalization: Normalization | None,
    quantize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    if normalization is not None:
        mean: torch.Tensor | None = channel_view(normalization[0], x)
        std: torch.Tensor | None = channel_view(normalization[1], x)
        pixels = x * std + mean  # type: ignore[operator]
    else:
        mean = std = None
        pixels = x

    def to_model(p: torch.Tensor) -> torch.Tensor:
        return (p - mean) / std if mean is not None and std is not None else p

    low, high = (pixels - eps).clamp(0, 1), (pixels + eps).clamp(0, 1)
    step, n_steps = (eps, 1) if attack == "fgsm" else (pgd_step_size, pgd_steps)
    adv = pixels.detach().clone()
    for _ in range(n_steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(to_model(adv)), y)
            (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.max(torch.min(adv.detach() + step * grad.sign(), high), low)
    if quantize:
        # Round to the 1/255 grid; a level that rounding pushed outside the ball steps one
        # level back towards x, so the result stays on the grid and within eps.
        q = torch.round(adv * 255) / 255
        q = torch.where(q > high, q - 1 / 255, q)
        q = torch.where(q < low, q + 1 / 255, q)
        adv = torch.max(torch.min(q, high), low)
    with torch.inference_mode():
        probs = F.softmax(model(to_model(adv)), dim=1)
    return to_model(adv).detach(), probs.clone()
