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

The training step built on these (synchronised BatchNorm, the gradient all-reduce,
``DistributedFit``) is in :mod:`boundary_unlearning.distributed_training`. See
``docs/distributed.md``.
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

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError

__all__ = [
    "all_ranks",
    "all_reduce_sum",
    "broadcast_module",
    "choose_backend",
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
