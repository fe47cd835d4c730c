"""What a training recipe sets up around the loop in :mod:`boundary_unlearning.training`:
:func:`make_optimizer` builds the optimiser the recipe names and :func:`set_bn_mode` puts the
model in train mode with BatchNorm training or frozen as the recipe says. (A recipe's values
are checked by :meth:`~boundary_unlearning.recipe.Recipe.check`.)

The two optimisers, :class:`SGD` and :class:`Adam`, are the update rules of
``torch.optim.SGD`` and ``torch.optim.Adam`` with their defaults, in the same
``torch._foreach`` kernels (the same weights, bit for bit, tested against both of
torch.optim's paths). They are written here because every ``torch.optim.Optimizer``
imports ``torch._dynamo`` on its first use (its methods are wrapped to keep the compiler
out), with sympy and triton: +151 MB resident in each process that trains, a sixth of an
unlearning request's memory, for a compiler it never runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .errors import HyperparameterError
from .recipe import BNMode, OptimizerName

__all__ = ["SGD", "Adam", "make_optimizer", "set_bn_mode"]


class _Rule:
    """What the training loop uses of an optimiser: ``param_groups`` (one group; its
    ``"lr"`` may be changed between steps), ``zero_grad`` and ``step``."""

    def __init__(self, params: Iterable[nn.Parameter], **defaults: float) -> None:
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = [{"params": list(params), **defaults}]
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (``None``, or zeros with ``set_to_none=False``)."""
        for param in self.param_groups[0]["params"]:
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (all at once, in the
        ``torch._foreach`` kernels torch.optim uses on accelerators; on CPU these run tensor
        by tensor, the arithmetic of torch.optim's CPU path)."""
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        states = [self.state.setdefault(p, {}) for p in params]
        grads = [p.grad for p in params]
        if group["weight_decay"] != 0:  # the L2 penalty, added to the gradient by both rules
            grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
        self._update(params, grads, states, group)

    def _update(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, Any]],
        group: dict[str, Any],
    ) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({settings})"


class SGD(_Rule):
    """Stochastic gradient descent with momentum and an L2 penalty: the update of
    ``torch.optim.SGD`` (no dampening, no Nesterov).

    Example:
        >>> w = nn.Parameter(torch.tensor([1.0]))
        >>> opt = SGD([w], lr=0.5, momentum=0.9, weight_decay=0.0)
        >>> for _ in range(2):
        ...     opt.zero_grad(); (w * 2).sum().backward(); opt.step()
        >>> round(w.item(), 2)  # steps of 0.5 * 2, then 0.5 * (0.9 * 2 + 2)
        -1.9
    """

    def __init__(
        self, params: Iterable[nn.Parameter], *, lr: float, momentum: float, weight_decay: float
    ) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def _update(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, Any]],
        group: dict[str, Any],
    ) -> None:
        if group["momentum"] != 0:
            if any("momentum_buffer" not in state for state in states):  # a first step
                for grad, state in zip(grads, states, strict=True):
                    if "momentum_buffer" not in state:  # the buffer starts as the gradient
                        state["momentum_buffer"] = grad.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                grads = [state["momentum_buffer"] for state in states]
            else:
                bufs: list[torch.Tensor] = [state["momentum_buffer"] for state in states]
                torch._foreach_mul_(bufs, group["momentum"])
                torch._foreach_add_(bufs, grads, alpha=1)
                grads = bufs
        torch._foreach_add_(params, grads, alpha=-group["lr"])


class Adam(_Rule):
    """Adam (Kingma & Ba, 2015) with an L2 penalty added to the gradient: the update of
    ``torch.optim.Adam`` (betas 0.9 / 0.999, eps 1e-8, no AMSGrad).

    Example:
        >>> w = nn.Parameter(torch.tensor([1.0]))
        >>> opt = Adam([w], lr=0.1, weight_decay=0.0)
        >>> opt.zero_grad(); (w * 2).sum().backward(); opt.step()
        >>> round(w.item(), 4)  # Adam's first step is lr times the gradient's sign
        0.9
    """

    def __init__(self, params: Iterable[nn.Parameter], *, lr: float, weight_decay: float) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        self.betas, self.eps = (0.9, 0.999), 1e-8

    def _update(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, Any]],
        group: dict[str, Any],
    ) -> None:
        beta1, beta2 = self.betas
        for param, state in zip(params, states, strict=True):
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["step"] += 1
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        steps = [float(state["step"]) for state in states]
        step_sizes = [-group["lr"] / (1 - beta1**step) for step in steps]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, [(1 - beta2**step) ** 0.5 for step in steps])
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)


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
) -> SGD | Adam:
    """The optimiser a recipe names.

    Args:
        params: the parameters to optimise.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: the learning rate.
        momentum: SGD momentum (Adam ignores it).
        weight_decay: the L2 penalty.

    Returns:
        :class:`SGD` or :class:`Adam` (the updates of ``torch.optim.SGD`` and
        ``torch.optim.Adam``, without importing the compiler those import).

    Raises:
        HyperparameterError: another optimiser name.

    Example:
        >>> opt = make_optimizer(nn.Linear(2, 2).parameters(), "adam", lr=0.1, momentum=0.0,
        ...                      weight_decay=0.0)
        >>> type(opt).__name__, opt.defaults["lr"]
        ('Adam', 0.1)
    """
    if optimizer == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    raise HyperparameterError(f"optimizer='{optimizer}' is not one of 'sgd', 'adam'")
