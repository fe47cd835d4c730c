"""Nothing lost: a killed ``bunlearn run`` resumes with ``--resume``, reusing every finished
stage, and ends with the report an uninterrupted run writes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import boundary_unlearning.experiment as experiment
from boundary_unlearning.cli import main
from boundary_unlearning.config import ExperimentConfig
from boundary_unlearning.experiment import run_experiment

ARGS = ["run", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--no-relearn",
        "--no-figures", "--methods", "boundary_shrink,boundary_expanding"]  # fmt: skip
VOLATILE = {"seconds", "speedup"}  # wall-clock numbers differ between any two runs


def deterministic(value: Any) -> Any:
    """``value`` without wall-clock timings."""
    if isinstance(value, dict):
        return {k: deterministic(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [deterministic(v) for v in value]
    return value


def _stage_files(out: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted((out / "stages").rglob("*.json"))
        if not p.name.startswith(".")
    }


@contextlib.contextmanager
def cpu_load(processes: int = 1, seconds: float = 300.0) -> Iterator[None]:
    """Busy-loop processes beside the block (a loaded machine), each ending by itself after
    ``seconds`` at the latest and killed when the block ends."""
    loop = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    busy = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(processes)]
    try:
        yield
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


def test_subprocesses_compute_with_the_tests_thread_count() -> None:
    """The cause of the kill-and-resume flake: a `bunlearn run` subprocess trained with
    torch's default thread count (or the shell's OMP_NUM_THREADS), the in-process reference
    with conftest's, and training results depend on the count."""
    code = "import torch; print(torch.get_num_threads())"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ}, check=True).stdout  # fmt: skip
    assert int(shown) == torch.get_num_threads()


def _kill_after(out: Path, marker: Path, sig: int, env: dict[str, str]) -> int:
    """Start ``bunlearn run`` in a subprocess; send ``sig`` once ``marker`` exists."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "boundary_unlearning", *ARGS, "--quiet", "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while not marker.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"run ended before {marker.name} appeared: {proc.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.mark.slow  # end to end, 20-60 s: .ci/run runs it by name
def test_killed_run_resumes_to_the_same_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL (no chance to clean up) right after the first method's stage is saved."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BUNLEARN_CACHE", str(cache))
    env = {**os.environ, "BUNLEARN_CACHE": str(cache)}
    out = tmp_path / "interrupted"
    with cpu_load():  # it failed only on a loaded machine
        code = _kill_after(
            out, out / "stages" / "seed-0" / "boundary_shrink.json", signal.SIGKILL, env
        )
    assert code == -signal.SIGKILL
    assert not (out / "report.json").exists()  # stopped mid-way
    finished = _stage_files(out)
    assert {"stages/seed-0/original.json", "stages/seed-0/retrain.json",
            "stages/seed-0/boundary_shrink.json"} <= set(finished)  # fmt: skip
    assert "stages/seed-0/boundary_expanding.json" not in finished

    # without --resume the unfinished run is protected
    assert main([*ARGS, "--quiet", "--out", str(out)]) == 2
    assert "unfinished run" in capsys.readouterr().err

    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    for name in ("original", "retrain", "boundary_shrink"):
        assert f"seed 0: {name}: reused finished stage" in printed
    assert "seed 0: boundary_expanding: reused" not in printed
    after = _stage_files(out)
    for path, (mtime, content) in finished.items():  # finished stages were not recomputed
        assert after[path] == (mtime, content), path
    resumed = json.loads((out / "report.json").read_text())

    reference = tmp_path / "uninterrupted"
    assert main([*ARGS, "--out", str(reference)]) == 0  # same flags as the resumed run
    expected = json.loads((reference / "report.json").read_text())
    ours, theirs = deterministic(resumed["results"]), deterministic(expected["results"])
    differ = [k for k in theirs if ours.get(k) != theirs[k]]
    assert not differ, f"resumed and uninterrupted runs differ in {differ}"
    assert deterministic(resumed) == deterministic(expected)
    assert resumed["results"]["boundary_shrink"]["seconds"] > 0


def test_resume_recomputes_a_corrupt_stage_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BUNLEARN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = [*ARGS, "--out", str(out)]
    assert main(args) == 0
    first = json.loads((out / "report.json").read_text())
    stage = out / "stages" / "seed-0" / "boundary_expanding.json"
    stage.write_text(stage.read_text()[:40])  # a truncated file, as after a crash
    assert main([*args, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "seed 0: boundary_shrink: reused finished stage" in printed
    assert "seed 0: boundary_expanding: reused" not in printed
    assert deterministic(json.loads((out / "report.json").read_text())) == deterministic(first)
    json.loads(stage.read_text())  # rewritten whole


def test_resume_gives_the_figures_the_saved_unlearned_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figure stage sees the first seed's unlearned models; after an interruption
    between a method and the figures, it gets them back from the saved weights."""
    seen: list[dict[str, dict[str, torch.Tensor]]] = []

    def fake_figure_data(models: dict[str, nn.Module], data: Any, *, seed: int) -> dict[str, Any]:
        seen.append({n: {k: v.clone() for k, v in m.state_dict().items()}
                     for n, m in models.items()})  # fmt: skip
        if len(seen) == 1:
            raise KeyboardInterrupt  # interrupted right before the figures
        return {"models": {}}

    monkeypatch.setattr(experiment, "figure_data", fake_figure_data)
    config = ExperimentConfig(
        dataset="digits", model="mlp", epochs=2, methods=["boundary_shrink"], relearn=False,
        progress=False, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "out")
    report = run_experiment(config, tmp_path / "out", resume=True)
    assert report["figures_data"] == {"models": {}}
    first, second = seen
    assert set(second) == {"original", "retrain", "boundary_shrink"}
    for name, state in first.items():
        assert all(torch.equal(state[k], second[name][k]) for k in state), name
    # a third run reuses the figure stage itself
    run_experiment(config, tmp_path / "out", resume=True)
    assert len(seen) == 2


def test_ctrl_c_says_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_experiment", interrupted)
    assert main([*ARGS, "--quiet", "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err.strip()
    assert "interrupted" in err and "--resume" in err and "\n" not in err
