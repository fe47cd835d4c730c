"""UNSIR (Tarun et al., IEEE TNNLS 2023): learn error-maximising noise for the forget
class, impair the model with it, then repair on retained data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset, TensorDataset

from .._utils import model_device
from ..checks import AtLeastOne, NonNegative, Positive, Seed, Whole
from ..data.split import UnlearningData, dataset_labels, read_item
from ..data.streaming import concat
from ..recipe import BNMode, RunOptions
from ..training import Batch, cross_entropy_loss, fit
from ._common import working_copy
from ._registry import register_method

__all__ = ["error_maximizing_noise", "unsir"]


class _Noise(nn.Module):
    """A trainable batch of noise (the only parameter of the noise search), held in the
    model's normalised input space like the authors' (standard normal at the start);
    ``pixels()`` maps it to the pixel inputs our models take."""

    def __init__(
        self, shape: tuple[int, ...], generator: torch.Generator, mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:  # fmt: skip
        super().__init__()
        self.images = nn.Parameter(torch.randn(shape, generator=generator))
        self.mean = nn.Buffer(mean)
        self.std = nn.Buffer(std)

    def pixels(self) -> torch.Tensor:
        pixels: torch.Tensor = self.images * self.std + self.mean
        return pixels


def _input_normalization(model: nn.Module, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(mean, std)`` of the model's own input normalisation (``model.normalize``) as
    ``(1, C, 1, 1)`` tensors, or ``(0, 1)`` for a model without one."""
    normalize = getattr(model, "normalize", None)
    mean, std = getattr(normalize, "mean", None), getattr(normalize, "std", None)
    if isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        return mean.detach().reshape(1, -1, 1, 1).cpu(), std.detach().reshape(1, -1, 1, 1).cpu()
    return torch.zeros(1, channels, 1, 1), torch.ones(1, channels, 1, 1)


def error_maximizing_noise(
    model: nn.Module,
    target: int,
    shape: tuple[int, ...],
    *,
    steps: int,
    lr: float,
    l2_weight: float,
    seed: int,
) -> torch.Tensor:
    """Noise inputs (pixels) that maximise the frozen ``model``'s cross-entropy for class
    ``target``: Adam on ``-CE(model(n), target) + l2_weight * mean_i ||n_i||^2`` (full batch
    per step), with ``n`` in the model's normalised input space as in the authors' code.
    Runs through the shared training loop with the noise as the trained module.

    Args:
        model: the classifier (not modified).
        target: the class the noise is labelled with.
        shape: ``(n, C, H, W)`` of the noise batch.
        steps: Adam steps.
        lr: Adam's learning rate.
        l2_weight: the weight of the noise's squared norm.
        seed: seeds the initial noise.

    Returns:
        The noise as pixels, detached, on the model's device.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> noise = error_maximizing_noise(net, 1, (3, 1, 2, 2), steps=5, lr=0.1,
        ...                                l2_weight=0.1, seed=0)
        >>> noise.shape, noise.requires_grad
        (torch.Size([3, 1, 2, 2]), False)
    """
    device = model_device(model)
    frozen = working_copy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    mean, std = _input_normalization(model, shape[1])
    noise = _Noise(shape, torch.Generator().manual_seed(seed), mean, std).to(device)
    labels = torch.full((shape[0],), target, dtype=torch.long)

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        assert isinstance(module, _Noise)
        images = module.images
        out = frozen(module.pixels())
        return -F.cross_entropy(out, batch[0]) + l2_weight * images.pow(2).flatten(1).sum(1).mean()

    # shard=False: the loss is over the whole noise batch (a parameter), not per sample
    fit(noise, (labels,), loss_fn, epochs=steps, lr=lr, optimizer="adam", momentum=0.0,
        batch_size=shape[0], seed=seed, desc="unsir noise", shard=False)  # fmt: skip
    return noise.pixels().detach()


@register_method("unsir", cost="retain")
def unsir(
    model: nn.Module,
    data: UnlearningData,
    *,
    noise_samples: AtLeastOne = 256,
    noise_steps: AtLeastOne = 100,
    noise_lr: Positive = 0.1,
    noise_l2_weight: NonNegative = 0.1,
    retain_per_class: AtLeastOne = 1000,
    impair_epochs: Whole = 1,
    impair_lr: Positive = 0.02,
    repair_epochs: Whole = 1,
    repair_lr: Positive = 0.01,
    batch_size: AtLeastOne = 256,
    seed: Seed = 0,
    bn: BNMode = "train",
    options: RunOptions = RunOptions(),
) -> nn.Module:
    """UNSIR: for each forgotten class learn a batch of error-maximising noise (labelled with
    that class), train on it together with a few samples per retained class (impair), then
    train on those retained samples alone (repair). Needs no D_f beyond its class label.

    Tarun, Chundawat, Mandal and Kankanhalli, "Fast Yet Effective Machine Unlearning",
    IEEE TNNLS 2023. Defaults from the authors' code: 256 noise images, Adam lr 0.1 for
    5 x 20 steps with L2 weight 0.1; impair 1 epoch Adam lr 0.02, repair 1 epoch Adam lr
    0.01, batch 256, 1000 retained samples per class. The noise is learnt in the model's
    normalised input space (standard normal at the start) and is not clipped, as in their
    code; it is fed to the model as the pixels that normalise to it.

    Args:
        model: the original classifier; never modified.
        data: the class split; ``data.retain`` and the forget classes are used.
        noise_samples: noise images per forgotten class.
        noise_steps: Adam steps of the noise search.
        noise_lr: the noise search's learning rate.
        noise_l2_weight: the noise search's L2 weight.
        retain_per_class: retained samples per class used in impair and repair (seeded
            choice).
        impair_epochs: epochs of the impair phase (Adam).
        impair_lr: the impair phase's learning rate.
        repair_epochs: epochs of the repair phase (Adam).
        repair_lr: the repair phase's learning rate.
        batch_size: batch size of both phases.
        seed: noise initialisation, retained subset, batch order.
        bn: BatchNorm statistics ("train" or "freeze").
        options: progress bar and speed options.

    Returns:
        A copy impaired with the error-maximising noise and repaired on D_r, in eval mode.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearn, unlearning_stats
        >>> data, net = toy_problem()
        >>> new = unlearn("unsir", net, data, noise_samples=8, noise_steps=2, retain_per_class=5)
        >>> unlearning_stats(new)  # the impair and repair steps
        {'steps': 4}
    """
    shape = tuple(read_item(data.forget, 0)[0].shape)
    yr = dataset_labels(data.retain)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(yr), generator=generator)
    chosen = (
        torch.cat([order[yr[order] == c][:retain_per_class] for c in range(data.num_classes)])
        .sort()
        .values
    )
    kept = Subset(data.retain, chosen.tolist())  # retain_per_class of each class
    noises, labels = [], []
    for i, c in enumerate(sorted(data.forget_classes)):
        noise = error_maximizing_noise(
            model, c, (noise_samples, *shape), steps=noise_steps, lr=noise_lr,
            l2_weight=noise_l2_weight, seed=seed + 1 + i,
        )  # fmt: skip
        noises.append(noise.cpu())
        labels.append(torch.full((noise_samples,), c, dtype=torch.long))
    unlearned = working_copy(model)
    noise_set = TensorDataset(torch.cat(noises), torch.cat(labels))
    fit(unlearned, concat(noise_set, kept), cross_entropy_loss,
        epochs=impair_epochs, lr=impair_lr, optimizer="adam", batch_size=batch_size, seed=seed,
        bn=bn, options=options, desc="unsir impair")  # fmt: skip
    fit(unlearned, kept, cross_entropy_loss, epochs=repair_epochs, lr=repair_lr,
        optimizer="adam", batch_size=batch_size, seed=seed + 1, bn=bn, options=options,
        desc="unsir repair")  # fmt: skip
    unlearned.eval()
    return unlearned
