"""The deletion ledger: requests over time on one model, its history and its verification."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from boundary_unlearning import read_history, verify_history
from boundary_unlearning.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from boundary_unlearning.cli import main
from boundary_unlearning.errors import CheckpointError
from boundary_unlearning.ledger import (
    LEDGER_FORMAT,
    entry_hash,
    file_sha256,
    ledger_entries,
    new_entry,
    sealed_ledger,
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """orig (digits MLP) -> f1 (forgot 3) -> f2 (forgot 5): two requests over time."""
    root = tmp_path_factory.mktemp("chain")
    mp = pytest.MonkeyPatch()
    mp.setenv("BUNLEARN_CACHE", str(root / "cache"))
    quick = ["--quiet", "--method", "boundary_shrink", "--set", "depth=outputs"]
    assert main(["train", "--model", "mlp", "--epochs", "3", "--out", str(root / "orig"),
                 "--quiet"]) == 0  # fmt: skip
    assert main(["unlearn", "--checkpoint", str(root / "orig"), "--forget-class", "3",
                 "--out", str(root / "f1"), *quick]) == 0  # fmt: skip
    assert main(["unlearn", "--checkpoint", str(root / "f1"), "--forget-class", "5",
                 "--out", str(root / "f2"), *quick]) == 0  # fmt: skip
    yield root
    mp.undo()


def _copy(chain: Path, tmp_path: Path) -> Path:
    for name in ("orig", "f1", "f2"):
        shutil.copytree(chain / name, tmp_path / name)
    return tmp_path


def _flip_byte(path: Path, at: int = -8) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 1
    path.write_bytes(bytes(blob))


def test_each_checkpoint_records_every_deletion_and_names_its_parent_by_content(
    chain: Path,
) -> None:
    entries = read_history(chain / "f2")
    assert [e["classes"] for e in entries] == [[3], [5]]
    assert entries[0]["input"]["sha256"] == file_sha256(chain / "orig" / "model.safetensors")
    assert entries[0]["output"]["sha256"] == entries[1]["input"]["sha256"]
    assert entries[1]["output"]["sha256"] == file_sha256(chain / "f2" / "model.safetensors")
    assert entries[1]["previous"] == entries[0]["hash"] == entry_hash(entries[0])
    assert read_history(chain / "f1") == entries[:1]
    assert {"date", "version", "method", "hyperparameters"} <= set(entries[1])
    assert entries[1]["evidence"]["3"]["verdict"] == "held"  # the earlier class, measured again
    report = json.loads((chain / "f2" / "report.json").read_text())
    assert report["forgotten_before"] == [3]
    retained = report["results"]["boundary_shrink"]["per_class"]
    assert set(retained) == {"3", "5"} and retained["3"]["earlier"]


def test_history_verify_holds_on_the_untouched_chain(
    chain: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["history", str(chain / "f2"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "every deletion holds" in out and "class 3" in out and "class 5" in out
    check = verify_history(chain / "f2")
    assert [link.deletions for link in check.chain] == [0, 1, 2] and check.holds


@pytest.mark.parametrize("name", ["orig", "f1", "f2"])
def test_one_changed_byte_in_any_weights_file_is_named(
    chain: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(chain, tmp_path)
    _flip_byte(root / name / "model.safetensors")
    assert main(["history", str(root / "f2"), "--verify"]) == 2
    err = capsys.readouterr().err
    assert f"{name}/model.safetensors" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["f1", "f2"])
def test_an_edited_ledger_entry_is_named(
    chain: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(chain, tmp_path)
    meta_path = root / name / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["ledger"]["entries"][0]["method"] = "retrain"
    meta_path.write_text(json.dumps(meta))
    assert main(["history", str(root / "f2"), "--verify"]) == 2
    assert f"{name}/model.json" in capsys.readouterr().err


def test_a_deletion_that_does_not_hold_fails_verification(chain: Path, tmp_path: Path) -> None:
    # a ledger that claims class 3 forgotten on weights that still know it
    model, meta = load_checkpoint(chain / "orig")
    weights = chain / "orig" / "model.safetensors"
    entry = new_entry(classes=[3], class_names=["3"], method="boundary_shrink",
                      hyperparameters={}, evidence={}, input_sha256=file_sha256(weights),
                      input_path=str(weights))  # fmt: skip
    shutil.copytree(chain / "orig", tmp_path / "orig")

    def seal(sha: str) -> dict[str, object]:
        return {"ledger": sealed_ledger([], entry, output_sha256=sha)}

    save_checkpoint(model, tmp_path / "liar", meta, seal=seal)
    check = verify_history(tmp_path / "liar")
    assert not check.holds and check.classes["3"]["forget"] > 0.5
    assert main(["history", str(tmp_path / "liar"), "--verify"]) == 1


def test_forgetting_an_already_forgotten_class_says_so(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["unlearn", "--checkpoint", str(chain / "f2"), "--method", "finetune",
                 "--forget-class", "3", "--out", str(tmp_path / "again"), "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "already forgotten (ledger entry 1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "again" / "model.safetensors").exists()


def _rewrite_ledger(folder: Path, change: str) -> None:
    meta_path = folder / "model.json"
    meta = json.loads(meta_path.read_text())
    if change == "format":
        meta["ledger"]["format"] = LEDGER_FORMAT + 1
    else:  # a class digits does not have, with every hash recomputed
        entry = {k: v for k, v in meta["ledger"]["entries"][0].items() if k != "hash"}
        entry.update(classes=[12], class_names=["twelve"])
        meta["ledger"]["entries"] = [{**entry, "hash": entry_hash(entry)}]
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(("change", "message"), [
    ("format", "newer than this version"), ("class", "names class 12"),
])  # fmt: skip
def test_bad_ledgers_get_one_line_and_exit_2(
    chain: Path, tmp_path: Path, change: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(chain / "f1", tmp_path / "f1")
    _rewrite_ledger(tmp_path / "f1", change)
    code = main(["unlearn", "--checkpoint", str(tmp_path / "f1"), "--method", "finetune",
                 "--forget-class", "7", "--out", str(tmp_path / "next"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_ledger_entries_refuse_a_dropped_entry() -> None:
    first = sealed_ledger([], _entry(3), output_sha256="b" * 64)["entries"]
    both = sealed_ledger(first, _entry(5), output_sha256="c" * 64)["entries"]
    assert ledger_entries({"ledger": {"format": 1, "entries": both}}, "m") == both
    with pytest.raises(CheckpointError, match="entry 1 .* was edited"):
        ledger_entries({"ledger": {"format": 1, "entries": both[1:]}}, "m")
    assert ledger_entries(read_metadata("/nonexistent"), "m") == []


def _entry(cls: int) -> dict[str, object]:
    return new_entry(classes=[cls], class_names=[str(cls)], method="m", hyperparameters={},
                     evidence={}, input_sha256="a" * 64, input_path="p", date="d")  # fmt: skip


def test_a_checkpoint_unlearned_before_the_ledger_keeps_its_deletion(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old"
    shutil.copytree(chain / "f1", old)
    meta = json.loads((old / "model.json").read_text())
    del meta["ledger"]  # as the version before the ledger wrote it: "unlearned" only
    (old / "model.json").write_text(json.dumps(meta))
    code = main(["unlearn", "--checkpoint", str(old), "--method", "boundary_shrink",
                 "--set", "depth=outputs", "--forget-class", "5", "--out",
                 str(tmp_path / "next"), "--quiet"])  # fmt: skip
    assert code == 0 and "before the deletion ledger existed" in capsys.readouterr().err
    entries = read_history(tmp_path / "next")
    assert [e["classes"] for e in entries] == [[3], [5]] and entries[0]["legacy"]
    assert entries[1]["evidence"]["3"]["verdict"] == "held"
    assert main(["history", str(tmp_path / "next"), "--verify"]) == 0
    assert "rebuilt from a checkpoint unlearned before the ledger" in capsys.readouterr().out
