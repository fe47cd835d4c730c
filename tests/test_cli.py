"""The everyday commands, end to end on digits (the embedded data)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from boundary_unlearning.cli import main


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUNLEARN_CACHE", str(tmp_path / "cache"))


def test_methods_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    names = capsys.readouterr().out.split()
    assert {"boundary_shrink", "boundary_expanding", "retrain"} <= set(names)


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "boundary_unlearning", "models"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "allcnn" in out.stdout.split()


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow  # end to end, 20-60 s: .ci/run runs it by name
def test_train_then_unlearn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "orig"
    args = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "3", "--out", str(ckpt)]
    assert main([*args, "--quiet"]) == 0
    meta = json.loads((ckpt / "model.json").read_text())
    assert meta["dataset"] == "digits" and meta["model"] == "mlp" and meta["seed"] == 0
    assert meta["hyperparameters"]["epochs"] == 3 and 0.5 < meta["test_accuracy"] <= 1.0
    before = _digest(ckpt)
    # a second identical call reuses the checkpoint
    assert main(args) == 0
    assert "reused" in capsys.readouterr().out
    assert _digest(ckpt) == before

    out = tmp_path / "forgot3"
    code = main([
        "unlearn", "--checkpoint", str(ckpt), "--method", "boundary_shrink",
        "--forget-class", "3", "--set", "eps=0.25", "--set", "lr=1e-3", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    assert _digest(ckpt) == before  # the input checkpoint is only read
    report = json.loads((out / "report.json").read_text())
    after = report["results"]["boundary_shrink"]
    assert after["acc"]["forget"] < report["results"]["original"]["acc"]["forget"]
    assert after["hyperparameters"]["eps"] == 0.25
    # the depth line: the probe beside the original's, each with its standard error
    se = [report["results"][m]["probe_forget_acc_se"] for m in ("original", "boundary_shrink")]
    line = next(t for t in capsys.readouterr().out.splitlines() if t.startswith("depth:"))
    assert all(f"±{100 * v:.1f}" in line for v in se), line
    unlearned_meta = json.loads((out / "model.json").read_text())
    assert unlearned_meta["unlearned"]["method"] == "boundary_shrink"
    assert (out / "model.safetensors").is_file() and (out / "report.md").is_file()


@pytest.mark.slow  # end to end, 20-60 s: .ci/run runs it by name
def test_run_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main([
        "run", "--dataset", "digits", "--model", "mlp", "--forget-class", "3",
        "--methods", "boundary_expanding", "--epochs", "3", "--out", str(out), "--quiet",
        "--set", "boundary_expanding.lr=1e-3",
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "digits" and report["forget_classes"] == [3]
    assert set(report["results"]) >= {"original", "retrain", "boundary_expanding"}
    for entry in report["results"].values():
        assert set(entry["acc"]) == {"retain", "forget", "test_retain", "test_forget"}
        assert entry["seconds"] > 0
    assert report["results"]["retrain"]["acc"]["forget"] == 0.0


@pytest.mark.slow  # end to end, 20-60 s: .ci/run runs it by name
def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("Acc on D_r", "Acc on D_f", "Acc on D_tr", "Acc on D_tf", "Time (s)"):
        assert row in printed
    report = json.loads((out / "report.json").read_text())
    results = report["results"]
    assert list(results)[:2] == ["original", "retrain"]
    for method in ("boundary_shrink", "boundary_expanding"):
        assert results[method]["acc"]["forget"] <= 0.10
        assert results[method]["acc"]["test_forget"] <= 0.10
        drop = results["original"]["acc"]["test_retain"] - results[method]["acc"]["test_retain"]
        assert drop <= 0.05
    assert "Acc on D_f" in (out / "report.md").read_text()
    # running the demo again continues its own folder: same numbers, nothing recomputed
    stage = next((out / "stages").rglob("boundary_shrink.json"))
    mtime = stage.stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["results"]["boundary_shrink"]["acc"] == results["boundary_shrink"]["acc"]
    assert stage.stat().st_mtime_ns == mtime
