"""A checkpoint's deletion history (``bunlearn history``): the ledger's chain of requests,
and its verification: every file of the chain found by its hash, every ledger entry as it
was written, and every forgotten class measured again on the data.

Example:
    >>> import tempfile
    >>> from torch import nn
    >>> from boundary_unlearning.checkpoint import save_checkpoint
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = save_checkpoint(nn.Linear(2, 2), folder, {"note": "no deletions yet"})
    >>> read_history(folder)
    []
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import checkpoint_paths, load_checkpoint, read_metadata
from .errors import CheckpointError
from .ledger import file_sha256, ledger_entries

__all__ = [
    "ChainLink",
    "HistoryCheck",
    "format_history",
    "read_history",
    "verify_chain",
    "verify_history",
]

_WEIGHTS = (".safetensors", ".pt", ".pth", ".bin")


def read_history(checkpoint: str | Path) -> list[dict[str, Any]]:
    """The deletion requests a checkpoint records, oldest first (``[]`` for a model that
    forgot nothing, or a plain weights file). Each entry is checked against the hash it was
    written with.

    Args:
        checkpoint: the checkpoint's folder or weights file.

    Returns:
        The ledger entries: ``classes``, ``class_names``, ``method``, ``hyperparameters``,
        ``date``, ``version``, ``evidence`` (per class: ``forget``, ``test_forget``,
        ``verdict``; and ``acc``), ``input`` and ``output`` (``sha256``; the input's
        ``path``), ``previous`` and ``hash``.

    Raises:
        CheckpointError: a ledger from a newer format, or an edited or malformed one.
    """
    return ledger_entries(read_metadata(checkpoint), str(checkpoint_paths(checkpoint)[1]))


@dataclass(frozen=True)
class ChainLink:
    """One file of a verified chain: the weights, their SHA-256, and how many deletions
    they carry (0: the original).

    Example:
        >>> ChainLink(Path("orig/model.safetensors"), "ab" * 32, 0).deletions
        0
    """

    weights: Path
    sha256: str
    deletions: int


@dataclass
class HistoryCheck:
    """What :func:`verify_history` found: the chain from the original to the checkpoint,
    and each forgotten class's share of training (``forget``) and test (``test_forget``)
    images still predicted as the class, with ``holds``.

    Example:
        >>> check = HistoryCheck([], {"3": {"forget": 0.0, "holds": True}})
        >>> check.holds
        True
    """

    chain: list[ChainLink]
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        """Whether every deletion still holds."""
        return all(row.get("holds") for row in self.classes.values())


def _named(recorded: Path, child: Path) -> list[Path]:
    """The files that claim to be a parent by name: the same folder (or file) name beside
    the child's folder, then the recorded path."""
    beside = child.parent.parent / recorded.parent.name / recorded.name
    return list(dict.fromkeys(p for p in (beside, recorded) if p.is_file()))


def _others(search: Sequence[Path], child: Path) -> list[Path]:
    """Every weights file in the folders beside the child's and in ``search``."""
    found: list[Path] = []
    for root in (child.parent.parent, *search):
        if root.is_dir():
            found += sorted(p for p in root.glob("*/*") if p.suffix in _WEIGHTS)
            found += sorted(p for p in root.glob("*") if p.suffix in _WEIGHTS)
    return list(dict.fromkeys(found))


def _find_parent(
    entry: Mapping[str, Any], child: Path, search: Sequence[Path], hashes: dict[Path, str]
) -> Path:
    """The weights file whose SHA-256 is the one ``entry`` records for its input: the file
    of that name beside the child, or at the recorded path (either must match: a changed
    file is named); only when neither exists, any weights file beside or in ``search``."""
    want = entry["input"]["sha256"]
    recorded = Path(str(entry["input"].get("path", "")))

    def sha(path: Path) -> str:
        if path.resolve() not in hashes:
            hashes[path.resolve()] = file_sha256(path)
        return hashes[path.resolve()]

    named = _named(recorded, child)[:1]  # the one beside the child, else the recorded one
    if named and sha(named[0]) == want:
        return named[0]
    if named:
        raise CheckpointError(
            f"{named[0]}: its SHA-256 {sha(named[0])[:12]}... is not the {want[:12]}... that "
            f"{checkpoint_paths(child)[1]} records for its parent: the weights changed since; "
            "restore them"
        )
    for path in _others(search, child):
        if path.resolve() != child.resolve() and sha(path) == want:
            return path
    raise CheckpointError(
        f"the parent of {child} (weights SHA-256 {want[:12]}...) is not at {recorded} nor "
        "beside it; pass --search with the folder that holds it"
    )


def _check_parent_ledger(parent: Path, entries: Sequence[Mapping[str, Any]], child: Path) -> None:
    """The parent's own ledger must be the child's copy of it."""
    mine = ledger_entries(read_metadata(parent), str(checkpoint_paths(parent)[1]))
    if [e["hash"] for e in mine] != [e["hash"] for e in entries]:
        raise CheckpointError(
            f"{checkpoint_paths(parent)[1]}: its deletion ledger differs from the copy "
            f"{checkpoint_paths(child)[1]} holds ({len(mine)} vs {len(entries)} entries, or an "
            "edited one); restore the model.json written with it"
        )


def verify_chain(
    checkpoint: str | Path, *, search: Sequence[str | Path] = ()
) -> tuple[list[dict[str, Any]], list[ChainLink]]:
    """Check the hashes along a checkpoint's chain: its weights against its ledger's last
    output, and each parent (found by hash) against the entry naming it, with its own
    ledger equal to the child's copy.

    Args:
        checkpoint: the checkpoint's folder or weights file.
        search: more folders where parents may be.

    Returns:
        ``(entries, chain)``; the chain runs from the original to ``checkpoint``.

    Raises:
        CheckpointError: an edited ledger, changed weights (the file is named), or a parent
            that cannot be found.
    """
    weights, meta_path = checkpoint_paths(checkpoint)
    entries = read_history(checkpoint)
    hashes: dict[Path, str] = {weights.resolve(): file_sha256(weights)}
    chain = [ChainLink(weights, hashes[weights.resolve()], len(entries))]
    if entries and entries[-1]["output"]["sha256"] != chain[0].sha256:
        raise CheckpointError(
            f"{weights}: its SHA-256 {chain[0].sha256[:12]}... is not the "
            f"{entries[-1]['output']['sha256'][:12]}... {meta_path} recorded when it was "
            "written: the weights changed since; restore them"
        )
    paths = [Path(s) for s in search]
    child = weights
    for i in range(len(entries) - 1, -1, -1):
        if entries[i].get("legacy"):  # rebuilt from a pre-ledger checkpoint: no parent hash
            break
        parent = _find_parent(entries[i], child, paths, hashes)
        if i > 0 and not entries[i - 1].get("legacy"):  # a legacy parent has no ledger
            _check_parent_ledger(parent, entries[:i], child)
        chain.insert(0, ChainLink(parent, hashes[parent.resolve()], i))
        child = parent
    return entries, chain


def verify_history(
    checkpoint: str | Path,
    *,
    search: Sequence[str | Path] = (),
    data_root: str | Path | None = None,
) -> HistoryCheck:
    """Verify a checkpoint's deletions: the hashes along its chain (:func:`verify_chain`)
    and every forgotten class measured again on the data set's training and test images.

    Args:
        checkpoint: the checkpoint's folder or weights file (with its ``model.json``).
        search: more folders where the chain's parents may be.
        data_root: the data set's folder (default: the one the checkpoint recorded).

    Returns:
        The :class:`HistoryCheck` (``holds``: every deletion holds).

    Raises:
        CheckpointError: an edited ledger or changed weights (the file is named), a
            missing parent, or a ledger naming a class the data set does not have.
    """
    from .config import ExperimentConfig
    from .data import class_split
    from .deletions import earlier_classes
    from .metrics.forgotten import class_evidence, class_holds
    from .pipeline import load_data

    entries, chain = verify_chain(checkpoint, search=search)
    check = HistoryCheck(chain)
    if not entries:
        return check
    model, meta = load_checkpoint(checkpoint)
    source = meta.get("data")
    root = data_root or (source.get("root") if isinstance(source, dict) else None)
    root = None if root is None else str(root)
    config = ExperimentConfig(dataset=str(meta.get("dataset")), data_root=root,
                              model=str(meta.get("model")))  # fmt: skip
    train_set, test_set, info = load_data(config)
    classes = earlier_classes(entries, info, str(checkpoint_paths(checkpoint)[1]))
    data = class_split(train_set, test_set, classes, num_classes=info.num_classes)
    for cls, row in class_evidence(model, data).items():
        row.pop("earlier", None)
        check.classes[cls] = {"name": info.classes[int(cls)], **row,
                              "holds": bool(class_holds(row["forget"]))}  # fmt: skip
    return check


def format_history(
    entries: Sequence[Mapping[str, Any]], check: HistoryCheck | None = None
) -> list[str]:
    """The lines ``bunlearn history`` prints: one per deletion (oldest first), and with a
    verification the chain's files and each forgotten class measured again.

    Args:
        entries: the checkpoint's ledger entries (:func:`read_history`).
        check: what :func:`verify_history` found, if it ran.

    Returns:
        The lines.

    Example:
        >>> entry = {"classes": [3], "class_names": ["dress"], "method": "boundary_shrink",
        ...          "date": "2026-01-01", "version": "0.1.0",
        ...          "evidence": {"3": {"verdict": "held", "forget": 0.0}},
        ...          "input": {"sha256": "a" * 64}, "output": {"sha256": "b" * 64}}
        >>> print(format_history([entry])[1])
        1. 2026-01-01 boundary_shrink forgot 3 (dress): aaaaaaaaaaaa... -> bbbbbbbbbbbb...; held: 3
    """
    if not entries:
        return ["no deletions recorded: this model was not made to forget any class"]
    out = [f"{len(entries)} deletion request(s), oldest first:"]
    for number, entry in enumerate(entries, 1):
        named = ", ".join(f"{c} ({n})" for c, n in zip(entry["classes"], entry["class_names"],
                                                      strict=False))  # fmt: skip
        verdicts: dict[str, list[str]] = {}
        for cls, row in (entry.get("evidence") or {}).items():
            if isinstance(row, Mapping) and row.get("verdict"):
                verdicts.setdefault(str(row["verdict"]), []).append(cls)
        judged = "; ".join(f"{v}: {', '.join(cs)}" for v, cs in verdicts.items())
        out.append(
            f"{number}. {entry.get('date')} {entry['method']} forgot {named}: "
            f"{entry['input']['sha256'][:12]}... -> {entry['output']['sha256'][:12]}...; {judged}"
        )
    if check is None:
        return out
    if entries and entries[0].get("legacy"):
        out.append(
            f"entry 1 was rebuilt from a checkpoint unlearned before the ledger existed "
            f"({entries[0]['input'].get('path')}): the chain is verified from its output on"
        )
    out.append("verified chain (every SHA-256 matches its ledger entry):")
    out += [f"  {link.deletions}: {link.weights} {link.sha256[:12]}..." for link in check.chain]
    out.append("each forgotten class measured again (share still predicted as the class):")
    for cls, row in check.classes.items():
        state = "holds" if row["holds"] else "FAILED: the class came back"
        out.append(
            f"  class {cls} ({row['name']}): D_f {100 * (row['forget'] or 0):.1f}%, D_tf "
            f"{100 * (row['test_forget'] or 0):.1f}%; {state}"
        )
    out.append("every deletion holds" if check.holds else "a deletion does not hold")
    return out
