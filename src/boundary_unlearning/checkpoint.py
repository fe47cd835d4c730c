"""Safe checkpoints: safetensors weights plus a JSON metadata file, written atomically.

A checkpoint is untrusted input: weights are read with safetensors, or with
``torch.load(weights_only=True)`` for a plain ``state_dict`` file, and their names and shapes
are checked against the architecture before loading.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._utils import atomic_write_bytes, atomic_write_json
from .distributed import is_main_process
from .errors import CheckpointError, UnlearningError
from .models import create_model, is_user_model

__all__ = [
    "build_from_metadata",
    "check_matches_dataset",
    "check_metadata",
    "check_model_options",
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
    """A short stable hash of a JSON-able configuration (the cache key).

    Args:
        config: the configuration (keys are sorted; non-JSON values hash as ``str``).

    Returns:
        16 hex digits of a SHA-256.

    Example:
        >>> config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
        True
        >>> config_hash({"a": 1, "b": [1, 2]})
        'e6f20bdc3757e5e7'
    """
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths for a checkpoint given as a folder or a weights file.

    Args:
        path: a folder, or a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` file.

    Returns:
        ``(weights, metadata)``: the metadata is the JSON file beside the weights.

    Example:
        >>> [p.as_posix() for p in checkpoint_paths("run")]
        ['run/model.safetensors', 'run/model.json']
        >>> [p.as_posix() for p in checkpoint_paths("run/w.pt")]
        ['run/w.pt', 'run/w.json']
    """
    p = Path(path)
    if p.suffix in {".safetensors", ".pt", ".pth", ".bin"}:
        return p, p.with_suffix(".json")
    return p / "model.safetensors", p / "model.json"


Seal = Callable[[str], Mapping[str, Any]]  # the SHA-256 of the weights -> metadata to add


def save_checkpoint(
    model: nn.Module, path: str | Path, metadata: dict[str, Any], *, seal: Seal | None = None
) -> Path:
    """Write ``model``'s weights (safetensors) and ``metadata`` (JSON) atomically.

    ``path`` is a folder (``model.safetensors`` + ``model.json`` inside) or a
    ``.safetensors`` file (metadata beside it). Under torchrun only rank 0 writes.

    Args:
        model: the model whose ``state_dict`` is saved.
        path: a folder or a ``.safetensors`` file (another suffix is replaced).
        metadata: JSON-able metadata; ``format`` is added.
        seal: given the weights' SHA-256 (hex), returns metadata to add (the ledger).

    Returns:
        The weights path.

    Raises:
        OutputError: the files cannot be written.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "ck"
        >>> save_checkpoint(nn.Linear(2, 2), folder, {"note": "demo"}).name
        'model.safetensors'
        >>> read_metadata(folder)
        {'format': 'boundary-unlearning/1', 'note': 'demo'}
    """
    from safetensors.torch import save

    weights, meta = checkpoint_paths(path)
    if weights.suffix != ".safetensors":
        weights = weights.with_suffix(".safetensors")
    if not is_main_process():
        return weights
    blob = save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    extra = dict(seal(hashlib.sha256(blob).hexdigest())) if seal is not None else {}
    try:
        atomic_write_bytes(weights, blob)
        atomic_write_json(meta, {"format": FORMAT, **metadata, **extra})
    except OSError as exc:
        from .errors import OutputError

        raise OutputError(
            f"cannot write {exc.filename or weights.parent} ({exc.strerror or exc}); choose a "
            "writable --out"
        ) from None
    return weights


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The metadata beside a checkpoint, or ``None`` if there is none.

    Args:
        path: the checkpoint's folder or weights file.

    Returns:
        The metadata dict, or ``None``.

    Raises:
        CheckpointError: the file is not JSON or not a JSON object.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> read_metadata(folder) is None
        True
        >>> _ = save_checkpoint(nn.Linear(2, 2), folder, {"seed": 1})
        >>> read_metadata(folder)["seed"]
        1
    """
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
    """Read weights safely: safetensors, or a ``state_dict`` via ``weights_only=True``.

    A ``{"state_dict": ...}`` wrapper (as training frameworks save) is unwrapped.

    Args:
        path: the checkpoint's folder or weights file.

    Returns:
        Name -> tensor, on the CPU.

    Raises:
        CheckpointError: the file is missing, corrupt, would run code on load, or does not
            hold a state_dict.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save(nn.Linear(2, 2).state_dict(), file)
        >>> sorted(load_state_dict(file))
        ['bias', 'weight']
    """
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
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol
            obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it would load {found.group(1)}" if found else "it holds objects other than tensors"
        raise CheckpointError(
            f"refusing to load {weights}: {what}, and checkpoints are read with "
            "weights_only=True (no code runs on load); save a plain state_dict or safetensors"
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
    """Copy ``state`` into ``model`` after checking names and shapes match exactly.

    Args:
        model: the model to load into.
        state: name -> tensor.
        source: where ``state`` came from, for the error message.

    Returns:
        ``model``.

    Raises:
        CheckpointError: names or shapes differ, or a tensor holds NaN, inf or complex
            values.

    Example:
        >>> model = load_weights_into(nn.Linear(2, 2), nn.Linear(2, 2).state_dict(), "demo")
        >>> load_weights_into(nn.Linear(2, 3), model.state_dict(), "demo")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.CheckpointError: demo is for another architecture: ...
    """
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
        if state[key].is_complex() or not torch.isfinite(state[key].float()).all():
            raise CheckpointError(
                f"{source}: {key} holds NaN, infinite or complex values; it is corrupt"
            )
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"{source} cannot be loaded ({str(exc).splitlines()[0][:120]}); it is corrupt"
        ) from None
    return model


# Bounds on what untrusted metadata may ask to build (a crafted file must not allocate
# terabytes): far above any model this library trains.
_META_LIMITS = {"num_classes": (2, 100_000), "in_channels": (1, 64), "image_size": (1, 4096)}
_OPTION_LIMIT = 100_000
_MAX_PARAMETERS = 500_000_000


def _meta_error(source: str, problem: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: metadata {problem}; restore the model.json written with the checkpoint, "
        "or delete it and pass --model and --dataset"
    )


def check_metadata(meta: dict[str, Any], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``meta`` describes a buildable architecture
    (types and sizes within bounds); metadata is untrusted input like the weights.

    Args:
        meta: the metadata (``model``, ``num_classes``, ``in_channels``, ``image_size``,
            ``mean``, ``std``, optional ``model_options`` and ``dataset``).
        source: the file it came from, for the error message.

    Raises:
        CheckpointError: a missing, mistyped or out-of-bounds value, or a user architecture
            (``MODULE:FUNCTION``), which only the caller may name.

    Example:
        >>> meta = {"model": "mlp", "num_classes": 2, "in_channels": 1, "image_size": 4,
        ...         "mean": [0.5], "std": [0.25]}
        >>> check_metadata(meta)
        >>> check_metadata({**meta, "std": [0.0]})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.CheckpointError: checkpoint: metadata std=[0.0] is not ...
    """
    if not isinstance(meta.get("model"), str):
        raise _meta_error(source, "has no model name")
    if is_user_model(meta["model"]):  # buildable only by the caller: never import on its word
        raise CheckpointError(
            f"{source} was made with the user architecture {meta['model']}; pass --model "
            f"{meta['model']} to build it (code named in a checkpoint is never imported)"
        )
    for key, (low, high) in _META_LIMITS.items():
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _meta_error(source, f"{key}={value!r} is not a whole number in {low}..{high}")
    for key in ("mean", "std"):
        values = meta.get(key)
        if (
            not isinstance(values, list)
            or len(values) != meta["in_channels"]
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in values
            )
            or (key == "std" and not all(v > 0 for v in values))
        ):
            raise _meta_error(source, f"{key}={values!r} is not one finite number per channel")
    check_model_options(meta.get("model_options", {}), source)
    for key in ("dataset",):
        if key in meta and not isinstance(meta[key], str):
            raise _meta_error(source, f"{key}={meta[key]!r} is not a name")


def check_model_options(options: Any, source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``options`` is a dict of small plain values.

    Args:
        options: the ``model_options`` of the metadata.
        source: the file it came from, for the error message.

    Raises:
        CheckpointError: not a dict, or a value that is not ``None``, a bool, a string or a
            number of magnitude <= 100,000.

    Example:
        >>> check_model_options({"width": 32, "dropout": None})
        >>> check_model_options({"width": 10**9})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.CheckpointError: checkpoint: metadata model_options=...
    """
    if not isinstance(options, dict) or not all(
        (v is None or isinstance(v, (int, float, str, bool)))
        and not (isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > _OPTION_LIMIT)
        for v in options.values()
    ):
        raise _meta_error(source, f"model_options={options!r} are not small plain values")


def build_from_metadata(meta: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """An untrained model of the architecture the metadata describes (checked first).

    A user's architecture (``"MODULE:FUNCTION"``) is never imported on a checkpoint's word:
    the caller names it (``--model``).

    Args:
        meta: the metadata (see :func:`check_metadata`).
        source: the file it came from, for the error message.

    Returns:
        The untrained model.

    Raises:
        CheckpointError: bad metadata, a user architecture, or a model too large to build.

    Example:
        >>> meta = {"model": "mlp", "num_classes": 2, "in_channels": 1, "image_size": 4,
        ...         "mean": [0.5], "std": [0.25]}
        >>> build_from_metadata(meta).head
        Linear(in_features=256, out_features=2, bias=True)
    """
    check_metadata(meta, source)
    args = (meta["model"], meta["num_classes"], meta["in_channels"], meta["image_size"])
    options = dict(meta.get("model_options", {}))
    try:
        with torch.device("meta"):  # count the parameters without allocating them
            probe = create_model(*args, meta["mean"], meta["std"], **options)
        size = sum(p.numel() for p in probe.parameters())
        if size > _MAX_PARAMETERS:
            raise _meta_error(
                source, f"describes a model of {size:,} parameters (over {_MAX_PARAMETERS:,})"
            )
        return create_model(*args, meta["mean"], meta["std"], **options)
    except UnlearningError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise _meta_error(source, f"does not describe a buildable model ({exc})") from None


def check_matches_dataset(meta: dict[str, Any], info: Any, source: str) -> None:
    """Raise :class:`ModelError` if the checkpoint's model cannot classify ``info``'s data:
    another class count (output size) or another image shape.

    Args:
        meta: the checkpoint's metadata.
        info: the dataset's :class:`~boundary_unlearning.data.datasets.DatasetInfo`.
        source: the checkpoint, for the error message.

    Raises:
        ModelError: the class count or the image shape differs.

    Example:
        >>> from boundary_unlearning.data.datasets import DatasetInfo
        >>> meta = {"model": "mlp", "num_classes": 2, "in_channels": 1, "image_size": 4,
        ...         "mean": [0.5], "std": [0.25]}
        >>> two = DatasetInfo("toy", ("a", "b"), (1, 4, 4), (0.5,), (0.2,))
        >>> check_matches_dataset(meta, two, "ck")
        >>> info = DatasetInfo("toy", ("a", "b", "c"), (1, 4, 4), (0.5,), (0.2,))
        >>> check_matches_dataset(meta, info, "ck")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.ModelError: ck outputs 2 classes but toy has 3; ...
    """
    from .errors import ModelError

    want = (info.num_classes, info.in_channels, info.image_size)
    have = (meta.get("num_classes"), meta.get("in_channels"), meta.get("image_size"))
    if have == want:
        return
    trained_on = f" (trained on {meta['dataset']})" if isinstance(meta.get("dataset"), str) else ""
    if have[0] != want[0]:
        problem = f"outputs {have[0]} classes but {info.name} has {want[0]}"
    else:
        problem = (
            f"takes {have[1]}x{have[2]}x{have[2]} images but {info.name} has "
            f"{want[1]}x{want[2]}x{want[2]}"
        )
    raise ModelError(f"{source}{trained_on} {problem}; pass the --dataset the model was trained on")


def load_checkpoint(
    path: str | Path, model: nn.Module | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (or a plain state_dict when
    ``model`` is given). Returns ``(model, metadata)``; the model is in eval mode.

    Args:
        path: the checkpoint's folder or weights file.
        model: the model to load into; ``None`` builds it from the metadata.

    Returns:
        ``(model, metadata)`` (``{}`` when there is no metadata).

    Raises:
        CheckpointError: no metadata and no ``model``, bad metadata, or weights that are
            missing, corrupt or for another architecture.

    Example:
        >>> import tempfile
        >>> from boundary_unlearning.models import create_model
        >>> folder = Path(tempfile.mkdtemp())
        >>> meta = {"model": "mlp", "num_classes": 2, "in_channels": 1, "image_size": 4,
        ...         "mean": [0.5], "std": [0.25]}
        >>> _ = save_checkpoint(create_model("mlp", 2, 1, 4, [0.5], [0.25]), folder, meta)
        >>> model, metadata = load_checkpoint(folder)
        >>> type(model).__name__, model.training, metadata["format"]
        ('Classifier', False, 'boundary-unlearning/1')
    """
    meta = read_metadata(path) or {}
    if model is None:
        if not meta:
            raise CheckpointError(
                f"{checkpoint_paths(path)[1]} not found, so the architecture is unknown; pass "
                "--model and --dataset"
            )
        model = build_from_metadata(meta, str(checkpoint_paths(path)[1]))
    state = load_state_dict(path)
    load_weights_into(model, state, str(checkpoint_paths(path)[0]))
    model.eval()
    return model, meta
