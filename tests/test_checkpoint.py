"""Checkpoints: safetensors round trip, plain state_dicts via weights_only, shape checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from boundary_unlearning import load_checkpoint, save_checkpoint
from boundary_unlearning.checkpoint import load_state_dict, load_weights_into
from boundary_unlearning.errors import CheckpointError
from conftest import build_tiny, same_state, state_snapshot

META = {
    "dataset": "tiny", "model": "cnn", "model_options": {"width": 4}, "num_classes": 4,
    "in_channels": 1, "image_size": 8, "mean": [0.3], "std": [0.3],
}  # fmt: skip


def test_round_trip_rebuilds_the_architecture(tmp_path: Path, tiny_model) -> None:
    save_checkpoint(tiny_model, tmp_path / "ckpt", META)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "model.json",
        "model.safetensors",
    ]
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["model"] == "cnn"
    assert same_state(state_snapshot(tiny_model), state_snapshot(loaded))
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(tiny_model.eval()(x), loaded(x))


def test_plain_state_dict_loads_with_weights_only(tmp_path: Path, tiny_model) -> None:
    path = tmp_path / "user.pt"
    torch.save(tiny_model.state_dict(), path)
    model = load_weights_into(build_tiny("cnn", seed=9), load_state_dict(path), str(path))
    assert same_state(state_snapshot(tiny_model), state_snapshot(model))


def test_other_architecture_is_refused(tmp_path: Path, tiny_model) -> None:
    save_checkpoint(tiny_model, tmp_path / "ckpt", META)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(tmp_path / "ckpt", build_tiny("mlp"))


def test_truncated_safetensors_is_refused(tmp_path: Path, tiny_model) -> None:
    weights = save_checkpoint(tiny_model, tmp_path / "ckpt", META)
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "ckpt")


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors", build_tiny())


def test_save_leaves_no_temporary_files(tmp_path: Path, tiny_model) -> None:
    save_checkpoint(tiny_model, tmp_path / "ckpt", META)
    save_checkpoint(tiny_model, tmp_path / "ckpt", META)
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")]
