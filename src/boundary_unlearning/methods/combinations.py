"""The two orders of combining Boundary Expanding and Boundary Shrink (from the slides of
Chen et al., "Boundary Unlearning", CVPR 2023)."""

from __future__ import annotations

from torch import nn

from ..attacks import AttackName, Normalization
from ..data.split import UnlearningData
from ..training import BNMode
from ._registry import register_method, set_unlearning_stats, unlearning_stats
from .boundary_expanding import boundary_expanding
from .boundary_shrink import boundary_shrink

__all__ = ["expand_shrink", "shrink_expand"]


@register_method("expand_shrink", cost="forget")
def expand_shrink(
    model: nn.Module,
    data: UnlearningData,
    *,
    expand_epochs: int = 10,
    expand_lr: float = 1e-5,
    shrink_epochs: int = 10,
    shrink_lr: float = 1e-5,
    eps: float = 0.1,
    attack: AttackName = "fgsm",
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
    bn: BNMode = "train",
    head: str | None = None,
    normalization: Normalization | None = None,
    progress: bool = False,
) -> nn.Module:
    """Expanding then Shrink: Boundary Expanding, then Boundary Shrink on its result (the
    neighbour search runs on the expanded-and-pruned model). The slides name this order the
    more promising combination.

    Chen et al., "Boundary Unlearning", CVPR 2023 (slides). Each stage keeps the paper's
    defaults: ``expand_*`` for Boundary Expanding, ``shrink_*``, ``eps`` and ``attack`` for
    Boundary Shrink; ``momentum``, ``batch_size``, ``seed`` and ``bn`` are shared. ``head``:
    the final ``nn.Linear`` for Expanding; ``normalization``: see :func:`boundary_shrink`.
    Records Boundary Shrink's ``attack_success_ratio``.
    """
    expanded = boundary_expanding(
        model, data, epochs=expand_epochs, lr=expand_lr, momentum=momentum,
        batch_size=batch_size, seed=seed, bn=bn, head=head, progress=progress,
    )  # fmt: skip
    out = boundary_shrink(
        expanded, data, eps=eps, attack=attack, epochs=shrink_epochs, lr=shrink_lr,
        momentum=momentum, batch_size=batch_size, seed=seed, bn=bn,
        normalization=normalization, progress=progress,
    )  # fmt: skip
    return out


@register_method("shrink_expand", cost="forget")
def shrink_expand(
    model: nn.Module,
    data: UnlearningData,
    *,
    shrink_epochs: int = 10,
    shrink_lr: float = 1e-5,
    eps: float = 0.1,
    attack: AttackName = "fgsm",
    expand_epochs: int = 10,
    expand_lr: float = 1e-5,
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
    bn: BNMode = "train",
    head: str | None = None,
    normalization: Normalization | None = None,
    progress: bool = False,
) -> nn.Module:
    """Shrink then Expanding: Boundary Shrink, then Boundary Expanding on its result.

    Chen et al., "Boundary Unlearning", CVPR 2023 (slides). Hyperparameters as for
    :func:`expand_shrink`. Records Boundary Shrink's ``attack_success_ratio``.
    """
    shrunk = boundary_shrink(
        model, data, eps=eps, attack=attack, epochs=shrink_epochs, lr=shrink_lr,
        momentum=momentum, batch_size=batch_size, seed=seed, bn=bn,
        normalization=normalization, progress=progress,
    )  # fmt: skip
    out = boundary_expanding(
        shrunk, data, epochs=expand_epochs, lr=expand_lr, momentum=momentum,
        batch_size=batch_size, seed=seed, bn=bn, head=head, progress=progress,
    )  # fmt: skip
    set_unlearning_stats(out, unlearning_stats(shrunk))
    return out
