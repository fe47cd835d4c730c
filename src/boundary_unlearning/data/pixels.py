"""Images kept as the bytes they were stored in until a batch is read.

The rule every reader follows: an input tensor of dtype ``uint8`` holds pixel bytes
(0..255), and a batch of them becomes float32 pixels in [0, 1] by :func:`decode_inputs`
(``byte / 255``, bit for bit what the loaders computed for the whole set before, as
torchvision's ``convert_image_dtype`` does). Fashion-MNIST held this way takes 55 MB instead
of 220 MB, and a class split copies a quarter of the bytes.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils.data import TensorDataset

__all__ = ["ByteImages", "decode_inputs", "decoded_nbytes", "is_bytes", "tensor_dataset"]

_SCALE = 255.0


@functools.cache
def _table(device: torch.device) -> torch.Tensor:
    """Every byte's pixel value, computed on the CPU (so an accelerator reads the same bits)."""
    return torch.arange(256, dtype=torch.float32).div_(_SCALE).to(device)


def is_bytes(x: torch.Tensor) -> bool:
    """Whether ``x`` holds pixel bytes (``uint8``).

    Example:
        >>> is_bytes(torch.zeros(2, dtype=torch.uint8)), is_bytes(torch.zeros(2))
        (True, False)
    """
    return x.dtype == torch.uint8


def decode_inputs(x: torch.Tensor) -> torch.Tensor:
    """Pixel bytes as float32 pixels in [0, 1] (``x / 255``); any other tensor unchanged.

    Args:
        x: model inputs, as stored.

    Returns:
        ``x`` itself when it is not ``uint8``, else a new float32 tensor on ``x``'s device.

    Example:
        >>> decode_inputs(torch.tensor([0, 51, 255], dtype=torch.uint8)).tolist()
        [0.0, 0.20000000298023224, 1.0]
        >>> x = torch.ones(2)
        >>> decode_inputs(x) is x
        True
    """
    if not is_bytes(x):
        return x
    if x.device.type == "cpu":
        return x.to(torch.float32).div_(_SCALE)
    return _table(x.device)[x.long()]


def decoded_nbytes(x: torch.Tensor) -> int:
    """Bytes ``x`` takes once decoded (float32 for pixel bytes, as it is otherwise).

    Example:
        >>> decoded_nbytes(torch.zeros(3, 2, dtype=torch.uint8)), decoded_nbytes(torch.zeros(3))
        (24, 12)
    """
    return x.numel() * (4 if is_bytes(x) else x.element_size())


class ByteImages(TensorDataset):
    """A ``TensorDataset`` whose first tensor holds pixel bytes: item ``i`` is ``(float32
    image in [0, 1], label, ...)``, decoded when read; ``tensors`` stay as stored.

    Example:
        >>> ds = ByteImages(torch.tensor([[0, 255]], dtype=torch.uint8), torch.tensor([3]))
        >>> ds[0][0].tolist(), ds.tensors[0].dtype
        ([0.0, 1.0], torch.uint8)
    """

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, ...]:
        x, *rest = (t[index] for t in self.tensors)
        return (decode_inputs(x), *rest)


def tensor_dataset(*tensors: torch.Tensor) -> TensorDataset:
    """A dataset of ``tensors`` (inputs first): :class:`ByteImages` when the inputs are
    pixel bytes, else a plain ``TensorDataset``.

    Example:
        >>> type(tensor_dataset(torch.zeros(2, dtype=torch.uint8), torch.zeros(2))).__name__
        'ByteImages'
    """
    if tensors and is_bytes(tensors[0]):
        return ByteImages(*tensors)
    return TensorDataset(*tensors)
