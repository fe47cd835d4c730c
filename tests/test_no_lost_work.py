"""Runs never lose or silently change work (issue 13): a resume with other settings is refused
naming each change, a narrower request never drops finished results, every path the user
names is used or refused, files honour the umask, messages name the real cause."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from boundary_unlearning import load_dataset
from boundary_unlearning.cli import demo_settings, main
from boundary_unlearning.config import ExperimentConfig, write_resolved_config
from boundary_unlearning.errors import DataError, HyperparameterError
from boundary_unlearning.methods import validate_hyperparameters

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


# --- item 3 and 4: every path the user names is used or refused ------------------------------


def test_explicit_data_root_is_never_replaced_by_the_system_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 3: --data-root /nonexistent (or an empty folder) trained on the system copy."""
    missing, empty = tmp_path / "nonexistent", tmp_path / "empty"
    empty.mkdir()
    for root in (missing, empty):
        with pytest.raises(DataError, match=str(root)):
            load_dataset("fashion-mnist", root)
    argv = ["train", "--dataset", "fashion-mnist", "--epochs", "1", "--subset", "100",
            "--out", tmp_path / "out", "--data-root", missing]  # fmt: skip
    assert bunlearn(argv) == 2
    err = _error_line(capsys)
    assert f"--data-root {missing} does not exist" in err and "drop --data-root" in err
    assert bunlearn([*argv[:-1], empty]) == 2
    assert f"not found in {empty}" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_data_root_with_the_bundled_digits_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # digits comes with scikit-learn: a --data-root beside it was silently ignored, so a user
    # who meant another data set trained on digits without being told.
    with pytest.raises(DataError, match="digits ships with scikit-learn and reads no folder"):
        load_dataset("digits", tmp_path)
    argv = ["train", "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "out",
            "--data-root", tmp_path]  # fmt: skip
    assert bunlearn(argv) == 2
    assert f"--data-root {tmp_path} was given; drop --data-root" in _error_line(capsys)
    assert not (tmp_path / "out").exists()
    assert len(load_dataset("digits")[0]) == 1437  # without it: the bundled copy


def _image_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6
) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            pixels = rng.integers(0, 80, (8, 8, 3), dtype=np.uint8) + 170 * index
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{j}.png")


def test_checkpoint_remembers_its_image_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 4: `unlearn --checkpoint ximg/ --forget-class dog` said "image folder None not
    found" unless --data-root was passed again."""
    images, ckpt = tmp_path / "images", tmp_path / "ximg"
    _image_folder(images)
    assert bunlearn(["train", "--dataset", "imagefolder", "--data-root", images, "--model",
                     "mlp", "--epochs", "1", "--out", ckpt, "--quiet"]) == 0  # fmt: skip
    meta = json.loads((ckpt / "model.json").read_text())
    assert meta["data"]["root"] == str(images.resolve()) and meta["classes"] == ["cat", "dog"]
    assert len(meta["data"]["fingerprint"]) == 16
    unlearn = ["unlearn", "--checkpoint", ckpt, "--forget-class", "dog", "--method",
               "finetune", "--set", "epochs=1", "--quiet"]  # fmt: skip
    capsys.readouterr()
    assert bunlearn([*unlearn, "--out", tmp_path / "u1"]) == 0  # found again, no --data-root
    # the checkpoint (untrusted input) chose the folder, so the user is told which, even quiet
    assert f"reading imagefolder data from {images.resolve()}" in capsys.readouterr().err
    assert json.loads((tmp_path / "u1" / "model.json").read_text())["data"] == meta["data"]

    (images / "dog" / "0.png").unlink()  # the folder changed since training
    assert bunlearn([*unlearn, "--out", tmp_path / "u2"]) == 2
    err = _error_line(capsys)
    assert "changed since" in err and f"--data-root {images.resolve()}" in err
    assert bunlearn([*unlearn, "--out", tmp_path / "u2", "--data-root", images]) == 0

    images.rename(tmp_path / "moved")
    assert bunlearn([*unlearn, "--out", tmp_path / "u3"]) == 2
    err = _error_line(capsys)
    assert "no longer exists" in err and "pass --data-root" in err
    assert not (tmp_path / "u3").exists()


# --- item 5: zero-step unlearning ---------------------------------------------------------


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "mlp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUNLEARN_CACHE", str(folder.parent / "cache"))
        assert bunlearn(["train", "--model", "mlp", "--epochs", "1", "--batch-size", "256",
                         "--out", folder, "--quiet"]) == 0  # fmt: skip
    return folder


def test_zero_step_unlearning_is_refused(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 5: --set epochs=0 returned the model unchanged with exit code 0."""
    argv = ["unlearn", "--checkpoint", digits_ckpt, "--forget-class", "3", "--method",
            "boundary_expanding", "--set", "epochs=0", "--out", tmp_path / "u"]  # fmt: skip
    assert bunlearn(argv) == 2
    assert "epochs=0 would return the model unchanged" in _error_line(capsys)
    assert not (tmp_path / "u").exists()
    assert bunlearn(["run", *FAST, "--set", "boundary_expanding.epochs=0",
                     "--out", tmp_path / "r"]) == 2  # fmt: skip
    assert "boundary_expanding: epochs=0 would return the model unchanged" in _error_line(capsys)


# --- item 6: messages name the real cause first ---------------------------------------------


def test_truncated_weights_are_called_corrupt_not_missing_metadata(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes((digits_ckpt / "model.safetensors").read_bytes()[:100])
    assert bunlearn(["unlearn", "--checkpoint", weights, "--forget-class", "3",
                     "--out", tmp_path / "u"]) == 2  # fmt: skip
    err = _error_line(capsys)
    assert "is not a valid safetensors file" in err and "truncated or corrupt" in err


def test_nan_hyperparameter_is_called_out_of_range_not_wrong_type(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["unlearn", "--checkpoint", digits_ckpt, "--forget-class", "3", "--set", "lr=nan",
            "--out", tmp_path / "u"]  # fmt: skip
    assert bunlearn(argv) == 2
    err = _error_line(capsys)
    assert "lr=nan must be a positive" in err and "wrong type" not in err
    with pytest.raises(HyperparameterError, match="must be a finite number"):
        validate_hyperparameters("boundary_shrink", {"bn": float("nan")})


# --- item 7: progress and a quick first try ---------------------------------------------------


def test_train_subset_is_class_balanced_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from boundary_unlearning.data.split import balanced_subset  # new in issue 13

    train_set, _, _ = load_dataset("digits")
    part = balanced_subset(train_set, 105, seed=0)
    counts = torch.bincount(part.tensors[1], minlength=10)  # type: ignore[attr-defined]
    assert counts.sum() == 105 and counts.max() - counts.min() <= 1
    again = balanced_subset(train_set, 105, seed=0)
    assert torch.equal(part.tensors[0], again.tensors[0])  # type: ignore[attr-defined]
    assert bunlearn(["train", "--model", "mlp", "--epochs", "1", "--subset", "100",
                     "--out", tmp_path / "m", "--quiet"]) == 0  # fmt: skip
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["hyperparameters"]["subset"] == 100
    assert bunlearn(["train", "--subset", "0", "--out", tmp_path / "z"]) == 2
    assert "subset=0 must be a whole number >= 1" in _error_line(capsys)


def test_unlearn_shows_progress_after_the_method(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 7: 77 s of silence between the method's bar and the result."""
    assert bunlearn(["unlearn", "--checkpoint", digits_ckpt, "--forget-class", "3", "--method",
                     "finetune", "--set", "epochs=1", "--out", tmp_path / "u"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "bunlearn: evidence: 2/2 models in " in err and "finetune" in err
    assert f"bunlearn: writing the unlearned model and report to {tmp_path / 'u'}" in err


# --- item 8: cache, file modes, the final line, --help -----------------------------------------


def test_train_uses_the_cache_dir_it_is_given(tmp_path: Path) -> None:
    cache = tmp_path / "named-cache"
    assert bunlearn(["train", "--model", "mlp", "--epochs", "1", "--out", tmp_path / "m",
                     "--cache-dir", cache, "--quiet"]) == 0  # fmt: skip
    key = json.loads((tmp_path / "m" / "model.json").read_text())["cache_key"]
    cached = cache / "originals" / key
    assert (cached / "model.safetensors").read_bytes() == (
        tmp_path / "m" / "model.safetensors"
    ).read_bytes()


def test_outputs_honour_the_umask_and_the_final_line_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        assert bunlearn(["run", *FAST, "--methods", "boundary_shrink", "--out", out]) == 0
    finally:
        os.umask(old)
    for name in ("report.json", "report.md", "report.html", "results.csv", "config.yaml"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (
        f"reports written to {out}: report.json, report.md, report.html, results.csv, config.yaml"
    )


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 20)" in text and "(default: 0.01)" in text and "(default: digits)" in text
