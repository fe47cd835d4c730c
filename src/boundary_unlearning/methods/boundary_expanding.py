"""Boundary Expanding (Chen et al., CVPR 2023, Sec. 4.2)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.split import UnlearningData
from ..training import BNMode, check_non_negative, check_positive, cross_entropy_loss, fit
from ._common import check_inputs, find_head, forget_tensors, replace_module, working_copy
from ._registry import register_method

__all__ = ["boundary_expanding", "prune_head", "widen_head"]


def widen_head(head: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """A copy of ``head`` with one extra (shadow) output: rows 0..K-1 copied, the shadow row
    Xavier-normal initialised (over the whole K+1 matrix, as in the authors' code), bias 0."""
    k, d = head.out_features, head.in_features
    wide = nn.Linear(d, k + 1, bias=head.bias is not None)
    wide = wide.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        init = torch.empty(k + 1, d, dtype=head.weight.dtype)
        nn.init.xavier_normal_(init, generator=generator)
        wide.weight.copy_(init.to(head.weight.device))
        wide.weight[:k] = head.weight
        if head.bias is not None and wide.bias is not None:
            wide.bias.zero_()
            wide.bias[:k] = head.bias
    return wide


def prune_head(wide: nn.Linear) -> nn.Linear:
    """Drop the shadow output: a K-way layer holding the (trained) first K rows."""
    k = wide.out_features - 1
    head = nn.Linear(wide.in_features, k, bias=wide.bias is not None)
    head = head.to(device=wide.weight.device, dtype=wide.weight.dtype)
    with torch.no_grad():
        head.weight.copy_(wide.weight[:k])
        if wide.bias is not None and head.bias is not None:
            head.bias.copy_(wide.bias[:k])
    return head


@register_method("boundary_expanding", cost="forget")
def boundary_expanding(
    model: nn.Module,
    data: UnlearningData,
    *,
    epochs: int = 10,
    lr: float = 1e-5,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    bn: BNMode = "train",
    head: str | None = None,
    amp: bool = False,
    channels_last: bool = False,
    compile_model: bool = False,
    progress: bool = False,
) -> nn.Module:
    """Boundary Expanding: add a shadow output neuron, fine-tune the forget data into it,
    then prune it, leaving a K-way model.

    Chen et al., "Boundary Unlearning", CVPR 2023.

    epochs, lr, momentum, weight_decay, batch_size: SGD fine-tuning of the whole widened
    network on D_f, every label set to the shadow class (paper: 10, 1e-5, 0.9, 0, 64).
    seed: the shadow row's initialisation and the batch order.
    bn: "train" (authors' code) or "freeze" BatchNorm statistics during fine-tuning.
    amp, channels_last, compile_model: opt-in speed options of the fine-tuning, for CUDA
    (bfloat16 autocast, channels-last memory format, ``torch.compile``; see ``fit``).
    head: dotted name of the final ``nn.Linear`` when automatic search fails.
    """
    check_positive(lr=lr)
    check_non_negative(momentum=momentum, weight_decay=weight_decay)
    check_inputs(model, data, "boundary_expanding")
    x, _ = forget_tensors(data, "boundary_expanding")
    k = data.num_classes
    unlearned = working_copy(model)
    name, original_head = find_head(unlearned, k, head)
    generator = torch.Generator().manual_seed(seed)
    replace_module(unlearned, name, widen_head(original_head, generator))
    shadow = torch.full((len(x),), k, dtype=torch.long)
    fit(
        unlearned,
        (x, shadow),
        cross_entropy_loss,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        bn=bn,
        progress=progress,
        amp=amp,
        channels_last=channels_last,
        compile_model=compile_model,
        desc="boundary_expanding",
    )
    wide = unlearned.get_submodule(name)
    assert isinstance(wide, nn.Linear)
    replace_module(unlearned, name, prune_head(wide))
    unlearned.eval()
    return unlearned
