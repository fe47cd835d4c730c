"""Fisher Forgetting (Golatkar et al., CVPR 2020): Gaussian noise scaled by the inverse
diagonal Fisher information of the remaining data."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import Dataset

from .._utils import eval_mode, model_device
from ..checks import AtLeastOne, Positive, Seed
from ..data.split import UnlearningData
from ..data.streaming import input_batches, inputs_and_labels
from ..progress import progress_bar
from ..recipe import RunOptions
from ._common import find_head, working_copy
from ._registry import register_method

__all__ = ["diagonal_fisher", "fisher"]


def diagonal_fisher(
    model: nn.Module,
    x: torch.Tensor | Dataset[Any],
    *,
    chunk_size: int = 64,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """The diagonal of the Fisher information of ``model`` (eval mode) on inputs ``x``:
    ``mean_i sum_y p(y|x_i) (d log p(y|x_i) / d theta)^2`` with the model's own predictive
    distribution (the "true" Fisher, as in Golatkar et al.'s code), from per-sample gradients.

    Args:
        model: the classifier.
        x: the inputs (D_r): a tensor, or a dataset read ``chunk_size`` at a time.
        chunk_size: samples per vectorised per-sample-gradient batch.
        progress: show a progress bar.

    Returns:
        Parameter name -> diagonal Fisher, shaped like the parameter (>= 0).

    Example:
        >>> f = diagonal_fisher(nn.Linear(2, 3), torch.rand(4, 2))
        >>> {name: tuple(v.shape) for name, v in f.items()}, all((v >= 0).all() for v in f.values())
        ({'weight': (3, 2), 'bias': (3,)}, True)
    """
    device = model_device(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def sample_loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    with eval_mode(model):
        for xb in progress_bar(
            input_batches(x, chunk_size, device), desc="fisher", show=progress, leave=False,
            total=math.ceil(len(x) / chunk_size), unit="batch",  # type: ignore[arg-type]
        ):  # fmt: skip
            with torch.no_grad():
                probs = F.softmax(functional_call(model, (params, buffers), (xb,)), dim=1)
            for k in range(probs.shape[1]):
                yk = torch.full((len(xb),), k, dtype=torch.long, device=device)
                grads = per_sample(params, xb, yk)
                for n, g in grads.items():
                    w = probs[:, k].view(-1, *([1] * (g.dim() - 1)))
                    total[n] += (w * g.pow(2)).sum(dim=0)
    return {n: t / len(x) for n, t in total.items()}  # type: ignore[arg-type]


@register_method("fisher", cost="retain")
def fisher(
    model: nn.Module,
    data: UnlearningData,
    *,
    noise_scale: Positive = 1e-6,
    max_variance: Positive = 1e3,
    head_max_variance: Positive = 1e2,
    zero_forget_head: bool = True,
    chunk_size: AtLeastOne = 64,
    seed: Seed = 0,
    head: str | None = None,
    options: RunOptions = RunOptions(),
) -> nn.Module:
    """Fisher Forgetting: add Gaussian noise to every weight with variance
    ``noise_scale / F_ii`` (F the diagonal Fisher information of D_r), so weights that
    matter little for D_r, which the forget class may rely on, are scrambled.

    Golatkar, Achille and Soatto, "Eternal Sunshine of the Spotless Net: Selective
    Forgetting in Deep Networks", CVPR 2020; a baseline of Chen et al., CVPR 2023. Follows
    the authors' code: the inverse Fisher is clamped at ``max_variance`` (``head_max_variance``
    for the classification layer), averaged over the input dimension of each weight matrix,
    multiplied by 10 for the head and for 1-D parameters (biases, BatchNorm), and the head
    rows of the forgotten classes are set to 0 with tiny variance 1e-4.

    Args:
        model: the original classifier; never modified.
        data: the class split; the Fisher is taken on ``data.retain``.
        noise_scale: the paper's alpha, the scale of the noise (1e-6 as in the authors'
            code).
        max_variance: clamp of the inverse Fisher (authors' 1e3).
        head_max_variance: clamp of the inverse Fisher of the head (authors' 1e2).
        zero_forget_head: zero the forgotten classes' head rows, as in the authors' class
            forgetting code.
        chunk_size: samples per vectorised per-sample-gradient batch (memory vs speed).
        seed: the noise.
        head: dotted name of the final ``nn.Linear`` when automatic search fails.
        options: progress bar and speed options.

    Returns:
        A copy with the noise added (no training), in eval mode.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn
        >>> data, net = toy_problem()
        >>> noisy = unlearn("fisher", net, data)  # the forgotten class's head rows are set to 0
        >>> row = lambda m: float(m[-1].weight.detach()[data.forget_classes[0]].abs().max())
        >>> row(noisy) < 0.1 < row(net)
        True
    """
    xr, _ = inputs_and_labels(data.retain)
    unlearned = working_copy(model)
    head_name, _ = find_head(unlearned, data.num_classes, head)
    head_params = {f"{head_name}.weight", f"{head_name}.bias"}
    information = diagonal_fisher(unlearned, xr, chunk_size=chunk_size, progress=options.progress)
    generator = torch.Generator().manual_seed(seed)
    forget_rows = torch.tensor(sorted(data.forget_classes), dtype=torch.long)
    with torch.no_grad():
        for name, param in unlearned.named_parameters():
            is_head = name in head_params
            var = (1.0 / (information[name] + 1e-8)).clamp(max=max_variance)
            if is_head:
                var = var.clamp(max=head_max_variance)
            var = noise_scale * var
            if param.dim() > 1:
                var = var.mean(dim=1, keepdim=True).expand_as(param).clone()
            mu = param.detach().clone()
            if is_head and zero_forget_head:
                rows = forget_rows.to(param.device)
                mu[rows] = 0
                var[rows] = 1e-4
            if is_head or param.dim() == 1:
                var = var * 10
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(mu + var.sqrt() * noise.to(param.device))
    unlearned.eval()
    return unlearned
