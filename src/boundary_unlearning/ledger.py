"""The deletion ledger a checkpoint carries in its ``model.json``: every class the model was
made to forget, request by request, each entry naming its parent by content.

``bunlearn unlearn`` copies the input checkpoint's ledger and appends one entry: the classes
(indices and names), the method and its settings, the date, the library version, the verdict
and key metrics of every forgotten class, and the SHA-256 of the input and of the output
weights file. Each entry also holds the hash of the entry before it (``previous``) and its own
``hash`` over all of that, so an edited entry, or one dropped from the middle, no longer
matches; :mod:`~boundary_unlearning.history` walks the chain of files and re-measures.

The hashes make the files *tamper-evident* against an edit of one file, not signed: someone
who rewrites every file of the chain and recomputes every hash is not detected by the files
alone (keep the last output hash elsewhere to guard against that).

Example:
    >>> entry = new_entry(classes=[3], class_names=["3"], method="boundary_shrink",
    ...                   hyperparameters={}, evidence={}, input_sha256="a" * 64,
    ...                   input_path="orig/model.safetensors", date="2026-01-01T00:00:00+00:00")
    >>> ledger = sealed_ledger([], entry, output_sha256="b" * 64)
    >>> check_entries(ledger["entries"], "demo"); forgotten_classes(ledger["entries"])
    [3]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import CheckpointError

__all__ = [
    "LEDGER_FORMAT",
    "check_entries",
    "entry_hash",
    "file_sha256",
    "forgotten_classes",
    "ledger_entries",
    "library_version",
    "new_entry",
    "sealed_ledger",
]

# The ledger format this version writes and reads; a newer one is refused (its meaning may
# have changed), an older one is read as it is.
LEDGER_FORMAT = 1
_REQUIRED = ("classes", "class_names", "method", "input", "output", "previous", "hash")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex.

    Args:
        path: the file.

    Returns:
        64 hex digits.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "w"
        >>> _ = file.write_bytes(b"")
        >>> file_sha256(file)[:16]
        'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash an entry carries: SHA-256 of its canonical JSON (sorted keys, every field but
    ``hash``; ``previous``, the hash of the entry before, is one of them).

    Args:
        entry: a ledger entry.

    Returns:
        64 hex digits.

    Example:
        >>> entry_hash({"a": 1, "hash": "x"}) == entry_hash({"a": 1})
        True
    """
    body = {k: v for k, v in entry.items() if k != "hash"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def library_version() -> str:
    """The installed boundary-unlearning version (``"unknown"`` when not installed).

    Example:
        >>> library_version() != ""
        True
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("boundary-unlearning")
    except PackageNotFoundError:
        return "unknown"


def new_entry(
    *,
    classes: Sequence[int],
    class_names: Sequence[str],
    method: str,
    hyperparameters: Mapping[str, Any],
    evidence: Mapping[str, Any],
    input_sha256: str,
    input_path: str,
    date: str | None = None,
) -> dict[str, Any]:
    """One deletion request, before its output is written (:func:`sealed_ledger` adds the
    output hash and the chain hashes).

    Args:
        classes: the classes this request forgot.
        class_names: their names.
        method: the method's name.
        hyperparameters: its resolved settings.
        evidence: per forgotten class (this request's and earlier ones, index as text):
            ``forget``/``test_forget`` accuracies and ``verdict``; and the model's
            ``retain``/``test_retain`` accuracies under ``"acc"``.
        input_sha256: the SHA-256 of the input weights file.
        input_path: where the input weights were read (resolved).
        date: ISO 8601 time (default: now, UTC).

    Returns:
        The entry.
    """
    return {
        "classes": [int(c) for c in classes],
        "class_names": [str(n) for n in class_names],
        "method": method,
        "hyperparameters": dict(hyperparameters),
        "date": date or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": library_version(),
        "evidence": dict(evidence),
        "input": {"sha256": input_sha256, "path": input_path},
    }


def sealed_ledger(
    entries: Sequence[Mapping[str, Any]], entry: Mapping[str, Any], *, output_sha256: str
) -> dict[str, Any]:
    """The ledger to write beside the output: ``entries`` (the input's) and ``entry`` with
    the output's hash, the previous entry's hash and its own.

    Args:
        entries: the input checkpoint's (checked) entries.
        entry: the new entry (:func:`new_entry`).
        output_sha256: the SHA-256 of the output weights file.

    Returns:
        ``{"format": LEDGER_FORMAT, "entries": [...]}``.
    """
    last = entries[-1]["hash"] if entries else None
    sealed = {**entry, "output": {"sha256": output_sha256}, "previous": last}
    sealed["hash"] = entry_hash(sealed)
    return {"format": LEDGER_FORMAT, "entries": [*map(dict, entries), sealed]}


def ledger_entries(meta: Mapping[str, Any] | None, source: str) -> list[dict[str, Any]]:
    """The checked entries of a checkpoint's ledger (``[]`` when it has none).

    Args:
        meta: the checkpoint's metadata (``None``: a plain weights file).
        source: the metadata file, for the error message.

    Returns:
        The entries, oldest first.

    Raises:
        CheckpointError: a ledger from a newer format, or a malformed or edited one.

    Example:
        >>> ledger_entries({"ledger": {"format": 99, "entries": []}}, "f/model.json")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.CheckpointError: f/model.json: its deletion ledger has ...
    """
    ledger = (meta or {}).get("ledger")
    if ledger is None:
        return []
    fmt = ledger.get("format") if isinstance(ledger, Mapping) else None
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > LEDGER_FORMAT:
        raise CheckpointError(
            f"{source}: its deletion ledger has format {fmt}, newer than this version of "
            f"boundary-unlearning reads ({LEDGER_FORMAT}); upgrade boundary-unlearning"
        )
    entries = ledger.get("entries") if isinstance(ledger, Mapping) else None
    if fmt is None or not isinstance(entries, list):
        raise CheckpointError(
            f"{source}: its deletion ledger is malformed (no format or entries); restore the "
            "model.json written with the checkpoint"
        )
    check_entries(entries, source)
    return [dict(e) for e in entries]


def check_entries(entries: Sequence[Any], source: str) -> None:
    """Raise unless every entry has its fields, names the entry before it and still has the
    hash it was written with.

    Args:
        entries: the ledger's entries.
        source: the metadata file, for the error message.

    Raises:
        CheckpointError: a missing field, a broken chain or an edited entry.
    """
    previous = None
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, Mapping) or any(k not in entry for k in _REQUIRED):
            raise CheckpointError(
                f"{source}: deletion ledger entry {number} is malformed; restore the model.json "
                "written with the checkpoint"
            )
        classes = entry["classes"]
        if not isinstance(classes, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in classes
        ):
            raise CheckpointError(f"{source}: deletion ledger entry {number} has bad classes")
        if entry["previous"] != previous or entry_hash(entry) != entry["hash"]:
            raise CheckpointError(
                f"{source}: deletion ledger entry {number} (forgetting "
                f"{', '.join(map(str, entry['class_names']))}) was edited: its hash no longer "
                "matches; restore the model.json written with the checkpoint"
            )
        previous = entry["hash"]


def forgotten_classes(entries: Sequence[Mapping[str, Any]]) -> list[int]:
    """Every class the ledger's requests forgot, sorted.

    Args:
        entries: checked ledger entries.

    Returns:
        Class indices.

    Example:
        >>> forgotten_classes([{"classes": [7]}, {"classes": [3, 7]}])
        [3, 7]
    """
    return sorted({int(c) for entry in entries for c in entry["classes"]})
