"""Every kind of bad input gets one clear line, exit code 2 and no traceback (issue 7).

Each case runs through the command line (``cli.main`` in-process: stderr is one line
``bunlearn: error: ...`` and the exit code is 2) and through the Python API (the typed
exception from :mod:`boundary_unlearning.errors`, with the same message). Nothing is lost: the
input checkpoint is never modified and an existing output is never overwritten without
``--overwrite``.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re
import struct
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from boundary_unlearning import (
    UnlearningData,
    class_split,
    create_model,
    load_checkpoint,
    load_dataset,
    save_checkpoint,
    unlearn,
)
from boundary_unlearning.checks import Range, range_of
from boundary_unlearning.cli import main
from boundary_unlearning.commands import save_original, unlearn_checkpoint
from boundary_unlearning.config import ExperimentConfig
from boundary_unlearning.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HyperparameterError,
    ModelError,
    OutputError,
    UnknownNameError,
    UnlearningError,
)
from boundary_unlearning.methods import (
    _registry,
    get_method,
    list_methods,
    register_method,
    validate_hyperparameters,
)
from boundary_unlearning.models import list_models
from conftest import build_tiny

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUNLEARN_CACHE", str(tmp_path / "cache"))


def bunlearn(argv: list[Any]) -> int:
    """``bunlearn argv`` in-process (paths may be given as ``Path``)."""
    return main([str(a) for a in argv])


def cli_error(argv: list[Any], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``bunlearn argv``; assert exit code 2 and exactly one stderr line; return it."""
    capsys.readouterr()
    code = bunlearn(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("bunlearn: error: ")
    assert "Traceback" not in err
    return lines[0].removeprefix("bunlearn: error: ")


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mlp trained for one epoch on digits, written by ``bunlearn train``."""
    folder = tmp_path_factory.mktemp("ckpt") / "mlp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUNLEARN_CACHE", str(folder.parent / "cache"))
        argv = [
            "train",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--out",
            folder,
            "--quiet",
        ]
        assert bunlearn(argv) == 0
    return folder


@pytest.fixture
def untrained() -> torch.nn.Module:
    """A tiny CNN for the 4-class 1x8x8 fixtures; error paths need no trained weights."""
    return build_tiny("cnn")


def unlearn_args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["unlearn", "--checkpoint", str(ckpt), "--out", str(out), "--quiet", *extra]


FAST = ("--set", "epochs=1", "--set", "feature_steps=5")  # the behaviour here is not depth


# ----------------------------------------------------------------- forget-class choices


def test_forget_class_outside_the_dataset(digits_ckpt: Path, tmp_path: Path, capsys) -> None:
    for bad in ("10", "-1"):
        msg = cli_error(unlearn_args(digits_ckpt, tmp_path / "o", "--forget-class", bad), capsys)
        assert f"forget class {bad} is outside digits's classes 0..9" in msg
        assert "pick one of 0..9" in msg
    _, _, info = load_dataset("digits")
    with pytest.raises(DataError) as exc:
        info.class_index(10)
    assert one_line(exc) == msg.replace("-1", "10")


def test_forget_class_unknown_name(tmp_path: Path, capsys) -> None:
    _, _, info = load_dataset("digits")
    with pytest.raises(UnknownNameError) as exc:
        info.class_index("seven")
    assert "digits has no class 'seven'" in one_line(exc) and "0..9" in str(exc.value)
    msg = cli_error(["run", "--forget-class", "seven", "--out", tmp_path / "r", "--quiet"], capsys)
    assert msg == str(exc.value)


def test_forget_class_unknown_name_suggests_a_close_one(tiny_sets) -> None:
    from boundary_unlearning.data import DatasetInfo

    info = DatasetInfo("clothes", ("shirt", "dress", "sandal"), (1, 8, 8), (0.5,), (0.5,))
    assert info.class_index("Dress") == 1
    with pytest.raises(UnknownNameError, match=r"did you mean 'sandal'"):
        info.class_index("sandle")
    with pytest.raises(DataError, match="give a class index"):
        info.class_index(1.5)  # type: ignore[arg-type]


def test_all_classes_forgotten(digits_ckpt: Path, tmp_path: Path, tiny_sets, capsys) -> None:
    every = [a for c in range(10) for a in ("--forget-class", str(c))]
    msg = cli_error(unlearn_args(digits_ckpt, tmp_path / "o", *every), capsys)
    assert msg == "all 10 classes would be forgotten; keep at least one class to retain"
    with pytest.raises(DataError, match="all 4 classes would be forgotten; keep at least one"):
        class_split(*tiny_sets, forget_classes=[0, 1, 2, 3])


def test_empty_forget_set(digits_ckpt: Path, tmp_path: Path, tiny_sets, untrained, capsys) -> None:
    args = unlearn_args(digits_ckpt, tmp_path / "o", "--forget-class", "3")
    msg = cli_error([*args, "--forget-fraction", "0.001"], capsys)
    assert "forget fraction 0.001 selects no sample of the 146 forget samples" in msg
    assert "use at least" in msg
    with pytest.raises(DataError, match="selects no sample of the 40 forget samples"):
        class_split(*tiny_sets, forget_classes=[1], forget_fraction=0.001)
    msg = cli_error([*args, "--forget-fraction", "0"], capsys)
    assert msg == "forget_fraction=0.0 must be a number in (0, 1]"
    with pytest.raises(HyperparameterError, match=re.escape(msg)):
        class_split(*tiny_sets, forget_classes=[1], forget_fraction=0)
    # An UnlearningData whose forget set is empty (built by hand): every method refuses it.
    full = class_split(*tiny_sets, forget_classes=[1])
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    data = UnlearningData(empty, full.retain, full.test_forget, full.test_retain, (1,), 4)
    with pytest.raises(DataError) as exc:
        unlearn("boundary_shrink", untrained, data)
    assert "the forget set is empty" in one_line(exc)


def test_class_absent_from_the_training_set(tiny_sets) -> None:
    train, test = tiny_sets
    keep = train.tensors[1] != 2
    only3 = TensorDataset(train.tensors[0][keep], train.tensors[1][keep])
    with pytest.raises(DataError, match=r"no sample of class\(es\) \[2\]; pick a class present"):
        class_split(only3, test, forget_classes=[2], num_classes=4)


# ------------------------------------------------------------ model does not fit the data


def test_model_output_size_differs_from_class_count(tiny_data) -> None:
    five = create_model("mlp", 5, in_channels=1, image_size=8, hidden=16)
    with pytest.raises(ModelError) as exc:
        unlearn("boundary_shrink", five, tiny_data, epochs=1)
    assert one_line(exc) == (
        "boundary_shrink: the model outputs (5,) values per image but the data has 4 classes; "
        "use a model with 4 outputs"
    )


def test_checkpoint_for_another_class_count(digits_ckpt: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"person{c}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                root / f"person{c}" / f"{i}.png"
            )
    msg = cli_error(
        unlearn_args(
            digits_ckpt, tmp_path / "o", "--forget-class", "1", "--dataset", "imagefolder",
            "--data-root", root,
        ),
        capsys,
    )  # fmt: skip
    assert "(trained on digits) outputs 10 classes but imagefolder has 3" in msg
    assert msg.endswith("pass the --dataset the model was trained on")
    with pytest.raises(ModelError, match="outputs 10 classes but imagefolder has 3"):
        unlearn_checkpoint(
            checkpoint=digits_ckpt, method="boundary_shrink", out=tmp_path / "o2",
            given={"forget_classes": [1], "dataset": "imagefolder", "data_root": str(root)},
        )  # fmt: skip


def test_image_shape_the_model_cannot_take(tiny_data) -> None:
    rgb = create_model("cnn", 4, in_channels=3, image_size=8, width=4)
    with pytest.raises(ModelError) as exc:
        unlearn("boundary_expanding", rgb, tiny_data, epochs=1)
    assert one_line(exc).startswith(
        "boundary_expanding: the model cannot take images of shape (1, 8, 8)"
    )
    assert str(exc.value).endswith("use a model built for this data set's channels and size")
    big = create_model("mlp", 4, in_channels=1, image_size=16, hidden=8)
    with pytest.raises(ModelError, match=r"cannot take images of shape \(1, 8, 8\)"):
        unlearn("finetune", big, tiny_data, epochs=1)


def test_checkpoint_for_other_image_size(
    digits_ckpt: Path, fake_fashion: Path, tmp_path: Path, capsys
) -> None:
    msg = cli_error(
        unlearn_args(
            digits_ckpt, tmp_path / "o", "--forget-class", "1", "--dataset", "fashion-mnist",
            "--data-root", fake_fashion,
        ),
        capsys,
    )  # fmt: skip
    assert msg == (
        f"{digits_ckpt / 'model.safetensors'} (trained on digits) takes 1x8x8 images but "
        "fashion-mnist has 1x28x28; pass the --dataset the model was trained on"
    )


# ------------------------------------------------------------------------ unknown names


@pytest.mark.parametrize(
    ("argv", "kind", "typo", "close"),
    [
        (["run", "--dataset", "digts"], "dataset", "digts", "digits"),
        (["train", "--model", "mpl"], "model", "mpl", "mlp"),
        (["run", "--methods", "boundary_shrnk"], "method", "boundary_shrnk", "boundary_shrink"),
    ],
)
def test_unknown_names_list_the_known_ones(
    argv: list[str], kind: str, typo: str, close: str, tmp_path: Path, capsys
) -> None:
    msg = cli_error([*argv, "--out", tmp_path / "o", "--quiet"], capsys)
    assert msg.startswith(f"unknown {kind} '{typo}' (did you mean '{close}'?); known {kind}s: ")
    assert close in msg.split("known ")[1]


def test_unknown_names_through_the_api(untrained, tiny_data) -> None:
    with pytest.raises(UnknownNameError) as exc:
        load_dataset("fashion_mnst")
    assert "did you mean 'fashion-mnist'" in one_line(exc)
    with pytest.raises(UnknownNameError) as exc:
        create_model("resnet19", 10)
    assert "did you mean 'resnet18'" in one_line(exc)
    assert ", ".join(list_models()) in str(exc.value)
    with pytest.raises(UnknownNameError) as exc:
        unlearn("boundary_expand", untrained, tiny_data)
    assert "did you mean 'boundary_expanding'" in one_line(exc)
    assert ", ".join(list_methods()) in str(exc.value)
    with pytest.raises(HyperparameterError, match="did you mean 'width'"):
        create_model("cnn", 4, in_channels=1, image_size=8, widht=4)


def test_unknown_method_in_unlearn_command(digits_ckpt: Path, tmp_path: Path, capsys) -> None:
    args = unlearn_args(digits_ckpt, tmp_path / "o", "--forget-class", "3")
    msg = cli_error([*args, "--method", "neggrad"], capsys)
    assert msg.startswith("unknown method 'neggrad' (did you mean 'neg_grad'?); known methods:")


# --------------------------------------------------------------------- hyperparameters


def test_unknown_hyperparameter_names_the_valid_ones(
    digits_ckpt: Path, tmp_path: Path, untrained, tiny_data, capsys
) -> None:
    valid = ", ".join(get_method("boundary_shrink").hyperparameters)
    expected = (
        f"boundary_shrink has no hyperparameter 'epoch' (did you mean 'epochs'?); valid ones: "
        f"{valid}"
    )
    args = unlearn_args(digits_ckpt, tmp_path / "o", "--forget-class", "3")
    assert cli_error([*args, "--set", "epoch=1"], capsys) == expected
    with pytest.raises(HyperparameterError) as exc:
        unlearn("boundary_shrink", untrained, tiny_data, epoch=1)
    assert one_line(exc) == expected
    # bunlearn run scopes --set by method
    msg = cli_error(["run", "--set", "boundary_shrink.epoch=1", "--out", tmp_path / "r"], capsys)
    assert msg == expected
    assert "must name its method" in cli_error(
        ["run", "--set", "epochs=1", "--out", tmp_path / "r"], capsys
    )
    assert "is not of the form name=value" in cli_error([*args, "--set", "epochs"], capsys)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("lr=abc", "boundary_shrink: lr='abc' has the wrong type; expected float (the default "
                   "is 0.001)"),
        ("epochs=1.5", "boundary_shrink: epochs=1.5 has the wrong type; expected int or None"),
        ("attack=pgb", "boundary_shrink: attack='pgb' is not one of 'fgsm', 'pgd' (the default "
                       "is 'fgsm')"),
        ("bn=frozen", "boundary_shrink: bn='frozen' is not one of 'train', 'freeze' (the "
                      "default is 'freeze')"),
        ("loss_weighting=2", "boundary_shrink: loss_weighting=2 has the wrong type; expected "
                             "bool (the default is False)"),
        ("normalization=abc", "boundary_shrink: normalization belongs to the data, not to a "
                              "method: pass class_split(train, test, classes, normalization="),
    ],
)  # fmt: skip
def test_mistyped_hyperparameter(
    setting: str, expected: str, digits_ckpt: Path, tmp_path: Path, untrained, tiny_data, capsys
) -> None:
    args = unlearn_args(digits_ckpt, tmp_path / "o", "--forget-class", "3", "--set", setting)
    assert cli_error(args, capsys).startswith(expected)
    key, _, raw = setting.partition("=")
    value: Any = {"lr=abc": "abc", "epochs=1.5": 1.5, "loss_weighting=2": 2}.get(setting, raw)
    with pytest.raises(HyperparameterError) as exc:
        unlearn("boundary_shrink", untrained, tiny_data, **{key: value})
    assert one_line(exc).startswith(expected)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("lr=0", "boundary_shrink: lr=0.0 must be a positive number; the default is 0.001"),
        ("lr=-0.1", "boundary_shrink: lr=-0.1 must be a positive number"),
        ("eps=0", "boundary_shrink: eps=0.0 must be a positive number; the default is 0.1"),
        (
            "epochs=-1",
            "boundary_shrink: epochs=-1 must be a whole number >= 0; the default is None",
        ),
        ("batch_size=0", "boundary_shrink: batch_size=0 must be a whole number >= 1"),
        ("momentum=-0.5", "boundary_shrink: momentum=-0.5 must be a number >= 0"),
        ("weight_decay=-1", "boundary_shrink: weight_decay=-1.0 must be a number >= 0"),
        ("pgd_steps=0", "boundary_shrink: pgd_steps=0 must be a whole number >= 1"),
        ("pgd_step_size=0", "boundary_shrink: pgd_step_size=0.0 must be a positive number"),
        ("seed=-3", "boundary_shrink: seed=-3 must be a whole number in 0 .. 2**63-1"),
    ],
)
def test_meaningless_numbers_are_refused(
    setting: str, expected: str, digits_ckpt: Path, tmp_path: Path, capsys
) -> None:
    args = unlearn_args(digits_ckpt, tmp_path / "o", "--forget-class", "3", "--set", setting)
    assert cli_error(args, capsys).startswith(expected)


def test_infinite_or_nan_numbers_are_refused() -> None:
    with pytest.raises(HyperparameterError, match=r"lr=inf must be a positive number"):
        validate_hyperparameters("boundary_shrink", {"lr": float("inf")})
    # NaN is named as out of range (as `train --lr nan` says), not as a wrong type (issue 13)
    with pytest.raises(HyperparameterError, match=r"lr=nan must be a positive number"):
        validate_hyperparameters("boundary_shrink", {"lr": float("nan")})


def _outside(bounds: Range, is_float: bool) -> list[Any]:
    """Values just outside a declared range (and, for a float, infinity)."""
    step = 0.5 if is_float else 1
    bad: list[Any] = []
    if bounds.low is not None:
        bad.append(bounds.low if bounds.low_open else bounds.low - step)
    if bounds.high is not None:
        bad.append(bounds.high if bounds.high_open else bounds.high + step)
    if is_float:
        bad.append(float("inf"))
    return [float(v) if is_float else int(v) for v in bad]


def _numeric(spec: Any, name: str) -> type | None:
    """``int`` or ``float`` when the hyperparameter holds a number (by its annotation)."""
    hint = spec.hints.get(name)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    for member in typing.get_args(hint) if union else (hint,):
        annotated = typing.get_origin(member) is typing.Annotated
        base = typing.get_args(member)[0] if annotated else member
        if base in (int, float):
            return base  # type: ignore[no-any-return]
    return None


def _numeric_hyperparameters() -> list[tuple[str, str, Any]]:
    """Every hyperparameter that holds a number, with values outside its declared range."""
    cases = []
    for method in list_methods():
        spec = get_method(method)
        for name in spec.hyperparameters:
            kind = _numeric(spec, name)
            bounds = range_of(spec.hints.get(name))
            if kind is not None and bounds is not None:
                cases += [(method, name, bad) for bad in _outside(bounds, kind is float)]
    return cases


@pytest.mark.parametrize(("method", "name", "bad"), _numeric_hyperparameters())
def test_every_methods_numbers_are_checked_against_their_declared_range(
    method: str, name: str, bad: Any
) -> None:
    default = get_method(method).hyperparameters[name]
    with pytest.raises(HyperparameterError) as exc:
        validate_hyperparameters(method, {name: bad})
    assert one_line(exc).startswith(f"{method}: {name}={bad!r} must be ")
    assert f"the default is {default!r}" in str(exc.value)


def test_every_numeric_hyperparameter_declares_its_range() -> None:
    # A range is declared on the annotation (boundary_unlearning.checks), never inferred
    # from a name: a number without one would take any value.
    for method in list_methods():
        spec = get_method(method)
        for name in spec.hyperparameters:
            if _numeric(spec, name) is not None:
                assert range_of(spec.hints.get(name)) is not None, (method, name)


def test_a_name_carries_no_range() -> None:
    # min_steps and foo_weight once inherited ">= 1" and ">= 0" from regexes on their names
    @register_method("demo_names", cost="forget")
    def demo_names(model: Any, data: Any, *, min_steps: int = 0, foo_weight: float = -1.0) -> Any:
        return model

    try:
        assert validate_hyperparameters("demo_names", {"min_steps": 0, "foo_weight": -2}) == {
            "min_steps": 0,
            "foo_weight": -2.0,
        }
    finally:
        _registry._REGISTRY.pop("demo_names")


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--epochs", "0", "train: epochs=0 must be a whole number >= 1"),
        ("--epochs", "-2", "train: epochs=-2 must be a whole number >= 1"),
        ("--lr", "0", "train: lr=0.0 must be a positive number"),
        ("--lr", "-0.01", "train: lr=-0.01 must be a positive number"),
        ("--batch-size", "0", "train: batch_size=0 must be a whole number >= 1"),
        ("--weight-decay", "-1", "train: weight_decay=-1.0 must be a number >= 0"),
        ("--seed", "-1", "train: seed=-1 must be a whole number in 0 .. 2**63-1"),
    ],
)
def test_train_refuses_meaningless_numbers(
    flag: str, value: str, expected: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "t"
    argv = ["train", "--model", "mlp", "--epochs", "1", flag, value, "--out", out, "--quiet"]
    assert cli_error(argv, capsys) == expected
    assert not out.exists()
    config = ExperimentConfig(model="mlp", epochs=1)
    setattr(
        config, flag[2:].replace("-", "_"), type(getattr(config, flag[2:].replace("-", "_")))(value)
    )
    with pytest.raises(HyperparameterError) as exc:
        save_original(config, out)
    assert one_line(exc) == expected


def test_diverging_method_names_the_step_and_the_fix(
    digits_ckpt: Path, tmp_path: Path, tiny_data, capsys
) -> None:
    from boundary_unlearning.errors import DivergenceError

    out = tmp_path / "o"
    args = unlearn_args(digits_ckpt, out, "--forget-class", "3", "--method", "finetune")
    msg = cli_error([*args, "--set", "epochs=1", "--set", "lr=1.0e+12"], capsys)
    assert re.fullmatch(
        r"finetune: the loss became NaN or infinite at step \d+ \(epoch 1\); lower the "
        r"learning rate \(lr=1e\+12\)",
        msg,
    )
    assert not (out / "model.safetensors").exists()  # nothing half-written
    with pytest.raises(DivergenceError, match="lower the learning rate"):
        unlearn("finetune", build_tiny("mlp"), tiny_data, epochs=3, lr=1e30)


# ----------------------------------------------------------------------- checkpoints


def test_missing_checkpoint(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere"
    msg = cli_error(unlearn_args(missing, tmp_path / "o", "--forget-class", "3"), capsys)
    assert msg == (
        f"checkpoint {missing / 'model.safetensors'} not found; pass the file or folder "
        "written by 'bunlearn train'"
    )
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(missing)
    assert "not found" in one_line(exc)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "x.pt", build_tiny("mlp"))


def _copy_ckpt(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda b: b[: len(b) // 2], "is not a valid safetensors file"),
        (lambda b: b[:5], "is not a valid safetensors file"),
        (lambda b: b"", "is not a valid safetensors file"),
        (lambda b: b[:8] + b"\xff" * 40 + b[48:], "is not a valid safetensors file"),
        (lambda b: bytes(len(b)), "is not a valid safetensors file"),
    ],
    ids=["half", "five-bytes", "empty", "garbled-header", "zeros"],
)
def test_truncated_or_corrupt_checkpoint(
    damage: Any, expected: str, digits_ckpt: Path, tmp_path: Path, capsys
) -> None:
    bad = _copy_ckpt(digits_ckpt, tmp_path / "bad")
    weights = bad / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    msg = cli_error(unlearn_args(bad, tmp_path / "o", "--forget-class", "3"), capsys)
    assert expected in msg and msg.endswith("it is truncated or corrupt, restore it")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    assert one_line(exc) == msg


def test_checkpoint_with_nan_weights(digits_ckpt: Path, tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    bad = _copy_ckpt(digits_ckpt, tmp_path / "bad")
    state = load_file(str(bad / "model.safetensors"))
    state["head.bias"][0] = float("nan")
    save_file(state, str(bad / "model.safetensors"))
    msg = cli_error(unlearn_args(bad, tmp_path / "o", "--forget-class", "3"), capsys)
    assert "head.bias holds NaN, infinite or complex values; it is corrupt" in msg


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"model": "mlp", "dataset": "digits"}', "metadata num_classes=None is not a whole"),
        ('{"model": 7, "dataset": "digits"}', "metadata has no model name"),
        (
            '{"model": "mlp", "dataset": "digits", "num_classes": 10000000000, '
            '"in_channels": 1, "image_size": 8, "mean": [0.5], "std": [0.5]}',
            "num_classes=10000000000 is not a whole number in 2..100000",
        ),
        (
            '{"model": "mlp", "dataset": "digits", "num_classes": 10, "in_channels": 1, '
            '"image_size": 8, "mean": [0.5], "std": [0]}',
            "std=[0] is not one finite number per channel",
        ),
        (
            '{"model": "mlp", "dataset": "digits", "num_classes": 10, "in_channels": 1, '
            '"image_size": 8, "mean": [0.5], "std": [0.5], "model_options": {"hidden": 1e12}}',
            "model_options={'hidden': 1000000000000.0} are not small plain values",
        ),
        (
            '{"model": "mlpp", "dataset": "digits", "num_classes": 10, "in_channels": 1, '
            '"image_size": 8, "mean": [0.5], "std": [0.5]}',
            "unknown model 'mlpp' (did you mean 'mlp'?)",
        ),
    ],
)
def test_corrupt_checkpoint_metadata(
    meta: str, expected: str, digits_ckpt: Path, tmp_path: Path, capsys
) -> None:
    bad = _copy_ckpt(digits_ckpt, tmp_path / "bad")
    (bad / "model.json").write_text(meta)
    msg = cli_error(unlearn_args(bad, tmp_path / "o", "--forget-class", "3"), capsys)
    assert expected in msg
    with pytest.raises(UnlearningError) as exc:
        load_checkpoint(bad)
    assert one_line(exc) == msg


def test_checkpoint_for_another_architecture(digits_ckpt: Path, tmp_path: Path, capsys) -> None:
    args = unlearn_args(digits_ckpt, tmp_path / "o", "--forget-class", "3")
    msg = cli_error([*args, "--model", "cnn"], capsys)
    assert "is for another architecture (missing ['body.0.0.weight'" in msg
    assert msg.endswith("pass the matching --model")
    # same layer names, other sizes: the shapes are checked before anything is loaded
    wide = create_model("mlp", 10, in_channels=1, image_size=8, hidden=32)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(digits_ckpt, wide)
    assert "is for another architecture: body.1.weight has shape (256, 64), the model " in (
        one_line(exc)
    )
    assert all(torch.equal(before[k], v) for k, v in wide.state_dict().items())


def test_plain_state_dict_needs_model_and_dataset(digits_ckpt: Path, tmp_path: Path, capsys):
    from boundary_unlearning.checkpoint import load_state_dict

    pt = tmp_path / "plain.pt"
    torch.save(load_state_dict(digits_ckpt), pt)
    args = unlearn_args(pt, tmp_path / "o", "--forget-class", "3", *FAST)
    assert cli_error(args, capsys).endswith("has no metadata naming its data set; pass --dataset "
                                            "(and --model)")  # fmt: skip
    assert cli_error([*args, "--dataset", "digits"], capsys).endswith(
        "has no metadata naming its architecture; pass --model"
    )
    assert bunlearn([*args, "--dataset", "digits", "--model", "mlp"]) == 0
    with pytest.raises(CheckpointError, match="the architecture is unknown; pass --model"):
        load_checkpoint(pt)


# ----------------------------------------------------------------- data directories


def _write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


FASHION = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def make_fake_fashion(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return root


@pytest.fixture
def fake_fashion(tmp_path: Path) -> Path:
    return make_fake_fashion(tmp_path / "fashion")


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-50])


def _bad_magic(p: Path) -> None:
    p.write_bytes(b"\x00\x00\x0d\x03" + p.read_bytes()[4:])


def _bad_gzip(p: Path) -> None:
    p.unlink()
    p.with_name(p.name + ".gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage" * 5)


def _wrong_size_images(p: Path) -> None:
    _write_idx(p, np.zeros((40, 7, 9)))


def _labels_out_of_range(p: Path) -> None:
    _write_idx(p, np.full(40, 12))


def _label_count(p: Path) -> None:
    _write_idx(p, np.arange(39) % 10)


@pytest.mark.parametrize(
    ("file", "damage", "expected"),
    [
        ("train_y", Path.unlink, "Fashion-MNIST file train-labels-idx1-ubyte[.gz] not found in"),
        ("train_x", _truncate, "the file is truncated or corrupt, re-download it"),
        ("test_x", _bad_magic, "is not an IDX file of unsigned bytes with 3 dimensions"),
        ("test_y", _bad_gzip, "is not a valid gzip file"),
        ("train_x", _wrong_size_images, "not (N>0, 28, 28); the image file is corrupt"),
        ("train_y", _labels_out_of_range, "train labels exceed 9; the label file is corrupt"),
        ("train_y", _label_count, "images and labels differ in count (40 vs 39)"),
    ],
    ids=["missing", "truncated", "bad-magic", "bad-gzip", "wrong-size", "bad-labels", "count"],
)
def test_fashion_mnist_folder_with_missing_or_malformed_files(
    file: str, damage: Any, expected: str, fake_fashion: Path, tmp_path: Path, capsys
) -> None:
    damage(fake_fashion / FASHION[file])
    with pytest.raises(DataError) as exc:
        load_dataset("fashion-mnist", root=fake_fashion)
    assert expected in one_line(exc)
    argv = ["train", "--dataset", "fashion-mnist", "--data-root", fake_fashion, "--model", "mlp",
            "--epochs", "1", "--out", tmp_path / "t", "--quiet"]  # fmt: skip
    assert cli_error(argv, capsys) == str(exc.value)


def test_fashion_mnist_never_mixes_a_user_folder_with_the_system_copy(
    fake_fashion: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    system = make_fake_fashion(tmp_path / "system")
    monkeypatch.setattr("boundary_unlearning.data.datasets.FASHION_MNIST_SYSTEM_DIR", system)
    (fake_fashion / FASHION["test_y"]).unlink()
    with pytest.raises(DataError, match=rf"not found in {re.escape(str(fake_fashion))}"):
        load_dataset("fashion-mnist", root=fake_fashion)
    # a folder the user names is used or refused, never replaced by the system copy (issue 13)
    with pytest.raises(DataError, match="does not exist; .* or drop --data-root"):
        load_dataset("fashion-mnist", root=tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=rf"not found in {re.escape(str(tmp_path / 'empty'))}"):
        load_dataset("fashion-mnist", root=tmp_path / "empty")
    train, _, _ = load_dataset("fashion-mnist")  # no --data-root: the system copy
    assert len(train) == 40


def _cifar_root(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in np.arange(10) % 10]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(entry))
    return root


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.unlink(), "data_batch_3 is missing; re-download CIFAR-10"),
        (lambda p: p.write_bytes(b"not a pickle"), "is not a CIFAR-10 python batch"),
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "is not a CIFAR-10 python batch"),
        (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), "is not a CIFAR-10 python batch"),
        (
            lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((10, 3072), np.uint8),
                                                  "labels": [0] * 9})),
            "has 10 images but 9 labels",
        ),
        (
            lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((10, 3072), np.uint8),
                                                  "labels": [11] * 10})),
            "labels in",
        ),
    ],
    ids=["missing", "garbage", "truncated", "not-a-dict", "label-count", "label-range"],
)  # fmt: skip
def test_cifar10_folder_with_missing_or_malformed_batches(
    damage: Any, expected: str, tmp_path: Path, capsys
) -> None:
    root = _cifar_root(tmp_path / "c")
    damage(root / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", root=root)
    assert expected in one_line(exc)
    argv = ["train", "--dataset", "cifar10", "--data-root", root, "--model", "mlp", "--epochs",
            "1", "--out", tmp_path / "t", "--quiet"]  # fmt: skip
    assert cli_error(argv, capsys) == str(exc.value)


def test_cifar10_binary_batch_of_wrong_size(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(bytes(3073 * 2))
    (folder / "test_batch.bin").write_bytes(bytes(3000))
    with pytest.raises(DataError, match=r"is not a CIFAR-10 binary batch \(size 3000\)"):
        load_dataset("cifar10", root=tmp_path)


def _faces(root: Path, classes: int = 3, per_class: int = 3) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in range(classes):
        (root / f"id{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(
                root / f"id{c}" / f"{i}.png"
            )
    return root


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda r: (r / "id1" / "0.png").write_bytes(b"\x89PNG broken"), "cannot read image"),
        (lambda r: (r / "id2" / "x.jpg").write_bytes(b""), "cannot read image"),
        (
            lambda r: [p.unlink() for p in (r / "id2").iterdir()],
            "class folder 'id2' in",
        ),
        (
            lambda r: [p.rename(r / "id0" / f"m{p.name}") for c in ("id1", "id2")
                       for p in (r / c).iterdir()] and [(r / c).rmdir() for c in ("id1", "id2")],
            "has 1 class folder(s); unlearning needs at least 2",
        ),
    ],
    ids=["broken-png", "empty-jpg", "empty-class", "one-class"],
)  # fmt: skip
def test_imagefolder_with_missing_or_malformed_files(
    damage: Any, expected: str, tmp_path: Path, capsys
) -> None:
    root = _faces(tmp_path / "faces")
    damage(root)
    with pytest.raises(DataError) as exc:
        load_dataset("imagefolder", root=root, image_size=8)
    assert expected in one_line(exc)
    argv = ["train", "--dataset", "imagefolder", "--data-root", root, "--model", "mlp",
            "--epochs", "1", "--out", tmp_path / "t", "--quiet"]  # fmt: skip
    assert expected in cli_error(argv, capsys)


def test_missing_data_folders(tmp_path: Path, capsys) -> None:
    argv = ["train", "--model", "mlp", "--epochs", "1", "--out", tmp_path / "t", "--quiet"]
    msg = cli_error([*argv, "--dataset", "cifar10", "--data-root", tmp_path], capsys)
    assert msg.startswith("CIFAR-10 not found: put cifar-10-batches-py/")
    assert msg.endswith("or pass --download")
    msg = cli_error([*argv, "--dataset", "imagefolder", "--data-root", tmp_path / "no"], capsys)
    assert msg.startswith(f"image folder {tmp_path / 'no'} not found: pass --data-root DIR")


# -------------------------------------------------------------------------- outputs


def test_output_folder_not_writable(digits_ckpt: Path, tmp_path: Path, untrained, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file, so nothing can be created below it")
    out = blocker / "sub"
    msg = cli_error(["train", "--model", "mlp", "--epochs", "1", "--out", out, "--quiet"], capsys)
    assert msg == f"output folder {out} is not writable (Not a directory); choose another --out"
    args = unlearn_args(digits_ckpt, out, "--forget-class", "3", *FAST)
    assert cli_error(args, capsys) == msg
    run = ["run", "--model", "mlp", "--epochs", "1", "--out", out, "--quiet"]
    assert "is not writable" in cli_error(run, capsys)
    with pytest.raises(OutputError) as exc:
        save_checkpoint(untrained, out, {})
    assert one_line(exc).startswith("cannot write ") and "choose a writable --out" in str(exc.value)


def test_unlearn_never_modifies_its_input(digits_ckpt: Path, tmp_path: Path, capsys) -> None:
    ckpt = _copy_ckpt(digits_ckpt, tmp_path / "in")
    before = digest(ckpt)
    out = tmp_path / "out"
    assert bunlearn(unlearn_args(ckpt, out, "--forget-class", "3", *FAST)) == 0
    assert digest(ckpt) == before
    assert (out / "model.safetensors").is_file() and (out / "report.json").is_file()
    # --out pointing at the input is refused, with or without --overwrite
    for extra in ([], ["--overwrite"]):
        msg = cli_error([*unlearn_args(ckpt, ckpt, "--forget-class", "3"), *extra], capsys)
        assert msg == f"--out {ckpt} would overwrite the input checkpoint; choose another folder"
    msg = cli_error(unlearn_args(ckpt / "model.safetensors", ckpt, "--forget-class", "3"), capsys)
    assert "would overwrite the input checkpoint" in msg
    assert digest(ckpt) == before
    # a .pt with its metadata beside it: writing into its folder would replace model.json
    from boundary_unlearning.checkpoint import load_state_dict

    torch.save(load_state_dict(ckpt), ckpt / "model.pt")
    before = digest(ckpt)
    msg = cli_error(unlearn_args(ckpt / "model.pt", ckpt, "--forget-class", "3"), capsys)
    assert "would overwrite the input checkpoint" in msg
    msg = cli_error(unlearn_args(ckpt, tmp_path / "x.safetensors", "--forget-class", "3"), capsys)
    assert msg.endswith("must be a folder (it receives model.safetensors, model.json and the "
                        "reports); drop the file name")  # fmt: skip
    assert digest(ckpt) == before
    # the new checkpoint holds other weights, the input's metadata is unchanged
    assert digest(out)["model.safetensors"] != before["model.safetensors"]


def test_unlearn_never_overwrites_without_overwrite(digits_ckpt: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    args = unlearn_args(digits_ckpt, out, "--forget-class", "3", *FAST)
    assert bunlearn(args) == 0
    first = digest(out)
    msg = cli_error([*args, "--seed", "1"], capsys)
    assert (
        msg
        == f"{out / 'model.safetensors'} already exists; pass --overwrite or choose another --out"
    )
    assert digest(out) == first
    given = {"forget_classes": [3], "hyperparameters": {"epochs": 1}}
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        unlearn_checkpoint(checkpoint=digits_ckpt, method="boundary_shrink", out=out, given=given)
    assert bunlearn([*args, "--seed", "1", "--overwrite"]) == 0
    assert digest(out)["model.safetensors"] != first["model.safetensors"]


def test_train_never_overwrites_another_model(tmp_path: Path, capsys) -> None:
    out = tmp_path / "orig"
    args = ["train", "--model", "mlp", "--epochs", "1", "--batch-size", "256", "--out", out]
    assert bunlearn([*args, "--quiet"]) == 0
    first = digest(out)
    assert bunlearn(args) == 0 and "reused" in capsys.readouterr().out  # identical settings: reuse
    assert digest(out) == first
    msg = cli_error([*args, "--seed", "1", "--quiet"], capsys)
    assert msg == f"{out} already holds a model trained with other settings; pass --overwrite or " \
        "choose another --out"  # fmt: skip
    assert digest(out) == first
    with pytest.raises(OutputError):
        save_original(ExperimentConfig(model="mlp", epochs=1, seed=1), out)
    assert bunlearn([*args, "--seed", "1", "--overwrite", "--quiet"]) == 0
    assert digest(out)["model.safetensors"] != first["model.safetensors"]
    # weights without metadata are not silently replaced either
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes(b"someone else's file")
    msg = cli_error(["train", "--model", "mlp", "--epochs", "1", "--out", bare, "--quiet"], capsys)
    assert msg.endswith(
        "already exists (without model.json); pass --overwrite or choose another --out"
    )
    assert (bare / "model.safetensors").read_bytes() == b"someone else's file"


# --------------------------------------------------------------------- YAML configs


def _has_config_flag() -> bool:
    from boundary_unlearning.cli_parser import build_parser

    return "--config" in build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]


@pytest.mark.skipif(not _has_config_flag(), reason="bunlearn run --config not implemented")
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("datset: digits\n", "unknown key(s) 'datset'; valid keys: dataset"),
        ("epochs: ten\n", "key 'epochs' expects int, got 'ten' (str); fix the value"),
        ("forget_classes: 3\n", "key 'forget_classes' expects list"),
        ("methods: [1, 2]\n", "key 'methods' expects list[str]"),
        ("lr: [0.1]\n", "key 'lr' expects float"),
        ("- just\n- a list\n", "must hold a mapping of option: value, got a list"),
        ("epochs: [1\n", "is not valid YAML at line"),
        ("!!python/object/apply:os.system ['true']\n", "is not valid YAML"),
    ],
)
def test_yaml_config_with_unknown_keys_or_wrong_types(
    text: str, expected: str, tmp_path: Path, capsys
) -> None:
    from boundary_unlearning.config import config_from_file

    path = tmp_path / "config.yaml"
    path.write_text(text)
    msg = cli_error(["run", "--config", path, "--out", tmp_path / "o", "--quiet"], capsys)
    assert expected in msg
    with pytest.raises(ConfigError) as exc:
        config_from_file(path)
    assert one_line(exc) == msg
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- the docs


@pytest.mark.parametrize(
    "fragment",
    [
        "is outside", "has no class", "all <K> classes would be forgotten",
        "selects no sample of the", "the forget set is empty", "values per image but the data",
        "the model cannot take images of shape", "pass the --dataset the model was trained on",
        "unknown dataset", "unknown model", "unknown method", "has no hyperparameter",
        "has the wrong type; expected", "must be a whole number >= 0", "must be a positive number",
        "must be a whole number >= 1", "must be a number >= 0",
        "not found; pass the file or folder",
        "is not a valid safetensors file", "is for another architecture",
        "holds NaN, infinite or complex values", "refusing to load", "weights_only=True",
        "is not a CIFAR-10 python batch", "not found in <dir>", "is not a valid gzip file",
        "cannot read image", "is not writable", "already exists; pass --overwrite",
        "would overwrite the input checkpoint", "already holds a model trained with other settings",
        "unknown key(s)", "expects <type>, got", "is recursive or too large",
        "the loss became NaN or infinite",
    ],
)  # fmt: skip
def test_docs_list_the_messages_and_their_fixes(fragment: str) -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
    assert fragment in docs.read_text()


def test_run_refuses_zero_training_epochs(tmp_path: Path, capsys) -> None:
    # zero epochs would "unlearn" an untrained original and report it as a result
    msg = cli_error(["run", "--epochs", "0", "--out", tmp_path / "r", "--quiet"], capsys)
    assert msg == "original/retrain recipe: epochs=0 must be a whole number >= 1"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("method", "key"), [("neg_grad", "max_loss"), ("scrub", "max_kl")])
def test_loss_caps_are_checked_before_any_work(method: str, key: str) -> None:
    with pytest.raises(HyperparameterError, match=rf"^{method}: {key}=0.0 must be a positive"):
        validate_hyperparameters(method, {key: 0.0})
    assert validate_hyperparameters(method, {key: None}) == {key: None}  # None: no cap
