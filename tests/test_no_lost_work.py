"""Runs never lose or silently change work (issue 13): a resume with other settings is refused
naming each change, a narrower request never drops finished results, every path the user
names is used or refused, files honour the umask, messages name the real cause."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from boundary_unlearning.cli import demo_settings, main
from boundary_unlearning.config import write_resolved_config
from boundary_unlearning.experiment import ExperimentConfig

FAST = ["--dataset", "digits", "--model", "mlp", "--epochs", "2", "--no-relearn", "--no-figures"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUNLEARN_CACHE", str(tmp_path / "cache"))


def bunlearn(argv: list[Any]) -> int:
    return main([str(a) for a in argv])


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("bunlearn: error: ") and "\n" not in err, err
    return err


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path, Path]:
    """One finished two-method run (its flags, its folder, its cache)."""
    root = tmp_path_factory.mktemp("finished")
    out, cache = root / "out", root / "cache"
    args = ["run", *FAST, "--methods", "boundary_shrink,boundary_expanding", "--quiet",
            "--cache-dir", str(cache), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    return args, out, cache


def test_resume_with_a_changed_flag_is_refused_naming_the_change(
    finished_run: tuple[list[str], Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 1: --resume --lr 0.02 used to recompute every finished stage silently."""
    args, out, _ = finished_run
    before = _snapshot(out)
    assert main([*args, "--resume", "--lr", "0.02", "--epochs", "3"]) == 2
    err = _error_line(capsys)
    assert "lr 0.01 -> 0.02" in err and "epochs 2 -> 3" in err
    assert "--overwrite" in err and "config.yaml" in err
    assert _snapshot(out) == before  # nothing recomputed, nothing rewritten
    # the same flags continue it (every stage reused)
    assert main([*args, "--resume"]) == 0
    assert _snapshot(out)["report.json"] == before["report.json"]


def test_narrower_resume_never_drops_finished_methods(
    finished_run: tuple[list[str], Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 2: --resume with fewer --methods rewrote report.json without them."""
    args, out, _ = finished_run
    before = _snapshot(out)
    narrower = [a if a != "boundary_shrink,boundary_expanding" else "boundary_shrink" for a in args]
    assert main([*narrower, "--resume"]) == 2
    err = _error_line(capsys)
    assert "methods boundary_shrink,boundary_expanding -> boundary_shrink" in err
    assert _snapshot(out) == before
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) >= {"boundary_shrink", "boundary_expanding"}
    # fewer seeds or no figures are other settings too
    assert main([*args, "--resume", "--seeds", "0,1"]) == 2
    assert "seeds None -> 0,1" in _error_line(capsys)


def test_demo_with_another_class_needs_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 5: `bunlearn demo --forget-class 5` replaced the class-3 demo without a word."""
    out = tmp_path / "bunlearn-demo"
    parsed = type("Args", (), {"forget_class": "3", "seed": 0, "data_root": None,
                               "cache_dir": None, "device": "auto", "quiet": True})()  # fmt: skip
    write_resolved_config(ExperimentConfig(**demo_settings(parsed)), out)  # type: ignore[arg-type]
    (out / "report.json").write_text('{"results": {}}')
    before = _snapshot(out)
    assert bunlearn(["demo", "--forget-class", "5", "--out", out, "--quiet"]) == 2
    err = _error_line(capsys)
    assert "forget_classes 3 -> 5" in err and "--overwrite" in err
    assert _snapshot(out) == before
