"""Amnesiac unlearning and the training-time update recorder it needs."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from boundary_unlearning import UnlearningData, class_split, evaluate, train, unlearn
from boundary_unlearning.errors import DataError, ModelError, NotApplicableError, UnlearningError
from boundary_unlearning.recording import (
    UpdateRecord,
    UpdateRecorder,
    load_record,
    record_path,
    save_record,
)
from boundary_unlearning.training import cross_entropy_loss, fit
from conftest import NUM_CLASSES, build_tiny, same_state, state_snapshot


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def recorded(
    tiny_sets: tuple[TensorDataset, TensorDataset],
) -> tuple[nn.Module, UpdateRecord]:
    """A tiny CNN trained on the whole tiny training set with the recorder on."""
    model = build_tiny("cnn")
    recorder = UpdateRecorder(model, NUM_CLASSES)
    train(model, tiny_sets[0], epochs=4, lr=0.05, batch_size=16, seed=0, callbacks=[recorder])
    return model, recorder.record(model)


def test_oracle_subtraction_restores_the_weights_before_forget_only_steps(
    tiny_data: UnlearningData,
) -> None:
    # Phase 1 sees only D_r (not recorded); phase 2 sees only D_f, with momentum and weight
    # decay, recorded. Every recorded step held the forget class, so amnesiac without repair
    # must give back exactly the phase-1 weights.
    model = build_tiny("cnn")
    xr, yr = tiny_data.retain.tensors  # type: ignore[attr-defined]
    xf, yf = tiny_data.forget.tensors  # type: ignore[attr-defined]
    fit(model, (xr, yr), cross_entropy_loss, epochs=3, lr=0.05, batch_size=16, seed=0)
    before = _params(model)
    recorder = UpdateRecorder(model, NUM_CLASSES)
    fit(model, (xf, yf), cross_entropy_loss, epochs=4, lr=0.05, weight_decay=5e-4,
        batch_size=8, seed=1, callbacks=[recorder])  # fmt: skip
    record = recorder.record(model)
    assert record.steps == 4 * 5
    assert int(record.batches[1]) == record.steps
    assert int(record.batches[0]) == 0
    assert any(not torch.equal(before[n], p) for n, p in _params(model).items())
    out = unlearn("amnesiac", model, tiny_data, record=record, repair_epochs=0)
    for name, param in out.named_parameters():
        torch.testing.assert_close(param.detach(), before[name], rtol=0, atol=1e-5)
    assert not out.training


def test_per_class_sums_equal_the_updates_of_batches_holding_the_class(
    tiny_sets: tuple[TensorDataset, TensorDataset],
) -> None:
    class Log:
        def __init__(self, model: nn.Module) -> None:
            self.model, self.steps = model, []  # type: ignore[var-annotated]
            self.before: dict[str, torch.Tensor] = {}

        def before_step(self, step: int, batch: tuple[torch.Tensor, ...]) -> None:
            self.before = _params(self.model)

        def after_step(self, step: int, batch: tuple[torch.Tensor, ...]) -> None:
            now = _params(self.model)
            delta = {n: now[n] - self.before[n] for n in now}
            self.steps.append((set(batch[1].tolist()), delta))

    model = build_tiny("cnn")
    # small batches over 2 classes only, so some batches miss a class
    x, y = tiny_sets[0].tensors
    keep = y < 2
    recorder, log = UpdateRecorder(model, NUM_CLASSES), Log(model)
    fit(model, (x[keep], y[keep]), cross_entropy_loss, epochs=2, lr=0.05, batch_size=3,
        seed=0, callbacks=[log, recorder])  # fmt: skip
    record = recorder.record(model)
    for c in range(NUM_CLASSES):
        held = [d for classes, d in log.steps if c in classes]
        assert int(record.batches[c]) == len(held)
        for name in record.sums:
            expected = sum((d[name] for d in held), torch.zeros_like(record.sums[name][c]))
            torch.testing.assert_close(record.sums[name][c], expected, rtol=0, atol=1e-6)
    both = sum(1 for classes, _ in log.steps if {0, 1} <= classes)
    assert int(record.co_batches[0, 1]) == both > 0
    assert 0 < int(record.batches[0]) < record.steps  # some batches held no class 0
    # class 0 and 1 shared batches without either's batches containing the other's, but
    # every batch held one of them: the update is that of every step, each once
    only = [sum(1 for classes, _ in log.steps if c in classes and 1 - c not in classes)
            for c in (0, 1)]  # fmt: skip
    assert min(only) > 0
    update = record.forget_update([0, 1])
    for name in record.sums:
        expected = sum((d[name] for _, d in log.steps), torch.zeros_like(update[name]))
        torch.testing.assert_close(update[name], expected, rtol=0, atol=1e-6)
    assert record.steps_held([0, 1]) == record.steps
    # without the sum of every step (an older record) the same request is not applicable
    older = dataclasses.replace(record, total=None)
    with pytest.raises(NotApplicableError, match="one at a time"):
        older.forget_update([0, 1])
    # classes 2 and 3 never occurred: combining them is exact (zero)
    assert all(float(u.abs().sum()) == 0 for u in record.forget_update([2, 3]).values())


def test_save_and_load_round_trip(tmp_path: Path, recorded: tuple[nn.Module, UpdateRecord]) -> None:
    model, record = recorded
    path = save_record(record, tmp_path)
    assert path == tmp_path / "updates.safetensors" == record_path(tmp_path)
    assert record_path(tmp_path / "model.safetensors") == tmp_path / "model.updates.safetensors"
    loaded = load_record(tmp_path)
    assert loaded.steps == record.steps and loaded.fingerprint == record.fingerprint
    assert torch.equal(loaded.batches, record.batches)
    assert torch.equal(loaded.co_batches, record.co_batches)
    assert same_state(loaded.sums, record.sums)
    loaded.check_matches(model)


def test_missing_record_names_the_flag(tiny_model: nn.Module, tiny_data: UnlearningData) -> None:
    with pytest.raises(UnlearningError, match="--record-updates"):
        unlearn("amnesiac", tiny_model, tiny_data)
    with pytest.raises(UnlearningError, match="--record-updates"):
        unlearn("amnesiac", tiny_model, tiny_data, record="/nonexistent/folder")


def test_record_of_other_weights_is_refused(
    tiny_model: nn.Module, tiny_data: UnlearningData, recorded: tuple[nn.Module, UpdateRecord]
) -> None:
    _, record = recorded
    with pytest.raises(ModelError, match="other weights"):
        unlearn("amnesiac", tiny_model, tiny_data, record=record)
    with pytest.raises(ModelError, match="another architecture"):
        unlearn("amnesiac", build_tiny("mlp"), tiny_data, record=record)


def test_amnesiac_contract_and_behaviour(
    tiny_data: UnlearningData, recorded: tuple[nn.Module, UpdateRecord]
) -> None:
    model, record = recorded
    model = copy.deepcopy(model)
    before = state_snapshot(model)
    model.train()
    repair = {"repair_epochs": 3, "lr": 0.05, "batch_size": 16, "seed": 0}
    out = unlearn("amnesiac", model, tiny_data, record=record, **repair)
    assert out is not model and not out.training and model.training
    assert same_state(before, state_snapshot(model))
    assert out(torch.rand(3, 1, 8, 8)).shape == (3, NUM_CLASSES)
    again = unlearn("amnesiac", model, tiny_data, record=record, **repair)
    assert same_state(state_snapshot(out), state_snapshot(again))
    original, after = evaluate(model, tiny_data), evaluate(out, tiny_data)
    assert original["forget"] == 1.0
    assert after["forget"] < 0.5 * original["forget"]
    assert after["retain"] > 0.9
    from boundary_unlearning import unlearning_stats

    assert unlearning_stats(out)["subtracted_steps"] == int(record.batches[1])


def test_forget_class_outside_the_record(
    tiny_sets: tuple[TensorDataset, TensorDataset], recorded: tuple[nn.Module, UpdateRecord]
) -> None:
    model, record = recorded
    data = class_split(*tiny_sets, forget_classes=[1])
    small = UpdateRecord(
        {n: s[:1] for n, s in record.sums.items()}, record.batches[:1], record.co_batches[:1, :1],
        record.steps, record.fingerprint,
    )  # fmt: skip
    with pytest.raises(DataError, match="covers classes"):
        unlearn("amnesiac", model, data, record=small)


def test_experiment_records_when_a_record_method_runs(tmp_path: Path) -> None:
    from boundary_unlearning.cache import (
        original_metadata,
        records_updates,
        with_update_record,
    )
    from boundary_unlearning.config import ExperimentConfig
    from boundary_unlearning.data import load_dataset

    plain = ExperimentConfig(methods=["boundary_shrink"])
    asked = ExperimentConfig(methods=["boundary_shrink"], record_updates=True)
    needed = ExperimentConfig(methods=["boundary_shrink", "amnesiac"])
    assert not records_updates(plain) and records_updates(asked) and records_updates(needed)
    info = load_dataset("digits", None)[2]
    keys = {original_metadata(c, info)["cache_key"] for c in (plain, asked, needed)}
    assert len(keys) == 2  # recording enters the original's cache key
    pointed = with_update_record(needed, tmp_path)
    assert pointed.hyperparameters == {
        "amnesiac": {"record": str(tmp_path / "updates.safetensors")}
    }
    mine = ExperimentConfig(methods=["amnesiac"], hyperparameters={"amnesiac": {"record": "x"}})
    assert with_update_record(mine, tmp_path).hyperparameters["amnesiac"]["record"] == "x"


@pytest.mark.slow
def test_cli_train_records_and_unlearn_uses_the_record(tmp_path: Path) -> None:
    from boundary_unlearning.cli import main

    cache = str(tmp_path / "cache")
    orig = tmp_path / "orig"
    common = ["--cache-dir", cache, "--quiet", "--device", "cpu"]
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--record-updates",
                 "--out", str(orig), *common]) == 0  # fmt: skip
    assert (orig / "updates.safetensors").is_file()
    assert main(["unlearn", "--checkpoint", str(orig), "--method", "amnesiac",
                 "--forget-class", "3", "--set", "repair_epochs=0",
                 "--out", str(tmp_path / "u"), *common]) == 0  # fmt: skip
    plain = tmp_path / "plain"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(plain),
                 *common]) == 0  # fmt: skip
    assert not (plain / "updates.safetensors").exists()
    assert main(["unlearn", "--checkpoint", str(plain), "--method", "amnesiac",
                 "--forget-class", "3", "--out", str(tmp_path / "v"), *common]) == 2  # fmt: skip


def test_nested_and_disjoint_batches_are_subtracted_exactly_once() -> None:
    # batches {0,1}, {1}, {2}: class 0's batches lie inside class 1's, class 2's apart; the
    # update of forgetting 0, 1 and 2 is every batch once
    model = nn.Linear(2, 3)
    recorder = UpdateRecorder(model, 3)
    deltas = []
    for step, held in enumerate(([0, 1], [1], [2])):
        batch = (torch.zeros(len(held), 2), torch.tensor(held))
        recorder.before_step(step, batch)
        with torch.no_grad():
            model.bias.add_(torch.tensor([1.0, 10.0, 100.0]) * (step + 1))
        deltas.append(torch.tensor([1.0, 10.0, 100.0]) * (step + 1))
        recorder.after_step(step, batch)
    record = recorder.record(model)
    torch.testing.assert_close(record.forget_update([0, 1, 2])["bias"], sum(deltas))
    torch.testing.assert_close(record.forget_update([0, 1])["bias"], deltas[0] + deltas[1])
    torch.testing.assert_close(record.forget_update([0, 2])["bias"], deltas[0] + deltas[2])
