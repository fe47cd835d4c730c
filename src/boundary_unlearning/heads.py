"""The classification head of any classifier, the features it reads, and the layers below it.

Every method that trains or widens "the final layer", and every metric that looks below it
(the feature probe), finds that layer the same way: the last registered ``nn.Linear`` with
one output per class, or the one the user names. :func:`layers_in_order` lists the layers
that hold parameters in the order a forward pass runs them, whatever order they were
registered in, so "the upper half of the network" means the same for any architecture.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ._utils import eval_mode, model_device
from .data.streaming import input_batches
from .errors import ModelError

__all__ = ["find_head", "frozen_below", "head_inputs", "layers_in_order"]


def find_head(model: nn.Module, num_classes: int, head: str | None = None) -> tuple[str, nn.Linear]:
    """The final ``nn.Linear`` producing the ``num_classes`` logits, by name or automatically.

    Automatic search takes the last registered ``nn.Linear`` with ``num_classes`` outputs.

    Args:
        model: the classifier.
        num_classes: the number of logits.
        head: the head's dotted name, or ``None`` to search.

    Returns:
        ``(name, layer)``.

    Raises:
        ModelError: no such module, not an ``nn.Linear``, or none found.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> find_head(net, 3)
        ('2', Linear(in_features=4, out_features=3, bias=True))
    """
    if head is not None:
        try:
            module = model.get_submodule(head)
        except AttributeError:
            names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            raise ModelError(
                f"the model has no module '{head}'; its linear layers are: {', '.join(names)}"
            ) from None
        if not isinstance(module, nn.Linear):
            raise ModelError(
                f"head '{head}' is a {type(module).__name__}, not an nn.Linear; pass the name "
                "of the final classification layer"
            )
        return head, module
    found: tuple[str, nn.Linear] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = (name, module)
    if found is None:
        raise ModelError(
            f"could not find the final nn.Linear layer with {num_classes} outputs; pass "
            "head='<name of the classification layer>' (e.g. head='fc')"
        )
    return found


def head_inputs(
    model: nn.Module,
    inputs: torch.Tensor | Dataset[Any],
    *,
    num_classes: int,
    head: str | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """What the head reads: the input of the final ``nn.Linear`` (:func:`find_head`) for
    every sample of ``inputs``, in eval mode (modes restored), flattened to one row each.

    These are the features a fresh classifier would be fitted on: anything the model knows
    about a class beyond its head's weights is in them.

    Args:
        model: the classifier.
        inputs: a tensor, or a dataset read batch by batch.
        num_classes: the number of logits (finds the head).
        head: the head's dotted name, or ``None`` to search.
        batch_size: inference batch (default: 128 on CPU, 1024 on accelerators).

    Returns:
        ``(len(inputs), d)`` features on the CPU, float32.

    Raises:
        ModelError: no head is found.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> head_inputs(net, torch.zeros(5, 2), num_classes=3).shape
        torch.Size([5, 4])
    """
    _, layer = find_head(model, num_classes, head)
    device = model_device(model)
    if batch_size is None:
        batch_size = 128 if device.type == "cpu" else 1024
    grabbed: list[torch.Tensor] = []
    hook = layer.register_forward_hook(
        lambda _m, i, _o: grabbed.append(i[0].detach().flatten(1).float().cpu())
    )
    try:
        with eval_mode(model), torch.inference_mode():
            for x in input_batches(inputs, batch_size, device):
                model(x)
    finally:
        hook.remove()
    if not grabbed:
        return torch.zeros((0, layer.in_features))
    return torch.cat(grabbed)


def layers_in_order(model: nn.Module, sample: torch.Tensor) -> list[nn.Module]:
    """The modules that hold parameters of their own, in the order one forward pass of
    ``sample`` first calls them (eval mode, no gradients; modes restored). A module that
    owns a parameter its children read (a vision transformer's class token) comes first, as
    its forward begins before theirs; a module the pass does not call itself (attention's
    output projection, whose weight its parent reads) takes its nearest called ancestor's
    place, after it.

    Args:
        model: the network.
        sample: a batch it accepts (one or two samples are enough).

    Returns:
        The modules, input side first.

    Example:
        >>> class Late(nn.Module):  # the head is registered first but runs last
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.head, self.body = nn.Linear(4, 3), nn.Linear(2, 4)
        ...     def forward(self, x):
        ...         return self.head(self.body(x))
        >>> net = Late()
        >>> [type(m).__name__ for m in layers_in_order(net, torch.zeros(1, 2))]
        ['Linear', 'Linear']
        >>> layers_in_order(net, torch.zeros(1, 2))[0] is net.body
        True
    """
    named = list(model.named_modules())
    called: dict[int, int] = {}

    def seen(module: nn.Module, _inputs: Any) -> None:
        called.setdefault(id(module), len(called))

    hooks = [m.register_forward_pre_hook(seen) for _, m in named]
    try:
        with eval_mode(model), torch.inference_mode():
            model(sample.to(model_device(model)))
    finally:
        for hook in hooks:
            hook.remove()
    by_name = dict(named)
    place: list[tuple[int, int, nn.Module]] = []
    for rank, (name, module) in enumerate(named):
        if next(module.parameters(recurse=False), None) is None:
            continue
        parts = name.split(".") if name else []
        while id(by_name[".".join(parts)]) not in called:  # the root is always called
            parts.pop()
        place.append((called[id(by_name[".".join(parts)])], rank, module))
    return [module for *_, module in sorted(place, key=lambda t: (t[0], t[1]))]


@contextlib.contextmanager
def frozen_below(
    model: nn.Module, inputs: torch.Tensor | Dataset[Any], share: float
) -> Iterator[None]:
    """Within the block only the upper ``share`` of ``model``'s parameterised layers train:
    the layers are ordered by a forward pass of the first input
    (:func:`~boundary_unlearning.heads.layers_in_order`), the top ``ceil(share * n)`` of
    them (the head at least) keep ``requires_grad``, the others are frozen and restored
    after. Backward passes then stop at the lowest trained layer.

    Args:
        model: the network (changed for the block's duration only).
        inputs: the samples; the first one runs the ordering pass.
        share: the share of the layers, counted from the head down, that train (1: all).

    Returns:
        A context manager.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 3))
        >>> with frozen_below(net, torch.zeros(1, 2), 0.5):
        ...     [p.requires_grad for p in net.parameters()]
        [False, False, True, True, True, True]
        >>> all(p.requires_grad for p in net.parameters())
        True
    """
    first = next(input_batches(inputs, 1, model_device(model)))
    layers = layers_in_order(model, first)
    keep = max(1, math.ceil(share * len(layers)))
    frozen = [
        p for layer in layers[: len(layers) - keep]
        for p in layer.parameters(recurse=False) if p.requires_grad
    ]  # fmt: skip
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
