"""Progress suits where it goes (issue 22): bars on a terminal, plain lines on a file or a CI
log (no carriage-return frames, no escape codes), nothing with --quiet."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm.auto import tqdm

from boundary_unlearning.progress import LineProgress, on_terminal, progress_bar

SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = ["--dataset", "digits", "--model", "mlp", "--epochs", "1", "--no-relearn", "--no-figures",
        "--no-probe", "--methods", "boundary_shrink"]  # fmt: skip


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_choice_follows_the_stream_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUNLEARN_PROGRESS", raising=False)
    assert on_terminal(_Terminal()) and not on_terminal(io.StringIO())
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert isinstance(progress_bar(desc="x", total=2), tqdm)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress_bar(desc="x", total=2), LineProgress)
    monkeypatch.setenv("BUNLEARN_PROGRESS", "bars")
    assert on_terminal(io.StringIO())
    monkeypatch.setenv("BUNLEARN_PROGRESS", "lines")
    assert not on_terminal(_Terminal())


def test_lines_are_plain_and_one_per_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    bar = LineProgress(desc="training", total=5, unit="step", file=log)
    for _ in range(5):
        bar.update(1)
    bar.set_postfix(loss="0.1234")
    bar.close()
    bar.close()  # once
    text = log.getvalue()
    assert text.count("\n") == 1 and "\r" not in text and "\x1b[" not in text
    assert text.startswith("bunlearn: training: 5/5 steps in ") and text.endswith("loss=0.1234\n")
    slow = LineProgress(desc="long", total=3, file=log, every=0.0)  # a line per update
    slow.update(1)
    assert "bunlearn: long: 1/3 it after" in log.getvalue()


def test_quiet_shows_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(range(3), desc="hidden", show=False) as bar:
        assert list(bar) == [0, 1, 2]
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_a_run_logged_to_a_file_has_no_frames(tmp_path: Path) -> None:
    """`bunlearn run ... > log 2>&1`, as a CI job does: a line per stage, no frames."""
    log = tmp_path / "run.log"
    env = {**os.environ, "PYTHONPATH": SRC, "BUNLEARN_CACHE": str(tmp_path / "cache")}
    env.pop("BUNLEARN_PROGRESS", None)
    with log.open("w") as handle:
        code = subprocess.call(
            [sys.executable, "-m", "boundary_unlearning", "run", *FAST, "--out",
             str(tmp_path / "out")], stdout=handle, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    text = log.read_text()
    assert code == 0, text
    assert "\r" not in text and "\x1b[" not in text
    assert "bunlearn: seed 0: boundary_shrink\n" in text
    assert "bunlearn: original: " in text and " steps in " in text
