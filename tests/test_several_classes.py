"""Several classes in one request, and classes an earlier request already forgot."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from boundary_unlearning import class_split, unlearn, unlearning_stats
from boundary_unlearning.errors import DataError, NotApplicableError
from boundary_unlearning.methods.boundary_expanding import prune_head, widen_head
from boundary_unlearning.metrics import class_evidence
from boundary_unlearning.recording import UpdateRecorder
from boundary_unlearning.report.classes import class_verdicts, forgotten_class_lines
from conftest import NUM_CLASSES


def test_split_keeps_earlier_forgotten_classes_out_of_every_retained_set(
    tiny_sets: tuple[TensorDataset, TensorDataset],
) -> None:
    train_set, test_set = tiny_sets
    data = class_split(train_set, test_set, 1, forgotten=[2])
    for subset in (data.retain, data.test_retain):
        labels = subset.tensors[1]  # type: ignore[attr-defined]
        assert not bool(torch.isin(labels, torch.tensor([1, 2])).any())
    assert data.forgotten_before == (2,) and data.all_forgotten == (1, 2)
    assert set(data.earlier.tensors[1].tolist()) == {2}  # type: ignore[union-attr]
    assert set(data.test_earlier.tensors[1].tolist()) == {2}  # type: ignore[union-attr]
    # a class given both ways is this request's
    again = class_split(train_set, test_set, [1, 2], forgotten=[2])
    assert again.forgotten_before == () and again.earlier is None
    with pytest.raises(DataError, match="forgotten before"):
        class_split(train_set, test_set, [0, 1], forgotten=[2, 3])
    with pytest.raises(DataError, match="outside"):
        class_split(train_set, test_set, 1, forgotten=[9])


def test_boundary_expanding_gives_each_class_its_own_shadow_output(
    tiny_model: nn.Module, tiny_sets: tuple[TensorDataset, TensorDataset]
) -> None:
    head = nn.Linear(3, 4)
    wide = widen_head(head, torch.Generator().manual_seed(0), shadows=2)
    assert wide.out_features == 6 and torch.equal(prune_head(wide, shadows=2).weight, head.weight)
    data = class_split(*tiny_sets, [1, 3])
    new = unlearn("boundary_expanding", tiny_model, data, depth="outputs")
    assert unlearning_stats(new)["reached_target"]
    evidence = class_evidence(new, data)
    assert set(evidence) == {"1", "3"}
    assert all(row["forget"] <= 0.05 for row in evidence.values())


def test_per_class_verdicts_name_an_earlier_class_that_came_back(
    tiny_model: nn.Module, tiny_sets: tuple[TensorDataset, TensorDataset]
) -> None:
    data = class_split(*tiny_sets, 1, forgotten=[2])
    evidence = class_evidence(tiny_model, data)  # the original still knows class 2
    assert evidence["2"]["earlier"] and evidence["2"]["forget"] > 0.5
    report = {"results": {"m": {"per_class": evidence}}, "class_names_all": {"2": "two"}}
    assert class_verdicts(report, "m") == {"1": "did not forget", "2": "failed"}
    assert any(
        line.startswith("| 2 (two), earlier request") for line in forgotten_class_lines(report)
    )


def test_amnesiac_refuses_a_model_that_already_forgot(
    tiny_model: nn.Module, tiny_sets: tuple[TensorDataset, TensorDataset]
) -> None:
    record = UpdateRecorder(tiny_model, NUM_CLASSES).record(tiny_model)
    data = class_split(*tiny_sets, 1, forgotten=[2])
    with pytest.raises(NotApplicableError, match="second time"):
        unlearn("amnesiac", tiny_model, data, record=record)


def test_run_reports_a_method_that_is_not_applicable_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from boundary_unlearning import experiment, toy_problem
    from boundary_unlearning.cache import StageStore
    from boundary_unlearning.config import ExperimentConfig

    def refuse(*args: object, **kwargs: object) -> None:
        raise NotApplicableError("batches overlap")

    monkeypatch.setattr(experiment, "timed_unlearn", refuse)
    data, net = toy_problem()
    cfg = ExperimentConfig(methods=["amnesiac"])
    show = experiment._Progress(cfg, 1, None)
    entry, model = experiment._method_stage(
        "amnesiac", cfg, data, net, lambda m: {}, StageStore(None), weights_meta=None, show=show
    )
    show.bar.close()
    assert model is None and entry["failed"] == "not applicable: batches overlap"
