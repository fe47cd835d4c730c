"""The experiment runner: seeds aggregated to mean and std, every metric per model, failed
methods isolated, outputs never silently replaced, ``bunlearn report`` re-rendering."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from boundary_unlearning.aggregate import aggregate_seeds
from boundary_unlearning.cli import main
from boundary_unlearning.config import ExperimentConfig
from boundary_unlearning.errors import OutputError
from boundary_unlearning.experiment import run_experiment
from boundary_unlearning.output_dir import load_report

# Tiny settings: an MLP on digits, 2 epochs, no relearn test and no figures (t-SNE).
FAST = ["--dataset", "digits", "--model", "mlp", "--epochs", "2", "--no-relearn",
        "--no-figures", "--quiet"]  # fmt: skip
METHODS = ["boundary_shrink", "boundary_expanding"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUNLEARN_CACHE", str(tmp_path / "cache"))


def _config(**changes: Any) -> ExperimentConfig:
    values: dict[str, Any] = {
        "dataset": "digits", "model": "mlp", "epochs": 2, "methods": METHODS,
        "relearn": False, "figures": False, "progress": False,
    }  # fmt: skip
    return ExperimentConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def two_seed_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("two-seeds")
    out = root / "out"
    report = run_experiment(_config(seeds=[0, 1], cache_dir=str(root / "cache")), out)
    return report, out


def test_report_keeps_the_foundation_keys_and_adds_seeds(
    two_seed_report: tuple[dict[str, Any], Path],
) -> None:
    report, out = two_seed_report
    assert report == json.loads((out / "report.json").read_text())
    assert report["dataset"] == "digits" and report["model"] == "mlp"
    assert report["forget_classes"] == [3] and report["seed"] == 0 and report["seeds"] == [0, 1]
    assert set(report["per_seed"]) == {"0", "1"}
    names = ["original", "retrain", *METHODS]
    assert list(report["results"]) == names and list(report["std"]) == names
    for name in names:
        entry = report["results"][name]
        assert set(entry["acc"]) == {"retain", "forget", "test_retain", "test_forget"}
        assert entry["seconds"] > 0
        # every metric of compute_metrics, for every model including original and retrain
        assert {"paper_asr", "confidence_svc", "loss_lr", "entropy"} <= set(entry["mia"])
        assert {"js_to_retrain", "activation_distance", "zrf"} <= set(entry)
    assert report["results"]["retrain"]["js_to_retrain"] == 0.0
    assert report["results"]["retrain"]["acc"]["forget"] == 0.0
    assert (out / "config.yaml").is_file() and (out / "report.md").is_file()
    assert report["failed"] == {}


def test_each_method_gets_its_depth_from_the_two_references(
    two_seed_report: tuple[dict[str, Any], Path],
) -> None:
    from boundary_unlearning.metrics import depth_shares

    report, out = two_seed_report
    for entries in report["per_seed"].values():
        assert "depth" not in entries["original"] and "depth" not in entries["retrain"]
        for name in METHODS:
            entry = entries[name]
            assert entry["relearn_steps"] is None  # --no-relearn: the probe alone counts
            assert 0.0 <= entry["probe_forget_acc"] <= 1.0
            shares = depth_shares(entry, entries["original"], entries["retrain"])
            assert entry["depth"] == shares["depth"]
            assert entry["depth_shares"] == {k: v for k, v in shares.items() if k != "depth"}
    assert "| Depth ↑ |" in (out / "report.md").read_text()


def test_results_are_mean_and_std_of_the_seeds(
    two_seed_report: tuple[dict[str, Any], Path],
) -> None:
    report, _ = two_seed_report
    seeds = report["per_seed"]
    for name in ["original", "retrain", *METHODS]:
        for key in ["retain", "forget", "test_retain", "test_forget"]:
            values = [seeds[s][name]["acc"][key] for s in ("0", "1")]
            assert report["results"][name]["acc"][key] == pytest.approx(statistics.mean(values))
            assert report["std"][name]["acc"][key] == pytest.approx(statistics.stdev(values))
        values = [seeds[s][name]["mia"]["paper_asr"] for s in ("0", "1")]
        assert report["std"][name]["mia"]["paper_asr"] == pytest.approx(statistics.stdev(values))
    # the two seeds train different originals
    assert seeds["0"]["original"]["acc"] != seeds["1"]["original"]["acc"]
    for name in METHODS:
        for s in ("0", "1"):
            entry = seeds[s][name]
            assert entry["speedup"] == pytest.approx(
                seeds[s]["retrain"]["seconds"] / entry["seconds"]
            )
        assert report["speedup"][name] == report["results"][name]["speedup"]
        assert report["results"][name]["hyperparameters"]["seed"] == 0


def test_one_seed_run_reproduces_that_seed(two_seed_report: tuple[dict[str, Any], Path]) -> None:
    """Same seed, same numbers: a single-seed run (reusing the cached original and retrained
    model) gives seed 0's values of the two-seed run; its std is 0."""
    multi, out = two_seed_report
    config = _config(methods=["boundary_expanding"], cache_dir=str(out.parent / "cache"))
    report = run_experiment(config, out.parent / "single")
    assert report["seeds"] == [0] and report["results"] == report["per_seed"]["0"]
    assert report["std"]["original"]["acc"]["forget"] == 0.0
    for name in ("original", "retrain", "boundary_expanding"):
        got, want = report["results"][name], multi["per_seed"]["0"][name]
        assert {k: v for k, v in got.items() if k not in {"seconds", "speedup"}} == {
            k: v for k, v in want.items() if k not in {"seconds", "speedup"}
        }
    assert report["results"]["original"]["seconds"] == multi["per_seed"]["0"]["original"]["seconds"]


def test_aggregate_seeds_handles_failures_and_missing_values() -> None:
    per_seed = {
        "0": {"a": {"acc": {"forget": 0.2}, "zrf": None, "hyperparameters": {"seed": 0}},
              "b": {"failed": "diverged at step 3"}},
        "1": {"a": {"acc": {"forget": 0.4}, "zrf": 0.5, "hyperparameters": {"seed": 1}},
              "b": {"acc": {"forget": 0.1}}},
        "2": {"a": {"acc": {"forget": 0.6}, "zrf": 0.7, "hyperparameters": {"seed": 2}},
              "b": {"failed": "diverged at step 1"}},
    }  # fmt: skip
    mean, std = aggregate_seeds(per_seed)
    assert mean["a"]["acc"]["forget"] == pytest.approx(0.4)
    assert std["a"]["acc"]["forget"] == pytest.approx(0.2)
    assert mean["a"]["zrf"] == pytest.approx(0.6)  # None (not computable) is skipped
    assert mean["a"]["hyperparameters"] == {"seed": 0} and "hyperparameters" not in std["a"]
    assert mean["b"]["acc"]["forget"] == pytest.approx(0.1)
    assert mean["b"]["failed_seeds"] == {"0": "diverged at step 3", "2": "diverged at step 1"}
    mean, _ = aggregate_seeds({"0": {"c": {"failed": "boom"}}})
    assert mean["c"] == {"failed": "boom"}


@pytest.mark.slow  # end to end, 20-60 s: .ci/run runs it by name
def test_a_diverging_method_fails_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main([
        "run", *FAST, "--methods", "boundary_shrink,boundary_expanding",
        "--set", "boundary_shrink.lr=1.0e+30", "--set", "boundary_shrink.layers=all",
        "--out", str(out),
    ])  # fmt: skip
    assert code == 0  # documented: the run succeeds, each failure prints a warning line
    err = capsys.readouterr().err
    assert "bunlearn: warning: boundary_shrink failed:" in err and "NaN or infinite" in err
    report = load_report(out)
    failed = report["results"]["boundary_shrink"]
    assert set(failed) == {"failed"} and "lower the learning rate" in failed["failed"]
    assert report["failed"] == {"boundary_shrink": failed["failed"]}
    assert report["per_seed"]["0"]["boundary_shrink"]["hyperparameters"]["lr"] == 1e30
    other = report["results"]["boundary_expanding"]
    assert "failed" not in other and 0.0 <= other["acc"]["forget"] <= 1.0
    assert "boundary_shrink" in (out / "report.md").read_text()


@pytest.mark.slow  # end to end, 10-20 s: .ci/run runs it by name
def test_existing_output_needs_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["run", *FAST, "--methods", "boundary_shrink", "--out", str(out)]
    assert main(args) == 0
    first = (out / "report.json").read_bytes()
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds the report of an earlier run" in err and "--overwrite" in err
    assert "\n" not in err
    assert (out / "report.json").read_bytes() == first  # untouched
    assert main([*args, "--seed", "1", "--overwrite"]) == 0
    assert load_report(out)["seed"] == 1
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["seed-1"]  # old stages gone
    assert main([*args, "--resume", "--overwrite"]) == 2
    with pytest.raises(OutputError, match="already holds"):
        run_experiment(_config(methods=["boundary_shrink"]), out)


def test_report_command_rerenders_without_running(
    two_seed_report: tuple[dict[str, Any], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = two_seed_report
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    stages = {p: p.stat().st_mtime_ns for p in (out / "stages").rglob("*")}
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in (out / "stages").rglob("*")} == stages


def test_report_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "report.json not found" in capsys.readouterr().err
    (tmp_path / "report.json").write_text('{"results": {"original": ')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is corrupt" in err and "--resume" in err and "\n" not in err
    (tmp_path / "report.json").write_text("[1, 2]")
    assert main(["report", str(tmp_path)]) == 2
    assert "not a bunlearn report" in capsys.readouterr().err


@pytest.mark.slow  # end to end, 10-20 s: .ci/run runs it by name
def test_forget_fraction_reuses_the_retrained_model(tmp_path: Path) -> None:
    # D_r is the same whatever fraction of D_f a method sees, so a fraction sweep must not
    # retrain (and must report the cached model's real training time, not a load time).
    cache = str(tmp_path / "cache")
    full = run_experiment(_config(cache_dir=cache, methods=["boundary_shrink"]), tmp_path / "a")
    part = run_experiment(
        _config(cache_dir=cache, methods=["boundary_shrink"], forget_fraction=0.25),
        tmp_path / "b",
    )
    assert len(list((tmp_path / "cache" / "retrained").iterdir())) == 1
    seconds = full["results"]["retrain"]["seconds"]
    assert seconds > 0 and part["results"]["retrain"]["seconds"] == seconds
    assert part["results"]["retrain"]["acc"] == full["results"]["retrain"]["acc"]


def test_report_matches_its_typed_schema(two_seed_report: tuple[dict[str, Any], Path]) -> None:
    """report/schema.py describes what run_experiment writes: no key it does not declare."""
    from boundary_unlearning.report import schema

    def keys(typed: Any) -> set[str]:
        return set(typed.__required_keys__ | typed.__optional_keys__)

    report, _ = two_seed_report
    assert schema.as_report(report) is report
    assert set(report) <= keys(schema.Report) and schema.Report.__required_keys__ <= set(report)
    assert set(report["sizes"]) == keys(schema.Sizes)
    entries = [*report["results"].values(), *report["std"].values()]
    entries += [e for seed in report["per_seed"].values() for e in seed.values()]
    for entry in entries:
        assert set(entry) <= keys(schema.ModelEntry)
        assert set(entry["acc"]) == keys(schema.Accuracies)
        assert set(entry["mia"]) <= keys(schema.Attacks)


def test_run_reads_bounded_evidence_and_says_so(
    two_seed_report: tuple[dict[str, Any], Path],
) -> None:
    report, out = two_seed_report
    assert report["evidence"]["full"] is False and report["evidence"]["confidence"] == 0.95
    assert report["evidence"]["totals"]["retain"] == report["sizes"]["retain"]
    for seed_entries in report["per_seed"].values():
        for entry in seed_entries.values():
            assert set(entry["acc_samples"]) == set(entry["acc"]) == set(entry["acc_interval"])
            for key, (low, high) in entry["acc_interval"].items():
                assert low <= entry["acc"][key] <= high
    assert "## How the accuracies were read" in (out / "report.md").read_text()
    # the mean over seeds carries no interval (each is one seed's; per_seed has them)
    assert all("acc_interval" not in entry for entry in report["results"].values())


def test_full_eval_flag_reaches_the_run() -> None:
    from boundary_unlearning.cli import run_settings
    from boundary_unlearning.cli_parser import build_parser

    args = build_parser().parse_args(["run", "--out", "x", "--full-eval"])
    assert run_settings(args)["full_eval"] is True
    assert "full_eval" not in run_settings(build_parser().parse_args(["run", "--out", "x"]))
    assert ExperimentConfig().full_eval is False
