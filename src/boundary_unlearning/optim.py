"""What a training recipe sets up around the loop in :mod:`boundary_unlearning.training`:
:func:`make_optimizer` builds the optimiser the recipe names and :func:`set_bn_mode` puts the
model in train mode with BatchNorm training or frozen as the recipe says. (A recipe's values
are checked by :meth:`~boundary_unlearning.recipe.Recipe.check`.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .errors import HyperparameterError
from .recipe import BNMode, OptimizerName

__all__ = ["make_optimizer", "set_bn_mode"]


def set_bn_mode(model: nn.Module, bn: BNMode) -> None:
    """Put the model in train mode; with ``bn="freeze"`` BatchNorm layers stay in eval mode
    (running statistics are used and not updated; their affine weights still train).

    Args:
        model: the model, changed in place.
        bn: ``"train"`` or ``"freeze"``.

    Raises:
        HyperparameterError: another ``bn``.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> set_bn_mode(net, "freeze"); net[1].training
        False
    """
    model.train()
    if bn == "freeze":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    elif bn != "train":
        raise HyperparameterError(f"bn='{bn}' is not one of 'train', 'freeze'")


def make_optimizer(
    params: Iterable[nn.Parameter],
    optimizer: OptimizerName,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """The optimiser a recipe names.

    Args:
        params: the parameters to optimise.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: the learning rate.
        momentum: SGD momentum (Adam ignores it).
        weight_decay: the L2 penalty.

    Returns:
        ``torch.optim.SGD`` or ``torch.optim.Adam``.

    Raises:
        HyperparameterError: another optimiser name.

    Example:
        >>> opt = make_optimizer(nn.Linear(2, 2).parameters(), "adam", lr=0.1, momentum=0.0,
        ...                      weight_decay=0.0)
        >>> type(opt).__name__, opt.defaults["lr"]
        ('Adam', 0.1)
    """
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise HyperparameterError(f"optimizer='{optimizer}' is not one of 'sgd', 'adam'")
