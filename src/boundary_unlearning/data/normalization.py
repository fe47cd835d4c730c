"""The one normalisation rule's vocabulary: ``(mean, std)`` as the data carry it, checked
(:func:`check_normalization`), shaped over a batch's channels (:func:`channel_view`) and
undone into pixels (:func:`implied_pixels`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import DataError

__all__ = [
    "Normalization",
    "NormalizationLike",
    "channel_view",
    "check_normalization",
    "implied_pixels",
]

# ``(mean, std)``: per channel, or one number for every channel.
Normalization = tuple[tuple[float, ...], tuple[float, ...]]
NormalizationLike = tuple[float | Sequence[float], float | Sequence[float]]


def check_normalization(normalization: NormalizationLike | None) -> Normalization | None:
    """``(mean, std)`` as two tuples of finite floats (std > 0), numbers or per-channel
    sequences accepted; ``None`` stays ``None``.

    Args:
        normalization: ``(mean, std)``, e.g. ``(0.286, 0.353)`` or
            ``((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))``.

    Returns:
        ``(mean, std)`` as tuples (one value, or one per channel).

    Raises:
        DataError: not a pair of numbers / sequences, a non-finite value, a std <= 0.

    Example:
        >>> check_normalization((0.5, [0.25, 0.5]))
        ((0.5,), (0.25, 0.5))
    """
    if normalization is None:
        return None
    fix = "pass normalization=(mean, std), numbers or one per channel, e.g. (0.286, 0.353)"
    if isinstance(normalization, (str, bytes)) or not isinstance(normalization, Sequence):
        raise DataError(f"normalization={normalization!r} is not a (mean, std) pair; {fix}")
    if len(normalization) != 2:
        raise DataError(f"normalization={normalization!r} is not a (mean, std) pair; {fix}")
    out: list[tuple[float, ...]] = []
    for name, value in zip(("mean", "std"), normalization, strict=True):
        if isinstance(value, torch.Tensor):
            value = value.flatten().tolist()
        items = (
            list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        )
        if not items or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in items
        ):
            raise DataError(f"normalization {name} {value!r} is not finite numbers; {fix}")
        if name == "std" and not all(v > 0 for v in items):
            raise DataError(f"normalization std {value!r} must be > 0; {fix}")
        out.append(tuple(float(v) for v in items))
    mean, std = out
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise DataError(
            f"normalization has {len(mean)} means but {len(std)} stds; give one per channel"
        )
    return mean, std


def channel_view(values: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    """``values`` (one, or one per channel) shaped to broadcast over ``x``'s channel
    dimension 1, with ``x``'s dtype and device.

    Example:
        >>> channel_view((0.5, 0.25), torch.zeros(1, 2, 3, 3)).shape
        torch.Size([1, 2, 1, 1])
    """
    t = torch.tensor(list(values), dtype=x.dtype, device=x.device)
    return t.view(1, -1, *([1] * (x.dim() - 2))) if x.dim() > 2 else t.view(1, -1)


def implied_pixels(x: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """The pixels ``x * std + mean`` (channel dimension 1) that ``x`` stands for.

    Args:
        x: model inputs, ``(N, C, ...)`` or ``(N, C)``.
        normalization: ``(mean, std)`` as :func:`check_normalization` returns it; ``None``
            returns ``x`` unchanged.

    Returns:
        The pixels, same shape as ``x``.

    Raises:
        DataError: the number of means/stds is neither 1 nor the number of channels.

    Example:
        >>> implied_pixels(torch.zeros(1, 2, 1, 1), ((0.5,), (0.2, 0.3))).flatten().tolist()
        [0.5, 0.5]
    """
    if normalization is None:
        return x
    mean, std = normalization
    m, s = channel_view(mean, x), channel_view(std, x)
    if x.dim() >= 2 and max(len(mean), len(std)) not in (1, x.shape[1]):
        raise DataError(
            f"normalization has {max(len(mean), len(std))} values per channel but the inputs "
            f"have {x.shape[1]} channels; give one value or one per channel"
        )
    return x * s + m
