"""Bounded evidence (issue 22): accuracies estimated on seeded samples with their interval and
sample size, --full-eval reads everything, and the original's evidence is computed once per
checkpoint and data (cached, never trusted from a file that does not match)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import TensorDataset

from boundary_unlearning.cli import main
from boundary_unlearning.data import toy_problem
from boundary_unlearning.evidence import (
    EvidenceSettings,
    cached_evidence,
    data_fingerprint,
    evidence_entry,
)
from boundary_unlearning.metrics.estimate import estimate_accuracy, sample_size, wilson


def _known(total: int, correct: int, seed: int = 12345) -> TensorDataset:
    """One-hot inputs an ``nn.Identity`` classifies: ``correct`` of ``total`` right."""
    labels = torch.zeros(total, dtype=torch.long)
    wrong = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[correct:]
    labels[wrong] = 1
    return TensorDataset(torch.tensor([[1.0, 0.0]]).repeat(total, 1), labels)


def test_wilson_matches_the_reference_formula() -> None:
    """scipy's binomtest gives the Wilson interval (infinite population) to compare with."""
    for hits, n in ((90, 100), (1, 1000), (500, 1000), (0, 50)):
        ref = stats.binomtest(hits, n).proportion_ci(0.95, method="wilson")
        low, high = wilson(hits, n)
        assert math.isclose(low, ref.low, abs_tol=1e-9) and math.isclose(
            high, ref.high, abs_tol=1e-9
        )
    assert wilson(7, 10, total=10) == (0.7, 0.7)  # the whole set: exact
    narrower = wilson(700, 1000, total=1500)
    assert narrower[1] - narrower[0] < wilson(700, 1000)[1] - wilson(700, 1000)[0]


def test_sample_size_shrinks_with_the_margin_and_never_exceeds_the_set() -> None:
    assert sample_size(54000, 0.5, margin=0.01) < sample_size(54000, 0.5, margin=0.005) < 54000
    assert sample_size(300, 0.5, margin=0.001) == 300


def test_sampled_accuracy_brackets_the_truth_and_is_seeded() -> None:
    data = _known(40000, 28000)  # 70% right
    est = estimate_accuracy(nn.Identity(), data, margin=0.01)
    assert est.n < est.total == 40000 and est.low is not None and est.high is not None
    assert est.low <= 0.7 <= est.high and est.high - est.low <= 2 * 0.0105
    assert estimate_accuracy(nn.Identity(), data, margin=0.01) == est  # same seed, same images
    assert estimate_accuracy(nn.Identity(), data, margin=0.01, seed=1).value != est.value
    full = estimate_accuracy(nn.Identity(), data, full=True)
    assert full.value == 0.7 and full.n == full.total and full.low == full.high == 0.7


def test_intervals_cover_at_about_their_level() -> None:
    """Over 60 seeds, a 95% interval holds the true accuracy about 95% of the time."""
    data = _known(20000, 18000)  # 90% right
    hits = 0
    for seed in range(60):
        est = estimate_accuracy(nn.Identity(), data, margin=0.02, seed=seed)
        hits += int(est.low <= 0.9 <= est.high)  # type: ignore[operator]
    assert hits >= 52  # P(fewer than 52 of 60 | 95% coverage) < 1%


def test_a_reports_eight_intervals_hold_together_at_the_stated_confidence() -> None:
    """A report prints eight intervals. Read at 95% each, one of them misses in about a third
    of the reports (1 - 0.95^8); read at ``EvidenceSettings().each``, all eight hold in at
    least 95% of them. 80 seeded reports of eight sets of known accuracy."""
    sets = [(_known(12000, int(12000 * p), seed=1000 + i), p)  # layouts unlike any sample
            for i, p in enumerate((0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97))]  # fmt: skip
    settings = EvidenceSettings()

    def reports_with_a_miss(confidence: float) -> int:
        missed = 0
        for seed in range(80):
            for ds, p in sets:
                e = estimate_accuracy(nn.Identity(), ds, margin=settings.margin,
                                      confidence=confidence, seed=seed)  # fmt: skip
                if not e.low <= p <= e.high:  # type: ignore[operator]
                    missed += 1
                    break
        return missed

    # P(at least 9 of 80 | 5% family-wise) < 1%; P(at most 12 of 80 | 34%) < 1e-4
    assert reports_with_a_miss(settings.each) <= 8
    assert reports_with_a_miss(0.95) >= 13


def test_empty_sets_have_no_accuracy_not_nan() -> None:
    empty = TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    est = estimate_accuracy(nn.Identity(), empty)
    assert est.value is None and est.low is None and est.n == 0


def test_entry_holds_intervals_and_sample_sizes() -> None:
    data, net = toy_problem()
    entry = evidence_entry(net, data, EvidenceSettings(), seed=0)
    assert set(entry) >= {"acc", "acc_interval", "acc_samples", "relearn_steps"}
    for key, value in entry["acc"].items():
        low, high = entry["acc_interval"][key]
        assert low <= value <= high


def test_original_evidence_is_cached_and_checked(tmp_path: Path) -> None:
    data, net = toy_problem()
    settings = EvidenceSettings()
    first, reused = cached_evidence(net, data, settings, weights_sha256="a" * 64,
                                    cache_dir=tmp_path)  # fmt: skip
    assert not reused
    again, reused = cached_evidence(net, data, settings, weights_sha256="a" * 64,
                                    cache_dir=tmp_path)  # fmt: skip
    assert reused and again == first
    _, reused = cached_evidence(net, data, settings, weights_sha256="b" * 64, cache_dir=tmp_path)
    assert not reused  # other weights
    _, reused = cached_evidence(net, data, EvidenceSettings(full=True), weights_sha256="a" * 64,
                                cache_dir=tmp_path)  # fmt: skip
    assert not reused  # other settings
    # a file whose recorded key does not match (edited, or a collision) is not trusted
    for path in (tmp_path / "evidence").glob("*.json"):
        stored = json.loads(path.read_text())
        stored["key"]["weights_sha256"] = "c" * 64
        stored["entry"]["acc"]["forget"] = 0.123
        path.write_text(json.dumps(stored))
    redone, reused = cached_evidence(net, data, settings, weights_sha256="a" * 64,
                                     cache_dir=tmp_path)  # fmt: skip
    assert not reused and redone["acc"]["forget"] == first["acc"]["forget"]


def test_fingerprint_follows_the_data() -> None:
    data, _ = toy_problem()
    other, _ = toy_problem(seed=1)
    assert data_fingerprint(data) != data_fingerprint(other)


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "mlp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUNLEARN_CACHE", str(folder.parent / "cache"))
        assert main(["train", "--model", "mlp", "--epochs", "1", "--batch-size", "256",
                     "--out", str(folder), "--quiet"]) == 0  # fmt: skip
    return folder


@pytest.mark.slow
def test_unlearn_reports_intervals_and_full_eval_reads_everything(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["unlearn", "--checkpoint", str(digits_ckpt), "--forget-class", "3", "--method",
            "finetune", "--set", "epochs=1"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    line = "evidence (95% simultaneous intervals (8 together; each 99.4%), images read): D_r "
    assert line in out
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    totals = report["evidence"]["totals"]
    assert report["evidence"]["full"] is False and report["evidence"]["confidence"] == 0.95
    for name in ("original", "finetune"):
        entry = report["results"][name]
        assert entry["acc_samples"]["forget"] == totals["forget"]  # decides: read whole
        assert set(entry["acc_interval"]) == set(entry["acc"])
    assert "95% simultaneous intervals" in (tmp_path / "s" / "report.md").read_text()
    assert main([*base, "--out", str(tmp_path / "f"), "--full-eval", "--quiet"]) == 0
    full = json.loads((tmp_path / "f" / "report.json").read_text())
    assert full["evidence"]["full"] is True
    assert full["results"]["finetune"]["acc_samples"] == full["evidence"]["totals"]


@pytest.mark.parametrize("first", [0, 1, 2, 3, 7, 43, 64, 99, 100, 150])
def test_relearn_search_gives_the_linear_scans_count(first: int) -> None:
    """Doubling then bisection finds the step a check after every step finds (relearning
    only moves towards the class: once reached, reached), capped at max_steps."""
    from boundary_unlearning.metrics.relearn import _first_reached

    at = {"step": 0}
    checks = []

    def reached() -> bool:
        checks.append(at["step"])
        return at["step"] >= first

    def step_to(state: dict[str, torch.Tensor], start: int, stop: int) -> bool:
        assert int(state["step"]) == start  # training resumes from the weights after `start`
        at["step"] = stop
        return True

    count = _first_reached(reached, step_to, lambda: {"step": torch.tensor(at["step"])}, 100)
    assert count == min(first, 100)
    assert len(checks) <= 2 * math.log2(101) + 2
