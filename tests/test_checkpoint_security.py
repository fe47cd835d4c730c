"""Checkpoints and data files are untrusted: loading one never runs code (issue 7).

A crafted pickle whose ``__reduce__`` would run a command is refused with a
:class:`CheckpointError` (``bunlearn`` exits 2) and its payload never runs; the CIFAR-10 python
batches are read with a restricted unpickler; weights are checked (names, shapes, finite
values) before anything is copied into a model; metadata cannot make us allocate huge models.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from boundary_unlearning import load_checkpoint, load_dataset, save_checkpoint
from boundary_unlearning.checkpoint import load_state_dict, load_weights_into
from boundary_unlearning.cli import main
from boundary_unlearning.errors import CheckpointError, DataError
from conftest import build_tiny, same_state, state_snapshot


class _Payload:
    """Unpickling this runs ``touch marker`` (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _malicious_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """The same attack in every container a ``.pt`` may come in."""
    state = build_tiny("mlp").state_dict()
    files = {}
    # torch.save's zip format, payload beside real tensors
    files["zip"] = tmp_path / "zip.pt"
    torch.save({**state, "evil": _Payload(marker)}, files["zip"])
    # the payload as the whole object, legacy (non-zip) torch format
    files["legacy"] = tmp_path / "legacy.pt"
    torch.save(_Payload(marker), files["legacy"], _use_new_zipfile_serialization=False)
    # a bare pickle (no torch framing at all), and one calling builtins.eval
    files["raw"] = tmp_path / "raw.pth"
    files["raw"].write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    files["eval"] = tmp_path / "eval.bin"
    files["eval"].write_bytes(pickle.dumps(_EvalPayload(marker), protocol=2))
    return files


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "PAYLOAD-RAN"
    assert not path.exists()
    return path


def test_sanity_the_payload_does_run_when_unpickled_naively(marker: Path, tmp_path: Path) -> None:
    """Control: the crafted files are real attacks (plain pickle.load runs them)."""
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["zip", "legacy", "raw", "eval"])
def test_malicious_pickle_is_refused_and_never_runs(kind: str, marker: Path, tmp_path: Path):
    path = _malicious_files(tmp_path, marker)[kind]
    with pytest.raises(CheckpointError) as exc:
        load_state_dict(path)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"refusing to load {path}")
    assert "weights_only=True (no code runs on load)" in message
    assert message.endswith("save a plain state_dict or safetensors")
    with pytest.raises(CheckpointError):
        load_checkpoint(path, build_tiny("mlp"))
    assert not marker.exists()


def test_malicious_checkpoint_names_the_callable_it_would_load(
    marker: Path, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match=r"it would load (posix|nt|os)\.system"):
        load_state_dict(_malicious_files(tmp_path, marker)["zip"])
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["zip", "legacy", "raw"])
def test_bunlearn_unlearn_refuses_a_malicious_checkpoint(
    kind: str, marker: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _malicious_files(tmp_path, marker)[kind]
    before = path.read_bytes()
    code = main([
        "unlearn", "--checkpoint", str(path), "--dataset", "digits", "--model", "mlp",
        "--forget-class", "3", "--out", str(tmp_path / "out"), "--quiet",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "refusing to load" in err
    assert not marker.exists()
    assert path.read_bytes() == before
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_plain_state_dict_pt_still_loads(tmp_path: Path) -> None:
    model = build_tiny("mlp", seed=3)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("plain.pt", "wrapped.pt"):
        loaded, _ = load_checkpoint(tmp_path / name, build_tiny("mlp", seed=0))
        assert same_state(state_snapshot(loaded), state_snapshot(model))


def test_pt_that_is_not_a_state_dict(tmp_path: Path) -> None:
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"does not hold a state_dict \(name -> tensor\)"):
        load_state_dict(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint"):
        load_state_dict(tmp_path / "junk.pt")


def test_zip_checkpoint_with_a_payload_smuggled_into_data_pkl(marker: Path, tmp_path: Path):
    """Rewrite ``data.pkl`` inside a genuine torch zip: still refused, payload not run."""
    good = tmp_path / "good.pt"
    torch.save(build_tiny("mlp").state_dict(), good)
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps(_Payload(marker), protocol=2)
            dst.writestr(item, data)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_state_dict(bad)
    assert not marker.exists()


# ------------------------------------------------------------- shapes checked first


def test_shapes_and_names_are_verified_before_loading(tmp_path: Path) -> None:
    source = build_tiny("mlp", seed=1)
    target = build_tiny("cnn", seed=2)
    before = state_snapshot(target)
    with pytest.raises(CheckpointError, match="is for another architecture"):
        load_weights_into(target, source.state_dict(), "x")
    assert same_state(state_snapshot(target), before)  # nothing was copied

    wrong = {k: v.clone() for k, v in target.state_dict().items()}
    wrong["head.weight"] = torch.zeros(7, wrong["head.weight"].shape[1])
    with pytest.raises(CheckpointError, match=r"head.weight has shape \(7, "):
        load_weights_into(target, wrong, "x")
    # a partial state dict: the layers it does hold must not be half-loaded either
    partial = {k: torch.ones_like(v) for k, v in target.state_dict().items()}
    partial.pop("head.bias")
    with pytest.raises(CheckpointError, match=r"missing \['head.bias'\]"):
        load_weights_into(target, partial, "x")
    assert same_state(state_snapshot(target), before)


def test_non_finite_or_complex_weights_are_refused(tmp_path: Path) -> None:
    model = build_tiny("mlp")
    for bad in (float("inf"), float("nan")):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["head.weight"][0, 0] = bad
        with pytest.raises(CheckpointError, match="holds NaN, infinite or complex values"):
            load_weights_into(build_tiny("mlp"), state, "x")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.bias"] = state["head.bias"].to(torch.complex64)
    with pytest.raises(CheckpointError, match="complex"):
        load_weights_into(build_tiny("mlp"), state, "x")


def test_metadata_cannot_ask_for_a_huge_model(tmp_path: Path) -> None:
    """A crafted model.json must not make us allocate terabytes (checked before building)."""
    save_checkpoint(build_tiny("mlp"), tmp_path / "c", {
        "model": "mlp", "num_classes": 4, "in_channels": 1, "image_size": 8,
        "mean": [0.3], "std": [0.3], "model_options": {"hidden": 32},
    })  # fmt: skip
    meta_path = tmp_path / "c" / "model.json"
    text = meta_path.read_text()
    for old, new in [
        ('"num_classes": 4', '"num_classes": 4000000000'),
        ('"image_size": 8', '"image_size": 1000000'),
        ('"in_channels": 1', '"in_channels": 100000'),
        ('"hidden": 32', '"hidden": 1000000000'),
    ]:
        meta_path.write_text(text.replace(old, new))
        with pytest.raises(CheckpointError, match="metadata"):
            load_checkpoint(tmp_path / "c")
    meta_path.write_text(text)
    model, meta = load_checkpoint(tmp_path / "c")
    assert meta["num_classes"] == 4 and not model.training


# -------------------------------------------------------- CIFAR-10 python batches


def _cifar_folder(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                 "labels": list(range(10))}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(entry))
    return folder


def test_cifar10_batches_load_with_the_restricted_unpickler(tmp_path: Path) -> None:
    _cifar_folder(tmp_path)
    train, test, info = load_dataset("cifar10", root=tmp_path)
    assert len(train) == 50 and len(test) == 10 and info.image_shape == (3, 32, 32)


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
@pytest.mark.parametrize("where", ["whole", "inside"])
def test_malicious_cifar10_batch_never_runs(
    payload: Any, where: str, marker: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _cifar_folder(tmp_path)
    obj: Any = payload(marker)
    if where == "inside":
        obj = {"data": np.zeros((10, 3072), np.uint8), "labels": list(range(10)), "x": obj}
    (folder / "data_batch_2").write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", root=tmp_path)
    assert "data_batch_2 is not a CIFAR-10 python batch" in str(exc.value)
    assert "refusing to load" in str(exc.value) and "\n" not in str(exc.value)
    assert not marker.exists()
    code = main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--model", "mlp",
                 "--epochs", "1", "--out", str(tmp_path / "t"), "--quiet"])  # fmt: skip
    assert code == 2 and "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def test_cifar10_object_array_cannot_smuggle_a_payload(marker: Path, tmp_path: Path) -> None:
    """An object-dtype numpy array pickles its items through the same restricted unpickler."""
    folder = _cifar_folder(tmp_path)
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload(marker)
    buffer = io.BytesIO()
    pickle.dump({"data": arr, "labels": [0]}, buffer)
    (folder / "test_batch").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


# ---------------------------------------------------------------- image folders


@pytest.mark.parametrize("limit", [30, 10])  # 6x6 = 36 pixels: over the limit, over twice it
def test_image_decompression_bomb_is_refused(
    limit: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(
                tmp_path / f"c{c}" / f"{i}.png"
            )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DataError, match=r"cannot read image .*DecompressionBomb") as exc:
        load_dataset("imagefolder", root=tmp_path, image_size=8)
    assert str(exc.value).endswith("remove or replace the file")
