"""Small internal helpers shared across the package (not public API)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .distributed import is_main_process


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for an empty model.

    Args:
        model: any module.

    Returns:
        The device.

    Example:
        >>> model_device(nn.Linear(2, 2)), model_device(nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def outside_stacklevel() -> int:
    """The ``stacklevel`` for :func:`warnings.warn` that points at the first caller outside
    this package: a warning then names the user's line, whichever path inside the library
    led to it (``unlearn(...)``, ``boundary_shrink(...)``, ``bunlearn``).

    Returns:
        The stack level, counted from the function that calls ``warnings.warn``.

    Example:
        >>> outside_stacklevel()  # called from outside the package: its own caller's frame
        1
    """
    frame = sys._getframe(1)  # the function that calls warnings.warn
    level = 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(
        _PACKAGE
    ):
        frame = frame.f_back
        level += 1
    return level


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a CUDA device; nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the caller's RNG state after.

    Used only where torch offers no ``generator=`` argument (module initialisers).

    Args:
        seed: the seed for the block.

    Returns:
        A context manager.

    Example:
        >>> with seeded(0):
        ...     a = torch.rand(2)
        >>> with seeded(0):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for a block and restore each module's own mode after.

    Args:
        model: the model.

    Returns:
        A context manager giving ``model``.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with eval_mode(net):
        ...     net[1].training
        False
        >>> net[1].training
        True
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def channels_last_(model: nn.Module) -> bool:
    """Store ``model``'s 4-D weights channels-last, in place, when it runs on the CPU: a
    convolution then reads its input in that layout too, and on 2 CPU cores inference ran
    2.4x faster for the Fashion-MNIST ``cnn`` (its max-pooling is slow in the default layout),
    1.6x for EfficientNet-B0, 1.3x for MobileNetV3, 1.1x for ResNet-18 and never slower.
    Values do not change, only how they are stored. Only for a model the caller owns (a
    copy): a channels-last weight is not contiguous and some writers refuse it.

    Args:
        model: the model to convert.

    Returns:
        Whether it was converted (``False`` off the CPU, without 4-D weights, or with 5-D
        ones, which have another channels-last layout).

    Example:
        >>> net = nn.Conv2d(3, 8, 3)
        >>> channels_last_(net), net.weight.is_contiguous()
        (True, False)
        >>> channels_last_(nn.Linear(2, 2))
        False
    """
    if not _four_d_on_cpu(model):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def _four_d_on_cpu(model: nn.Module) -> list[torch.Tensor]:
    """The 4-D weights and buffers of a model that lives on the CPU and has no 5-D ones
    (what :func:`channels_last_` converts); empty otherwise."""
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.dim() == 5 or t.device.type != "cpu" for t in tensors):
        return []
    return [t for t in tensors if t.dim() == 4]


def inference_view(model: nn.Module) -> nn.Module:
    """``model`` laid out for the fastest inference on its device (:func:`channels_last_`
    on a copy), or ``model`` itself when the layout would not change (a view passed back in
    is returned as it is). The caller only reads the result (forward passes, hooks it removes).

    Args:
        model: the model (not modified).

    Returns:
        A channels-last copy, or ``model``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3))
        >>> view = inference_view(net)
        >>> view is net, inference_view(view) is view, net[0].weight.is_contiguous()
        (False, True, True)
    """
    four = _four_d_on_cpu(model)
    if not four or all(t.is_contiguous(memory_format=torch.channels_last) for t in four):
        return model  # nothing to convert, or laid out already (a view, or an owner's copy)
    view = copy.deepcopy(model)
    channels_last_(view)
    return view


def _umask() -> int:
    """The process umask: from /proc where Linux shows it, else by setting it and putting it
    straight back (briefly visible to other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    Under torchrun only rank 0 writes; the other ranks skip the write.

    A reader never sees a half-written file. Missing parent folders are made.

    Args:
        path: the file to write.
        data: its new content.

    Raises:
        OSError: the folder or file cannot be written.

    Example:
        >>> folder = Path(tempfile.mkdtemp())
        >>> atomic_write_bytes(folder / "sub" / "blob.bin", b"abc")
        >>> (folder / "sub" / "blob.bin").read_bytes()
        b'abc'
    """
    if not is_main_process():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() honours the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, as :func:`atomic_write_bytes` does.

    Args:
        path: the file to write.
        text: its new content.

    Raises:
        OSError: the folder or file cannot be written.

    Example:
        >>> path = Path(tempfile.mkdtemp()) / "note.txt"
        >>> atomic_write_text(path, "héllo")
        >>> path.read_text(encoding="utf-8")
        'héllo'
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (NaN allowed, key order kept) to ``path`` atomically.

    Args:
        path: the file to write.
        obj: a JSON-able object.

    Raises:
        OSError: the folder or file cannot be written.
        TypeError: ``obj`` is not JSON-able.

    Example:
        >>> path = Path(tempfile.mkdtemp()) / "out.json"
        >>> atomic_write_json(path, {"b": 1, "a": float("nan")})
        >>> print(path.read_text(), end="")
        {
          "b": 1,
          "a": NaN
        }
    """
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")
