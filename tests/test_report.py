"""Report rendering: tables with retrain beside every metric, CSV per seed, figures, HTML."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from boundary_unlearning import UnlearningData, unlearn
from boundary_unlearning.errors import DataError
from boundary_unlearning.metrics import compute_metrics
from boundary_unlearning.report import figure_data, format_markdown, format_table, render_reports
from boundary_unlearning.report.tables import format_value, table_rows
from conftest import build_tiny

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _entry(acc_forget: float, asr: float, seconds: float, js: float | None) -> dict[str, Any]:
    return {
        "acc": {"retain": 0.99, "forget": acc_forget, "test_retain": 0.95, "test_forget": 0.0},
        "mia": {"paper_asr": asr, "confidence_svc": 1 - asr, "loss_lr": 0.5, "entropy": asr},
        "js_to_retrain": js,
        "activation_distance": js,
        "zrf": 0.8,
        "relearn_steps": 12,
        "seconds": seconds,
    }


def multi_seed_report() -> dict[str, Any]:
    per_seed = {
        "0": {"original": _entry(1.0, 0.9, 10, 0.6), "retrain": _entry(0.0, 0.1, 8, 0.0),
              "boundary_shrink": _entry(0.05, 0.2, 0.5, 0.1)},
        "1": {"original": _entry(1.0, 0.8, 12, 0.5), "retrain": _entry(0.0, 0.1, 8, 0.0),
              "boundary_shrink": _entry(0.07, 0.3, 0.5, 0.2)},
    }  # fmt: skip
    results = {name: _entry(e["acc"]["forget"], 0.25, e["seconds"], 0.15)
               for name, e in per_seed["0"].items()}  # fmt: skip
    results["boundary_shrink"]["speedup"] = 16.0
    std = {name: _entry(0.01, 0.05, 0.1, 0.05) for name in results}
    return {
        "dataset": "digits", "model": "cnn", "forget_classes": [3], "class_names": ["3"],
        "seeds": [0, 1], "results": results, "per_seed": per_seed, "std": std,
    }  # fmt: skip


def single_seed_report() -> dict[str, Any]:
    """The shape the foundation's run_experiment writes: accuracies and seconds only."""
    acc = {"retain": 1.0, "forget": 0.98, "test_retain": 0.97, "test_forget": 0.91}
    return {
        "dataset": "digits", "model": "cnn", "forget_classes": [3], "class_names": ["3"],
        "seed": 0,
        "results": {"original": {"acc": acc, "seconds": 3.0},
                    "retrain": {"acc": {**acc, "forget": 0.0}, "seconds": 2.0},
                    "boundary_shrink": {"acc": acc, "seconds": 0.25,
                                        "stats": {"attack_success": 0.36}}},
    }  # fmt: skip


def test_a_method_that_forgot_gets_its_verdict_and_speed_up() -> None:
    report = single_seed_report()
    report["results"]["boundary_shrink"]["acc"] = {
        "retain": 1.0, "forget": 0.04, "test_retain": 0.97, "test_forget": 0.03,
    }  # fmt: skip
    report["results"]["boundary_shrink"]["stats"] = {"steps": 12, "reached_target": True}
    report["results"]["boundary_shrink"]["depth"] = 0.7
    md = format_markdown(report)
    assert "| Verdict ≈R | — | — | forgot |" in md
    assert "| Depth ↑ | — | — | 0.70 |" in md
    assert "8.0×" in md  # speed-up derived from retrain's seconds
    assert "| Unlearning steps ↓ | — | — | 12 |" in md
    assert "What the verdicts say" not in md  # nothing to explain
    text = format_table(report)
    assert "forgot" in text and "8.0×" in text


def test_a_method_that_only_hid_the_class_is_told_so_and_how_to_go_deeper() -> None:
    report = single_seed_report()
    entry = report["results"]["boundary_shrink"]
    entry["acc"] = {"retain": 1.0, "forget": 0.0, "test_retain": 0.97, "test_forget": 0.0}
    entry["depth"] = 0.12
    entry["depth_shares"] = {"relearn_steps": 0.12, "probe_forget_acc": 0.4}
    md = format_markdown(report)
    assert "| Verdict ≈R | — | — | hid |" in md
    assert "boundary_shrink hid the class" in md and "still in the features" in md
    assert "relearn 0.12, probe 0.40" in md and "depth='features'" in md
    assert "8.0×" in md  # it did leave the outputs: the speed-up stays


SE = "probe_forget_acc_se"


@pytest.mark.parametrize(
    ("depth", "shares", "close"),
    [
        (0.52, {"relearn_steps": 0.9, "probe_forget_acc": 0.52, SE: 0.15}, True),
        (0.44, {"relearn_steps": 0.9, "probe_forget_acc": 0.44, SE: 0.05}, True),
        (0.9, {"relearn_steps": 0.95, "probe_forget_acc": 0.9, SE: 0.15}, False),
        (0.52, {"relearn_steps": 0.52, "probe_forget_acc": 0.8, SE: 0.15}, False),
        (0.52, {"relearn_steps": 0.9, "probe_forget_acc": 0.52}, False),
    ],
)
def test_a_verdict_within_the_probe_s_noise_is_called_close(
    depth: float, shares: dict[str, float], close: bool
) -> None:
    # close: the depth is the probe's share and 0.5 lies within two of its standard errors;
    # not when it is far, when relearn steps set the depth, or without a standard error
    report = single_seed_report()
    entry = report["results"]["boundary_shrink"]
    entry["acc"] = {"retain": 1.0, "forget": 0.0, "test_retain": 0.97, "test_forget": 0.0}
    entry["depth"], entry["depth_shares"] = depth, shares
    md = format_markdown(report)
    assert ("boundary_shrink's verdict is a close call" in md) is close
    assert ("| Verdict ≈R | — | — | forgot |" in md) is (depth >= 0.5)  # the verdict stays
    if close:
        se = shares[SE]
        assert f"whose standard error over the probe's draws of a few images is {se:.2f}" in md


def test_without_depth_the_verdict_claims_only_the_outputs() -> None:
    report = single_seed_report()
    report["results"]["boundary_shrink"]["acc"]["forget"] = 0.0
    md = format_markdown(report)
    assert "| Verdict ≈R | — | — | no longer predicted |" in md
    assert "needs a retrained model to compare with" in md


def test_format_value() -> None:
    assert format_value("acc.forget", 0.1234) == "12.34"
    assert format_value("mia.loss_lr", 0.5, std=0.01) == "50.00 ± 1.00"
    assert format_value("js_to_retrain", 0.123456) == "0.1235"
    assert format_value("relearn_steps", 12.0) == "12"
    assert format_value("speedup", 17.04) == "17.0×"
    assert format_value("zrf", None) == "—"
    assert format_value("zrf", float("nan")) == "—"


def test_markdown_has_retrain_first_arrows_and_mean_std() -> None:
    report = multi_seed_report()
    md = format_markdown(report)
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    assert header.split("|")[2].strip() == "retrain"  # the reference is beside every metric
    assert "Acc on D_r (%) ↑" in md and "JS to retrain ↓" in md and "→0.5" in md
    assert "MIA ASR (paper) (%) ≈R" in md
    assert "12.50 ± 1.00" in md or "25.00 ± 5.00" in md
    assert "mean ± std over 2 seeds" in md
    assert "16.0× ± " not in md and "16.0×" in md
    assert "calls NON-member" in md  # the meaning of SalUn's number is spelled out
    cols, rows = table_rows(report)
    assert cols == ["retrain", "original", "boundary_shrink"]
    assert [k for k, _ in rows][:4] == ["acc.retain", "acc.forget", "acc.test_retain",
                                        "acc.test_forget"]  # fmt: skip


def test_single_seed_report_renders(tmp_path: Path) -> None:
    report = single_seed_report()
    render_reports(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "seed: 0" in md and "attack_success = 0.3600" in md
    assert "MIA" not in md.split("## What")[0]  # absent metrics make no empty rows
    # D_f 98% against retrain's 0%: the verdict says so and no speed-up is shown beside it
    assert "| Verdict ≈R | — | — | did not forget |" in md
    assert "— (did not forget)" in md and "8.0×" not in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert [r["method"] for r in rows] == ["original", "retrain", "boundary_shrink"]
    assert rows[1]["acc.forget"] == "0.0"
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and "retrain (R)" in html
    assert not (tmp_path / "figures").exists()  # no figures_data: no figures
    assert "original" in format_table(report)


def test_multi_seed_csv_has_one_row_per_method_and_seed(tmp_path: Path) -> None:
    render_reports(multi_seed_report(), tmp_path)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert len(rows) == 6
    assert {(r["seed"], r["method"]) for r in rows} == {
        (s, m) for s in ("0", "1") for m in ("original", "retrain", "boundary_shrink")
    }
    assert "mia.paper_asr" in rows[0] and "seconds" in rows[0]
    assert "seed 1" in (tmp_path / "report.html").read_text()


def test_failed_methods_are_reported(tmp_path: Path) -> None:
    report = multi_seed_report()
    report["per_seed"]["1"]["neg_grad"] = {"failed": "the loss became NaN at step 3"}
    report["per_seed"]["0"]["neg_grad"] = {"failed": "the loss became NaN at step 5"}
    report["results"]["neg_grad"] = report["std"]["neg_grad"] = {"failed": "NaN at step 5"}
    report["results"]["boundary_shrink"]["failed_seeds"] = {"2": "diverged"}
    render_reports(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "neg_grad failed: NaN at step 5" in md
    assert "boundary_shrink failed on seed 2" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    failed = [r for r in rows if r["method"] == "neg_grad"]
    assert len(failed) == 2 and all(r["status"].startswith("failed: ") for r in failed)
    assert "neg_grad failed" in (tmp_path / "report.html").read_text()


def test_render_rejects_a_report_without_results(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="results"):
        render_reports({"dataset": "digits"}, tmp_path)


@pytest.fixture(scope="module")
def tiny_models(_trained_tiny: nn.Module, tiny_data: UnlearningData) -> dict[str, nn.Module]:
    retrained = unlearn("retrain", build_tiny(), tiny_data, epochs=15, lr=0.05, batch_size=16)
    shrunk = unlearn("boundary_shrink", _trained_tiny, tiny_data, eps=0.3, lr=1e-2)
    return {"original": _trained_tiny, "retrain": retrained, "boundary_shrink": shrunk}


@pytest.fixture(scope="module")
def tiny_figures(tiny_models: dict[str, nn.Module], tiny_data: UnlearningData) -> dict[str, Any]:
    return figure_data(tiny_models, tiny_data, seed=0, max_points=40)


def tiny_report(
    models: dict[str, nn.Module], data: UnlearningData, figures: dict[str, Any]
) -> dict[str, Any]:
    random_model = build_tiny(seed=9)
    results = {
        name: {**compute_metrics(model, data, retrained=models["retrain"],
                                 random_model=random_model, relearn=False), "seconds": 1.0}
        for name, model in models.items()
    }  # fmt: skip
    report = {
        "dataset": "tiny", "model": "cnn", "forget_classes": [1], "class_names": ["1"],
        "seeds": [0], "results": results,
        "figures_data": figures,
    }  # fmt: skip
    return json.loads(json.dumps(report))  # as loaded from report.json


def test_figure_data_is_json_and_seeded(
    tiny_models: dict[str, nn.Module], tiny_data: UnlearningData, tiny_figures: dict[str, Any]
) -> None:
    a = tiny_figures
    assert json.loads(json.dumps(a, allow_nan=False)) == a
    assert a == figure_data(tiny_models, tiny_data, seed=0, max_points=40)
    original = a["models"]["original"]
    assert len(original["tsne"]) == len(a["tsne_labels"]) == 40  # 10 per class
    assert sorted(set(a["tsne_labels"])) == [0, 1, 2, 3]
    assert set(original["entropy"]) == {"retain", "forget", "test"}
    assert len(original["entropy"]["retain"]) == 40
    assert sum(map(sum, original["confusion"])) == 40  # every test sample once
    # The retrained model never predicts the forgotten class's label for its test samples.
    assert a["models"]["retrain"]["confusion"][1][1] == 0
    assert original["confusion"][1][1] == 10


def test_render_writes_small_pngs_and_embeds_them(
    tiny_models: dict[str, nn.Module],
    tiny_data: UnlearningData,
    tiny_figures: dict[str, Any],
    tmp_path: Path,
) -> None:
    report = tiny_report(tiny_models, tiny_data, tiny_figures)
    render_reports(report, tmp_path)
    pngs = sorted((tmp_path / "figures").glob("*.png"))
    assert [p.name for p in pngs] == sorted(
        f"{kind}_{name}.png"
        for kind in ("entropy", "tsne", "confusion")
        for name in ("original", "retrain", "boundary_shrink")
    )
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) < 100_000
    html = (tmp_path / "report.html").read_text()
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == len(pngs)
    assert all(base64.b64decode(u).startswith(PNG_MAGIC) for u in uris)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    md = (tmp_path / "report.md").read_text()
    assert "MIA entropy (%) ≈R" in md and "ZRF" in md


def test_rerender_drops_figures_of_models_no_longer_in_the_report(
    tiny_models: dict[str, nn.Module],
    tiny_data: UnlearningData,
    tiny_figures: dict[str, Any],
    tmp_path: Path,
) -> None:
    render_reports(tiny_report(tiny_models, tiny_data, tiny_figures), tmp_path)
    (tmp_path / "figures" / "notes_mine.png").write_bytes(PNG_MAGIC)  # not ours: kept
    fewer = {k: v for k, v in tiny_models.items() if k != "boundary_shrink"}
    figures = {**tiny_figures, "models": {k: tiny_figures["models"][k] for k in fewer}}
    render_reports(tiny_report(fewer, tiny_data, figures), tmp_path)
    names = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert names == sorted(
        ["notes_mine.png"]
        + [f"{k}_{n}.png" for k in ("entropy", "tsne", "confusion") for n in fewer]
    )


def test_figure_data_matches_its_typed_schema(tiny_figures: dict[str, Any]) -> None:
    from boundary_unlearning.report import schema

    assert set(tiny_figures) == schema.FigureData.__optional_keys__
    for model in tiny_figures["models"].values():
        assert set(model) == schema.ModelFigures.__optional_keys__
        assert set(model["entropy"]) == schema.EntropySamples.__optional_keys__
