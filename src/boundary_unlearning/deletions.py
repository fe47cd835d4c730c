"""A deletion request on a checkpoint that already forgot classes: which classes earlier
requests forgot (from its ledger, checked against the data set), which of the requested
classes are new, and the ledger entry the new checkpoint records."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .data import DatasetInfo, UnlearningData
from .errors import CheckpointError, DataError
from .ledger import entry_hash, file_sha256, forgotten_classes, new_entry
from .report.classes import class_verdict

__all__ = ["earlier_classes", "legacy_entries", "new_classes", "request_entry"]


def earlier_classes(
    entries: Sequence[Mapping[str, Any]], info: DatasetInfo, source: str
) -> tuple[int, ...]:
    """The classes the checkpoint's earlier requests forgot, after checking that each is a
    class of the data set, with the name the ledger recorded.

    Args:
        entries: the checkpoint's checked ledger entries.
        info: the data set the new request runs on.
        source: the metadata file, for the error message.

    Returns:
        The class indices, sorted.

    Raises:
        CheckpointError: a class the data set does not have (or has under another name).

    Example:
        >>> info = DatasetInfo("toy", ("a", "b"), (1, 4, 4), (0.5,), (0.2,))
        >>> earlier_classes([{"classes": [1], "class_names": ["b"]}], info, "f/model.json")
        (1,)
        >>> earlier_classes([{"classes": [5], "class_names": ["z"]}], info, "f/model.json")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.CheckpointError: f/model.json: its deletion ledger names ...
    """
    for entry in entries:
        names = list(entry.get("class_names") or [])
        for i, cls in enumerate(entry["classes"]):
            name = names[i] if i < len(names) else None
            if not 0 <= cls < info.num_classes or (name is not None and info.classes[cls] != name):
                raise CheckpointError(
                    f"{source}: its deletion ledger names class {cls} ({name!r}), which "
                    f"{info.name} does not have (classes 0..{info.num_classes - 1}: "
                    f"{', '.join(info.classes[:12])}); pass the --dataset the model was "
                    "trained on"
                )
    return tuple(forgotten_classes(entries))


def new_classes(
    requested: Sequence[int],
    earlier: Sequence[int],
    entries: Sequence[Mapping[str, Any]],
    info: DatasetInfo,
    *,
    say: bool = True,
) -> list[int]:
    """The requested classes that are not already forgotten; each already forgotten one is
    said in one line (on stderr).

    Args:
        requested: the classes asked for (indices).
        earlier: the classes the checkpoint already forgot.
        entries: its ledger entries (to name the request that forgot each).
        info: the data set (class names).
        say: print the lines.

    Returns:
        The new classes.

    Raises:
        DataError: every requested class is already forgotten.

    Example:
        >>> info = DatasetInfo("toy", ("a", "b", "c"), (1, 4, 4), (0.5,), (0.2,))
        >>> entry = {"classes": [1], "method": "finetune", "date": "2026-01-01"}
        >>> new_classes([1, 2], [1], [entry], info, say=False)
        [2]
    """
    fresh = [c for c in requested if c not in earlier]
    for cls in (c for c in requested if c in earlier):
        number, entry = next((n, e) for n, e in enumerate(entries, 1) if cls in e["classes"])
        line = (
            f"class {cls} ({info.classes[cls]}) is already forgotten (ledger entry {number}: "
            f"{entry.get('method')} on {entry.get('date')})"
        )
        if not fresh:
            raise DataError(
                f"{line}; nothing new to forget: pick another --forget-class ('bunlearn "
                "history' lists what this model forgot)"
            )
        if say:
            print(f"bunlearn: {line}; it stays forgotten and is measured again", file=sys.stderr)
    return fresh


def request_entry(
    report: Mapping[str, Any],
    method: str,
    data: UnlearningData,
    info: DatasetInfo,
    weights_in: Path,
) -> dict[str, Any]:
    """The ledger entry of this request (before its output is written): its classes, the
    method's resolved settings, each forgotten class's evidence and verdict, the model's
    accuracies and the input weights' SHA-256.

    Args:
        report: ``bunlearn unlearn``'s report (with per-class evidence).
        method: the method.
        data: the split it ran on.
        info: the data set.
        weights_in: the input weights file.

    Returns:
        The entry (:func:`~boundary_unlearning.ledger.new_entry`).
    """
    entry = report["results"][method]
    evidence: dict[str, Any] = {"acc": entry.get("acc", {})}
    for cls, row in (entry.get("per_class") or {}).items():
        evidence[cls] = {
            "name": info.classes[int(cls)],
            **row,
            "verdict": class_verdict(report, method, cls),
        }
    return new_entry(
        classes=data.forget_classes, class_names=[info.classes[c] for c in data.forget_classes],
        method=method, hyperparameters=entry.get("hyperparameters", {}), evidence=evidence,
        input_sha256=file_sha256(weights_in), input_path=str(weights_in.resolve()),
    )  # fmt: skip


def legacy_entries(
    meta: Mapping[str, Any], weights: Path, *, say: bool = True
) -> list[dict[str, Any]]:
    """For a checkpoint unlearned before the ledger existed (its ``model.json`` has an
    ``unlearned`` record and no ledger): one entry rebuilt from that record, marked
    ``legacy`` (its parent was named by path only, so no hash of it can be checked), whose
    output is this checkpoint's weights; ``[]`` otherwise. Said in one line on stderr.

    Args:
        meta: the checkpoint's metadata.
        weights: its weights file.
        say: print the line.

    Returns:
        ``[]`` or the one rebuilt entry.

    Example:
        >>> legacy_entries({"ledger": {"format": 1, "entries": []}}, Path("w"))
        []
    """
    old = meta.get("unlearned")
    classes = old.get("forget_classes") if isinstance(old, Mapping) else None
    if (
        "ledger" in meta
        or not isinstance(old, Mapping)
        or not isinstance(classes, list)
        or not classes
    ):
        return []
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        raise CheckpointError(f"{weights}: its 'unlearned' metadata has bad forget_classes")
    names = meta.get("classes") if isinstance(meta.get("classes"), list) else None
    entry = new_entry(
        classes=classes, class_names=[str(names[c]) for c in classes] if names else [],
        method=str(old.get("method")), hyperparameters=old.get("hyperparameters") or {},
        evidence={}, input_sha256="", input_path=str(old.get("from")), date="unknown",
    )  # fmt: skip
    entry.update(legacy=True, version="before the ledger", previous=None,
                 output={"sha256": file_sha256(weights)})  # fmt: skip
    entry["hash"] = entry_hash(entry)
    if say:
        print(f"bunlearn: {weights} was unlearned before the deletion ledger existed: class(es) "
              f"{classes} are treated as forgotten and the ledger starts from these weights",
              file=sys.stderr)  # fmt: skip
    return [entry]
