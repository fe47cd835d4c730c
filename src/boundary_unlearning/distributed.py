"""Data-parallel training across processes with ``torch.distributed`` (launched by torchrun).

Run any ``bunlearn`` command (or your own script) under ``torchrun`` and the library trains
on every rank at once: :func:`boundary_unlearning.training.fit` gives each rank a shard of
every global batch (the global batch stays ``batch_size``), sums the gradients across ranks
with one coalesced all-reduce per step and synchronises BatchNorm statistics, so the result
equals one process training with the same global batch and seed (within float rounding).
Outside torchrun nothing here does anything: a single process behaves exactly as before.

- process group: :func:`init_distributed` / :func:`shutdown` (or :func:`process_group`);
  backend ``nccl`` on GPUs and ``gloo`` on CPU (:func:`choose_backend`).
- rank helpers: :func:`is_distributed`, :func:`world_size`, :func:`rank`, :func:`local_rank`,
  :func:`is_main_process` (only rank 0 writes files; see ``_utils.atomic_write_bytes``).
- collectives: :func:`all_reduce_sum`, :func:`all_ranks`, :func:`gather_rows`,
  :func:`shard_range`, :func:`broadcast_module`.
- :func:`launch` re-runs a command under ``torch.distributed.run`` (``bunlearn --nproc N``).

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
import datetime
import os
import signal
import subprocess
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError

__all__ = [
    "DistributedFit",
    "all_ranks",
    "all_reduce_sum",
    "broadcast_module",
    "choose_backend",
    "distributed_fit",
    "gather_rows",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "launch",
    "launch_command",
    "launched_by_torchrun",
    "local_rank",
    "process_group",
    "rank",
    "shard_range",
    "shutdown",
    "synced_batchnorm",
    "world_size",
]

TIMEOUT_ENV = "BUNLEARN_DIST_TIMEOUT"  # seconds a rank waits for the others (default 1800)
BACKEND_ENV = "BUNLEARN_DIST_BACKEND"  # force "gloo" or "nccl"


# --- rank helpers ----------------------------------------------------------------------------


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank.

    Returns:
        Whether collectives are needed.

    Example:
        >>> is_distributed()  # a single process
        False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 outside a process group).

    Returns:
        The world size.

    Example:
        >>> world_size()
        1
    """
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 outside a process group).

    Returns:
        The rank.

    Example:
        >>> rank()
        0
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's rank on its node (torchrun's ``LOCAL_RANK``; 0 outside torchrun).

    Returns:
        The local rank.

    Example:
        >>> local_rank()
        0
    """
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on global rank 0 (and in a single process): the one rank that writes files.

    Returns:
        Whether this process writes.

    Example:
        >>> is_main_process()
        True
    """
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (``torch.distributed.run``) started this process.

    Returns:
        Whether ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR`` are all set.

    Example:
        >>> launched_by_torchrun()
        False
    """
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


# --- process group -----------------------------------------------------------------------------


def choose_backend(device: str | None = None) -> str:
    """``nccl`` when the ranks train on CUDA GPUs, else ``gloo``.

    ``device`` is the run's device setting (``auto``, ``cpu``, ``cuda``, ...; ``None`` means
    auto). ``$BUNLEARN_DIST_BACKEND`` overrides the choice.

    Args:
        device: the run's device setting.

    Returns:
        ``"nccl"`` or ``"gloo"`` (or the override).

    Example:
        >>> choose_backend("cpu")
        'gloo'
    """
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        return forced
    wants_cpu = device is not None and device.strip().lower().startswith("cpu")
    return "nccl" if torch.cuda.is_available() and not wants_cpu else "gloo"


def _timeout() -> datetime.timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "1800")
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"${TIMEOUT_ENV}={raw!r} must be a number of seconds") from None
    return datetime.timedelta(seconds=seconds)


def init_distributed(device: str | None = None, backend: str | None = None) -> bool:
    """Join the process group torchrun set up (``env://``); returns True if this call
    initialised it. Outside torchrun, or when already initialised, does nothing.

    With ``nccl`` each rank uses GPU ``LOCAL_RANK`` (so ``device="cuda"`` / ``"auto"`` picks
    the rank's own GPU). SIGTERM (sent by torchrun when another rank fails) raises
    ``SystemExit`` so partly written temporary files are cleaned up.

    Args:
        device: the run's device setting (chooses the backend, see :func:`choose_backend`).
        backend: force a backend.

    Returns:
        Whether this call initialised the process group.

    Raises:
        ConfigError: ``nccl`` on a rank without its GPU, or a malformed
            ``$BUNLEARN_DIST_TIMEOUT``.

    Example:
        >>> init_distributed()  # not started by torchrun: nothing to join
        False
    """
    if not launched_by_torchrun() or not dist.is_available() or dist.is_initialized():
        return False
    backend = backend or choose_backend(device)
    if backend == "nccl":
        if local_rank() >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {local_rank()} on this node has no GPU ({torch.cuda.device_count()} "
                "visible); use --nproc at most the number of GPUs, or --device cpu"
            )
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=_timeout())
    with contextlib.suppress(ValueError):  # not in the main thread: keep torch's handler
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return True


def _exit_on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    raise SystemExit(128 + signum)


def shutdown() -> None:
    """Leave the process group (no-op when there is none).

    Example:
        >>> shutdown()  # no process group: nothing happens
        >>> is_distributed()
        False
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str | None = None) -> Iterator[None]:
    """``init_distributed`` for a block and ``shutdown`` after (only if it initialised).

    Args:
        device: the run's device setting.

    Returns:
        A context manager.

    Raises:
        ConfigError: as :func:`init_distributed`.

    Example:
        >>> with process_group("cpu"):  # a single process: one rank
        ...     world_size(), is_main_process()
        (1, True)
    """
    started = init_distributed(device)
    try:
        yield
    finally:
        if started:
            shutdown()


def launch_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The ``torch.distributed.run`` command running ``python -m boundary_unlearning ARGV``
    on ``nproc`` local ranks (``--standalone``: a free port on this machine).

    Args:
        argv: the ``bunlearn`` arguments.
        nproc: ranks on this machine.

    Returns:
        The command, starting with this Python interpreter.

    Example:
        >>> command = launch_command(["train", "--config", "run.yaml"], 2)
        >>> command[1:5]
        ['-m', 'torch.distributed.run', '--standalone', '--nproc-per-node=2']
        >>> command[5:]
        ['-m', 'boundary_unlearning', 'train', '--config', 'run.yaml']
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "boundary_unlearning", *argv]  # fmt: skip


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run ``bunlearn ARGV`` on ``nproc`` ranks through torchrun and return its exit code
    (non-zero when any rank failed; that rank's error is printed above torchrun's summary).
    Each rank gets ``OMP_NUM_THREADS=1`` unless the caller set it.

    Args:
        argv: the ``bunlearn`` arguments.
        nproc: ranks on this machine.

    Returns:
        torchrun's exit code.

    Raises:
        ConfigError: ``nproc`` is not a whole number >= 1.

    Example:
        >>> launch(["train"], 0)
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.ConfigError: --nproc 0 must be a whole number >= 1
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc {nproc!r} must be a whole number >= 1")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.call(launch_command(argv, nproc), env=env)


# --- collectives ---------------------------------------------------------------------------------


def _comm_device() -> torch.device:
    """Where collective tensors must live: this rank's GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> None:
    """In-place all-reduce, moving through the backend's device when needed."""
    comm = _comm_device()
    if tensor.device == comm:
        dist.all_reduce(tensor, op=op)
        return
    moved = tensor.to(comm)
    dist.all_reduce(moved, op=op)
    tensor.copy_(moved)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks (a new tensor; ``tensor`` itself outside torchrun).

    Args:
        tensor: this rank's value.

    Returns:
        The sum.

    Example:
        >>> all_reduce_sum(torch.tensor([1.0, 2.0])).tolist()  # one rank: its own value
        [1.0, 2.0]
    """
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    _all_reduce_(out)
    return out


def all_ranks(flag: bool) -> bool:
    """True only if ``flag`` is true on every rank (all ranks must call it).

    Args:
        flag: this rank's value.

    Returns:
        The logical AND over the ranks.

    Example:
        >>> all_ranks(True), all_ranks(False)
        (True, False)
    """
    if not is_distributed():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int64)
    _all_reduce_(value, dist.ReduceOp.MIN)
    return bool(value.item())


def shard_range(n: int) -> tuple[int, int]:
    """``(start, stop)`` of this rank's contiguous share of ``n`` rows, as
    ``torch.tensor_split`` deals them (the first ``n % world`` ranks get one more).

    Args:
        n: the number of rows.

    Returns:
        ``(start, stop)``.

    Example:
        >>> shard_range(10)  # one rank: every row
        (0, 10)
    """
    size, r = world_size(), rank()
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's :func:`shard_range` share of ``n`` rows, in rank order, on
    every rank. A rank with no rows may send any 0-row tensor of the right dimensionality.

    Args:
        local: this rank's rows.
        n: the number of rows over all ranks.

    Returns:
        All ``n`` rows (``local`` itself outside torchrun).

    Example:
        >>> gather_rows(torch.arange(3), 3).tolist()
        [0, 1, 2]
    """
    if not is_distributed():
        return local
    size = world_size()
    counts = [(n // size) + (1 if r < n % size else 0) for r in range(size)]
    # the trailing shape, agreed (an empty share may not know it, e.g. zeros((0, 0)))
    trailing = torch.tensor(list(local.shape[1:]), dtype=torch.int64)
    _all_reduce_(trailing, dist.ReduceOp.MAX)
    shape = [int(s) for s in trailing.tolist()]
    comm = _comm_device()
    padded = torch.zeros((max(counts), *shape), dtype=local.dtype, device=comm)
    if len(local):
        padded[: len(local)] = local.to(comm)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(local.device)


def broadcast_module(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``model`` (in place),
    one broadcast per dtype.

    Args:
        model: changed in place on every rank but ``src``.
        src: the rank whose weights win.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> before = model.weight.clone()
        >>> broadcast_module(model)  # one rank: nothing to copy
        >>> torch.equal(model.weight, before)
        True
    """
    if not is_distributed():
        return
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        groups.setdefault(tensor.dtype, []).append(tensor)
    comm = _comm_device()
    with torch.no_grad():
        for tensors in groups.values():
            flat = torch.cat([t.detach().reshape(-1).to(comm) for t in tensors])
            dist.broadcast(flat, src)
            offset = 0
            for t in tensors:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()


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
        >>> (xb, yb), weight = fitter.share((x, y), torch.tensor([3, 1]))
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

    def share(self, data: Sequence[torch.Tensor], idx: torch.Tensor) -> tuple[Batch, float]:
        """This rank's part of the global batch ``idx`` and its weight ``len(part) /
        len(idx)`` (the whole batch and weight 1 with ``shard=False``).

        Args:
            data: tensors indexed together (e.g. ``(x, y)``).
            idx: the global batch's rows.

        Returns:
            ``(this rank's part of each tensor, weight)``.

        Example:
            >>> fitter = DistributedFit(nn.Linear(2, 2), [], shard=True)  # outside torchrun
            >>> (part,), weight = fitter.share((torch.arange(5),), torch.tensor([4, 0]))
            >>> part.tolist(), weight
            ([4, 0], 1.0)
        """
        if not self.shard:
            return tuple(t[idx] for t in data), 1.0
        start, stop = shard_range(len(idx))
        local = idx[start:stop]
        return tuple(t[local] for t in data), len(local) / len(idx)

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
