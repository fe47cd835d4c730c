"""Safe checkpoints: safetensors weights plus a JSON metadata file, written atomically.

A checkpoint is untrusted input: weights are read with safetensors, or with
``torch.load(weights_only=True)`` for a plain ``state_dict`` file, and their names and shapes
are checked against the architecture before loading.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._utils import atomic_write_bytes, atomic_write_json
from .errors import CheckpointError, UnlearningError
from .models import create_model

__all__ = [
    "build_from_metadata",
    "checkpoint_paths",
    "config_hash",
    "load_checkpoint",
    "load_state_dict",
    "load_weights_into",
    "read_metadata",
    "save_checkpoint",
]

FORMAT = "boundary-unlearning/1"


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able configuration (the cache key)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths for a checkpoint given as a folder or a weights file."""
    p = Path(path)
    if p.suffix in {".safetensors", ".pt", ".pth", ".bin"}:
        return p, p.with_suffix(".json")
    return p / "model.safetensors", p / "model.json"


def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``model``'s weights (safetensors) and ``metadata`` (JSON) atomically.

    ``path`` is a folder (``model.safetensors`` + ``model.json`` inside) or a
    ``.safetensors`` file (metadata beside it). Returns the weights path.
    """
    from safetensors.torch import save

    weights, meta = checkpoint_paths(path)
    if weights.suffix != ".safetensors":
        weights = weights.with_suffix(".safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        atomic_write_bytes(weights, save(state))
        atomic_write_json(meta, {"format": FORMAT, **metadata})
    except PermissionError as exc:
        from .errors import OutputError

        raise OutputError(
            f"cannot write {exc.filename or weights.parent}: permission denied; choose a "
            "writable --out"
        ) from None
    return weights


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The metadata beside a checkpoint, or ``None`` if there is none."""
    _, meta = checkpoint_paths(path)
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta} is not valid JSON ({exc}); restore or delete it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{meta} does not hold a JSON object; restore or delete it")
    return data


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights safely: safetensors, or a ``state_dict`` via ``weights_only=True``."""
    weights, _ = checkpoint_paths(path)
    if not weights.is_file():
        raise CheckpointError(
            f"checkpoint {weights} not found; pass the file or folder written by 'bunlearn train'"
        )
    raw = weights.read_bytes()
    if weights.suffix == ".safetensors":
        from safetensors.torch import load

        try:
            state = load(raw)
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(
                f"{weights} is not a valid safetensors file ({str(exc).splitlines()[0][:120]}); "
                "it is truncated or corrupt, restore it"
            ) from None
        return dict(state)
    import io

    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {weights}: it holds objects other than tensors "
            f"({str(exc).splitlines()[0][:160]}); save a plain state_dict or safetensors"
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"{weights} is not a readable PyTorch checkpoint ({type(exc).__name__}); it is "
            "truncated or corrupt, restore it"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(
            f"{weights} does not hold a state_dict (name -> tensor); save model.state_dict()"
        )
    return obj


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Copy ``state`` into ``model`` after checking names and shapes match exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(
            f"{source} is for another architecture ({detail}); pass the matching --model"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source} is for another architecture: {key} has shape "
                f"{tuple(state[key].shape)}, the model expects {tuple(tensor.shape)}; pass the "
                "matching --model and --dataset"
            )
        if not torch.isfinite(state[key].float()).all():
            raise CheckpointError(f"{source}: {key} holds NaN or infinite values; it is corrupt")
    model.load_state_dict(state)
    return model


def build_from_metadata(meta: dict[str, Any]) -> nn.Module:
    """An untrained model of the architecture the metadata describes."""
    try:
        return create_model(
            str(meta["model"]),
            int(meta["num_classes"]),
            int(meta["in_channels"]),
            int(meta["image_size"]),
            meta["mean"],
            meta["std"],
            **dict(meta.get("model_options", {})),
        )
    except UnlearningError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint metadata lacks or garbles {exc}; pass --model and --dataset explicitly"
        ) from None


def load_checkpoint(
    path: str | Path, model: nn.Module | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (or a plain state_dict when
    ``model`` is given). Returns ``(model, metadata)``; the model is in eval mode."""
    meta = read_metadata(path) or {}
    if model is None:
        if not meta:
            raise CheckpointError(
                f"{checkpoint_paths(path)[1]} not found, so the architecture is unknown; pass "
                "--model and --dataset"
            )
        model = build_from_metadata(meta)
    state = load_state_dict(path)
    load_weights_into(model, state, str(checkpoint_paths(path)[0]))
    model.eval()
    return model, meta
