"""The evidence of a ``bunlearn unlearn`` report: each model's accuracies (estimated on seeded
samples, see :mod:`boundary_unlearning.metrics.estimate`, or read in full) and its depth
evidence, and a small cache so that the original's are computed once per checkpoint and data.

The cache lives in ``$BUNLEARN_CACHE/evidence/``: one JSON file per (weights, data, settings),
named by a hash of all three and holding them in full; an entry is used only when the SHA-256
of the checkpoint's weights, the fingerprint of the four sets and the evidence settings it
records all equal the request's, so a stale, edited or colliding file is recomputed and
replaced, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from ._utils import atomic_write_json, inference_view
from .data import UnlearningData
from .metrics import class_evidence, depth_evidence
from .metrics.estimate import SETS, EvidenceSettings, read_sets

__all__ = [
    "EVIDENCE_VERSION",
    "EvidenceSettings",
    "cached_evidence",
    "cached_json",
    "data_fingerprint",
    "evidence_entry",
    "evidence_summary",
    "file_sha256",
    "state_sha256",
]

EVIDENCE_VERSION = 4  # bump when what an entry holds or how it is computed changes
# (3: the probe's retained images are the first of the seeded order D_r is sampled in)


def evidence_entry(
    model: nn.Module,
    data: UnlearningData,
    settings: EvidenceSettings,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """One model's entry of an ``unlearn`` report: ``acc`` (the estimates), ``acc_interval``
    (``[low, high]`` per set), ``acc_samples`` (images read per set), ``relearn_steps``,
    ``probe_forget_acc`` and ``per_class`` (each forgotten class, from the same images the
    accuracies read: one pass per set).

    Args:
        model: the model (not modified).
        data: the split.
        settings: how the accuracies are read.
        seed: seeds the depth evidence.

    Returns:
        The entry (JSON-able; a value that cannot be computed is ``None``).

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem()
        >>> entry = evidence_entry(net, data, EvidenceSettings(full=True))
        >>> sorted(entry["acc_samples"].items())[0]
        ('forget', 10)
    """
    view = inference_view(model)  # one copy laid out for the CPU, for the passes below
    readouts = read_sets(view, data, settings, features=True)  # the probe reads them too
    found = {k: r.estimate for k, r in readouts.items()}
    return {
        "acc": {k: e.value for k, e in found.items()},
        "acc_interval": {k: e.as_dict()["interval"] for k, e in found.items()},
        "acc_samples": {k: e.n for k, e in found.items()},
        **depth_evidence(view, data, seed=seed, readouts=readouts),
        "per_class": class_evidence(model, data, readouts=readouts),
    }


def evidence_summary(data: UnlearningData, settings: EvidenceSettings) -> dict[str, Any]:
    """``report["evidence"]``: how the accuracies were read and how large each set is.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> evidence_summary(toy_problem()[0], EvidenceSettings())["confidence"]
        0.95
    """
    sizes = data.sizes()
    return {
        "full": settings.full,
        "confidence": settings.confidence,
        "family": settings.family,
        "each": settings.each,
        "margin": settings.margin,
        "whole_up_to": settings.whole_up_to,
        "seed": settings.seed,
        "totals": {k: sizes["forget_full" if k == "forget" else k] for k in SETS},
    }


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB blocks).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "w"
        >>> _ = path.write_bytes(b"abc")
        >>> file_sha256(path)[:12]
        'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _feed(digest: Any, dataset: Dataset[Any]) -> bool:
    """Hash what ``dataset`` holds into ``digest``: a TensorDataset's tensors, a Subset's
    indices and its base. ``False`` for a dataset that cannot be fingerprinted cheaply."""
    if isinstance(dataset, TensorDataset):
        for tensor in dataset.tensors:
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy() if t.numel() else b"")
        return True
    if isinstance(dataset, Subset):
        digest.update(torch.as_tensor(dataset.indices, dtype=torch.int64).numpy().tobytes())
        return _feed(digest, dataset.dataset)
    return False


def data_fingerprint(data: UnlearningData) -> str | None:
    """A SHA-256 over the images and labels of the four sets (and the split's classes), or
    ``None`` when a set is not held in memory (its evidence is then not cached).

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data = toy_problem()[0]
        >>> data_fingerprint(data) == data_fingerprint(data)
        True
    """
    digest = hashlib.sha256(f"{data.forget_classes}{data.num_classes}".encode())
    seen: dict[int, bool] = {}
    for dataset in (data.retain, data.forget_eval, data.test_retain, data.test_forget):
        base = dataset.dataset if isinstance(dataset, Subset) else dataset
        if id(base) in seen and isinstance(dataset, Subset):  # a base hashed once
            digest.update(torch.as_tensor(dataset.indices, dtype=torch.int64).numpy().tobytes())
            continue
        if not _feed(digest, dataset):
            return None
        seen[id(base)] = True
    return digest.hexdigest()


def state_sha256(model: nn.Module) -> str:
    """A SHA-256 of a model's state (every parameter's and buffer's name, dtype, shape and
    bytes): the same weights give the same digest wherever they came from.

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> _ = b.load_state_dict(a.state_dict())
        >>> state_sha256(a) == state_sha256(b), state_sha256(a) == state_sha256(nn.Linear(2, 2))
        (True, False)
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def cached_json(
    cache_dir: Path, kind: str, key: dict[str, Any], compute: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """``compute()``, kept in ``cache_dir/kind/`` under a hash of ``key`` and reused only
    when the file records exactly ``key`` (anything else is recomputed and replaced).

    Args:
        cache_dir: the cache folder (``$BUNLEARN_CACHE``).
        kind: the sub-folder (``evidence``, ``metrics``).
        key: everything the value depends on (JSON-able).
        compute: computes the value (a JSON-able dict).

    Returns:
        ``(value, reused)``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> cached_json(folder, "x", {"a": 1}, lambda: {"v": 2})
        ({'v': 2}, False)
        >>> cached_json(folder, "x", {"a": 1}, lambda: {"v": 3})
        ({'v': 2}, True)
    """
    key = {"version": EVIDENCE_VERSION, **key}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir / kind / f"{name}.json"
    try:
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and stored.get("key") == key:
            return dict(stored["entry"]), True
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or unreadable: computed below
    value = compute()
    with contextlib.suppress(OSError):  # a read-only cache costs time later, not this result
        atomic_write_json(path, {"key": key, "entry": value})
    return value, False


def cached_evidence(
    model: nn.Module,
    data: UnlearningData,
    settings: EvidenceSettings,
    *,
    weights_sha256: str,
    cache_dir: Path,
    seed: int = 0,
    architecture: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """:func:`evidence_entry` of a checkpoint's model, from ``cache_dir/evidence`` when an
    entry for exactly these weights, data and settings is there, else computed and stored.

    Args:
        model: the model loaded from the checkpoint whose weights hash to ``weights_sha256``.
        data: the split.
        settings: how the accuracies are read.
        weights_sha256: :func:`file_sha256` of the checkpoint's weights file.
        cache_dir: the cache folder (``$BUNLEARN_CACHE``).
        seed: seeds the depth evidence.
        architecture: what else defines the model besides its weights (its name, options,
            a user architecture's source digest), JSON-able.

    Returns:
        ``(entry, reused)``.
    """
    fingerprint = data_fingerprint(data)
    if fingerprint is None:
        return evidence_entry(model, data, settings, seed=seed), False
    key = {"weights_sha256": weights_sha256, "data": fingerprint,
           "settings": asdict(settings), "depth_seed": seed,
           "architecture": architecture}  # fmt: skip
    return cached_json(
        cache_dir, "evidence", key, lambda: evidence_entry(model, data, settings, seed=seed)
    )
