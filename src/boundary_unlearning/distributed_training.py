"""The distributed training step that :func:`~boundary_unlearning.training.fit` runs under
torchrun: :class:`DistributedFit` (made by :func:`distributed_fit`; ``None`` in a single
process) gives each rank its share of every global batch, weights the rank's loss by that
share and sums the gradients over the ranks in one all-reduce per dtype, and
:func:`synced_batchnorm` makes BatchNorm layers normalise with the global batch's statistics
through a differentiable all-reduce. The rank helpers and collectives it builds on are in
:mod:`boundary_unlearning.distributed`.

Why not ``DistributedDataParallel``? DDP needs every loss to be exactly one forward through
its wrapper followed by one ``backward()``. The methods here compute losses with several
forwards per step, frozen teachers, ``torch.autograd.grad`` with ``create_graph`` (the
curvature regulariser), parameter subsets and gradient masks. :class:`DistributedFit` does
DDP's arithmetic (broadcast the weights from rank 0, all-reduce the gradients) after the
step's backward, which works for every such loss; it forgoes DDP's overlap of communication
with the backward pass. See ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .distributed import (
    _all_reduce_,
    _comm_device,
    all_reduce_sum,
    broadcast_module,
    is_distributed,
    shard_range,
    world_size,
)

__all__ = ["DistributedFit", "distributed_fit", "synced_batchnorm"]


# --- the all-reduce autograd differentiates through -----------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce: the gradient of a sum over ranks is the summed gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        _all_reduce_(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _AllReduceSum.apply(grad)
        return out


def _reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = _AllReduceSum.apply(tensor)
    return out


# --- BatchNorm over the global batch -----------------------------------------------------------


def _synced_bn_forward(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``module``'s training-mode forward with batch statistics over every rank's shard
    (two-pass mean and variance, like one process on the whole batch); running statistics
    are updated exactly as ``nn.BatchNorm*`` does."""
    training = module.training or (module.running_mean is None and module.running_var is None)
    if not training:
        return type(module).forward(module, x)
    factor = 0.0 if module.momentum is None else module.momentum
    if module.training and module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        if module.momentum is None:
            factor = 1.0 / float(module.num_batches_tracked)
    channels = x.shape[1]
    dims = [0, *range(2, x.dim())]
    view = [1, channels] + [1] * (x.dim() - 2)
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    local_count = xf.new_full((1,), x.numel() // max(channels, 1))
    totals = _reduce_sum(torch.cat([xf.sum(dims), local_count]))
    count = totals[channels:].detach()
    mean = totals[:channels] / count
    centered = xf - mean.view(view)
    var = _reduce_sum((centered * centered).sum(dims)) / count
    out = centered * torch.rsqrt(var + module.eps).view(view)
    if module.weight is not None and module.bias is not None:
        out = out * module.weight.view(view) + module.bias.view(view)
    if module.training and module.running_mean is not None and module.running_var is not None:
        with torch.no_grad():
            unbiased = torch.where(count > 1, var * count / (count - 1).clamp_min(1), var)
            module.running_mean.mul_(1 - factor).add_(mean.detach().to(module.running_mean.dtype),
                                                      alpha=factor)  # fmt: skip
            module.running_var.mul_(1 - factor).add_(unbiased.to(module.running_var.dtype),
                                                     alpha=factor)  # fmt: skip
    return out.to(x.dtype)


@contextlib.contextmanager
def synced_batchnorm(model: nn.Module) -> Iterator[None]:
    """Within the block, every BatchNorm layer of ``model`` in training mode normalises with
    the statistics of the global batch (all ranks' shards) instead of its own shard. The
    modules keep their class, parameters and state_dict; outside torchrun nothing changes.
    Every rank must run the same forwards (a collective per layer and pass).

    Args:
        model: the model whose BatchNorm layers are synchronised.

    Returns:
        A context manager.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> with synced_batchnorm(net):  # one rank: the layers are unchanged
        ...     net(torch.rand(4, 2)).shape
        torch.Size([4, 2])
    """
    if not is_distributed():
        yield
        return
    patched = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in patched:
        module.forward = types.MethodType(_synced_bn_forward, module)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for module in patched:
            with contextlib.suppress(AttributeError):
                del module.forward


# --- the training step ----------------------------------------------------------------------------

Batch = tuple[torch.Tensor, ...]


def _reduce_gradients(params: Sequence[nn.Parameter], *, average: bool) -> None:
    """Sum (or average) ``.grad`` over ranks in one all-reduce per dtype. A parameter whose
    gradient is ``None`` on every rank stays ``None`` (as the optimiser expects); one that
    has a gradient on some rank gets zeros where it had none."""
    groups: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault(p.dtype, []).append(p)
    comm = _comm_device()
    for dtype, group in groups.items():
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(comm)
             for p in group]
            + [torch.tensor([p.grad is not None for p in group], dtype=dtype, device=comm)]
        )  # fmt: skip
        dist.all_reduce(flat)
        if average:
            flat /= world_size()
        present = (flat[-len(group) :] > 0).tolist()  # one host sync
        offset = 0
        for p, has_grad in zip(group, present, strict=True):
            size = p.numel()
            if has_grad:
                reduced = flat[offset : offset + size].view_as(p).to(p.device)
                if p.grad is None:
                    p.grad = reduced.clone()
                else:
                    p.grad.copy_(reduced)
            offset += size


class DistributedFit:
    """What :func:`~boundary_unlearning.training.fit` needs to train one model on all ranks.

    ``shard=True``: each rank takes its :func:`torch.tensor_split` share of every global
    batch, weights its loss by ``len(share) / len(batch)`` and the gradients are summed, so
    a loss that is a mean over the batch's samples (plus terms of the parameters alone, such
    as an L1 penalty) gets exactly the single-process gradient; BatchNorm uses global-batch
    statistics. ``shard=False``: every rank computes the whole batch (for losses that are not
    a mean over samples) and the gradients are averaged, which keeps the ranks in step.
    Construction copies rank 0's weights to every rank, as DDP does.

    Args:
        model: the model being trained.
        params: the parameters that train.
        shard: split each batch over the ranks (see above).

    Example:
        >>> import tempfile
        >>> store = dist.FileStore(tempfile.mktemp(), 1)  # a one-rank group for the example
        >>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        >>> model = nn.Linear(2, 2)
        >>> fitter = DistributedFit(model, list(model.parameters()), shard=True)
        >>> x, y = torch.rand(4, 2), torch.tensor([0, 1, 0, 1])
        >>> (xb, yb), weight = fitter.share((x[[3, 1]], y[[3, 1]]))
        >>> yb.tolist(), weight  # one rank: the whole batch
        ([1, 1], 1.0)
        >>> loss = fitter.backward(nn.functional.cross_entropy(model(xb), yb), weight)
        >>> model.weight.grad.shape
        torch.Size([2, 2])
        >>> fitter.close()
        >>> dist.destroy_process_group()
    """

    def __init__(self, model: nn.Module, params: Sequence[nn.Parameter], *, shard: bool) -> None:
        self.model = model
        self.params = list(params)
        self.shard = shard
        broadcast_module(model)
        self._bn = contextlib.ExitStack()
        if shard:
            self._bn.enter_context(synced_batchnorm(model))

    def share(self, batch: Sequence[torch.Tensor]) -> tuple[Batch, float]:
        """This rank's part of the global ``batch`` and its weight ``len(part) / len(batch)``
        (the whole batch and weight 1 with ``shard=False``).

        Args:
            batch: the global batch's tensors, indexed together (e.g. ``(x, y)``).

        Returns:
            ``(this rank's part of each tensor, weight)``.

        Example:
            >>> fitter = DistributedFit(nn.Linear(2, 2), [], shard=True)  # outside torchrun
            >>> (part,), weight = fitter.share((torch.tensor([4, 0]),))
            >>> part.tolist(), weight
            ([4, 0], 1.0)
        """
        if not self.shard:
            return tuple(batch), 1.0
        n = len(batch[0])
        start, stop = shard_range(n)
        return tuple(t[start:stop] for t in batch), (stop - start) / n

    def local_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows of the global batch ``idx`` that :meth:`share` gives this rank.

        Args:
            idx: the global batch's rows.

        Returns:
            This rank's rows.

        Example:
            >>> fitter = DistributedFit(nn.Linear(2, 2), [], shard=True)  # outside torchrun
            >>> fitter.local_rows(torch.tensor([4, 0, 2])).tolist()
            [4, 0, 2]
        """
        if not self.shard:
            return idx
        start, stop = shard_range(len(idx))
        return idx[start:stop]

    def total_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """Per-rank counts over this rank's share, summed into the global batch's.

        Args:
            counts: this rank's counts.

        Returns:
            The global batch's counts.

        Example:
            >>> fitter = DistributedFit(nn.Linear(2, 2), [], shard=True)  # outside torchrun
            >>> fitter.total_counts(torch.tensor([3, 5])).tolist()
            [3, 5]
        """
        return counts if not self.shard else all_reduce_sum(counts)

    def backward(self, loss: torch.Tensor, weight: float) -> torch.Tensor:
        """Backward ``weight * loss`` (this rank's loss on its :meth:`share`) and reduce the
        gradients over the ranks; returns the weighted loss (the ranks' values sum to the
        global batch's loss).

        A rank with an empty share must still run the forward and call this: BatchNorm's
        collectives need every rank, and a loss that draws its own batches (a retain
        sampler) must stay in step. Its contribution is zero.

        Args:
            loss: this rank's loss on its share.
            weight: the share's weight from :meth:`share`.

        Returns:
            The weighted loss.

        Example:
            >>> import tempfile
            >>> store = dist.FileStore(tempfile.mktemp(), 1)  # a one-rank group for the example
            >>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
            >>> model = nn.Linear(2, 2)
            >>> fitter = DistributedFit(model, list(model.parameters()), shard=True)
            >>> x, y = torch.rand(2, 2), torch.tensor([0, 1])
            >>> loss = nn.functional.cross_entropy(model(x), y)
            >>> torch.equal(fitter.backward(loss, 1.0), loss), model.bias.grad.shape
            (True, torch.Size([2]))
            >>> fitter.close()
            >>> dist.destroy_process_group()
        """
        if not self.shard:
            loss.backward()  # type: ignore[no-untyped-call]
            _reduce_gradients(self.params, average=True)
            return loss
        weighted = loss * weight
        weighted.backward()  # type: ignore[no-untyped-call]
        if weight == 0:
            for p in self.params:
                if p.grad is not None:
                    p.grad.zero_()
            weighted = torch.zeros_like(weighted)
        _reduce_gradients(self.params, average=False)
        return weighted

    def first_bad_step(self, first_bad: torch.Tensor) -> int:
        """The earliest step at which any rank's loss was not finite (-1: none).

        Args:
            first_bad: this rank's first non-finite step (-1: none), a 0-d tensor.

        Returns:
            The earliest over the ranks, or -1.

        Example:
            >>> import tempfile
            >>> store = dist.FileStore(tempfile.mktemp(), 1)  # a one-rank group for the example
            >>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
            >>> model = nn.Linear(2, 2)
            >>> fitter = DistributedFit(model, list(model.parameters()), shard=True)
            >>> fitter.first_bad_step(torch.tensor(-1)), fitter.first_bad_step(torch.tensor(7))
            (-1, 7)
            >>> fitter.close()
            >>> dist.destroy_process_group()
        """
        value = torch.where(first_bad < 0, torch.full_like(first_bad, 2**62), first_bad)
        value = value.reshape(1).clone()
        _all_reduce_(value, dist.ReduceOp.MIN)
        step = int(value.item())
        return -1 if step == 2**62 else step

    def total(self, running: torch.Tensor) -> torch.Tensor:
        """The epoch's summed loss over all ranks (what one process would have summed).

        Args:
            running: this rank's summed (weighted) loss.

        Returns:
            The sum over the ranks.

        Example:
            >>> fitter = DistributedFit(nn.Linear(2, 2), [], shard=True)  # outside torchrun
            >>> fitter.total(torch.tensor(2.5)).item()
            2.5
        """
        return running if not self.shard else all_reduce_sum(running)

    def close(self) -> None:
        """Restore the BatchNorm layers' own forward.

        Example:
            >>> fitter = DistributedFit(nn.Linear(2, 2), [], shard=True)
            >>> fitter.close()
        """
        self._bn.close()


def distributed_fit(
    model: nn.Module, params: Sequence[nn.Parameter], *, shard: bool = True
) -> DistributedFit | None:
    """A :class:`DistributedFit` inside a multi-rank process group, else ``None``.

    Args:
        model: the model being trained.
        params: the parameters that train.
        shard: split each batch over the ranks (see :class:`DistributedFit`).

    Returns:
        The :class:`DistributedFit`, or ``None`` in a single process.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> distributed_fit(model, list(model.parameters())) is None
        True
    """
    return DistributedFit(model, params, shard=shard) if is_distributed() else None
