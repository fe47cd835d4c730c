"""Contract tests: every registered method, run on the tiny model and data."""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.utils.data import TensorDataset

from boundary_unlearning import UnlearningData, class_split, list_methods, unlearn
from boundary_unlearning.errors import DataError, HyperparameterError, UnlearningError
from boundary_unlearning.methods import get_method
from boundary_unlearning.models import Classifier
from conftest import NUM_CLASSES, same_state, state_snapshot

# Methods whose preconditions the tiny fixtures cannot meet get their own tests.
NEEDS_RECORD = {m for m in list_methods() if get_method(m).cost == "record"}
FAST = {"epochs": 2, "noise_steps": 5, "feature_steps": 5}  # unsir; Boundary feature stage


def _fast(name: str) -> dict[str, int]:
    return {k: v for k, v in FAST.items() if k in get_method(name).hyperparameters}


@pytest.mark.parametrize("method", sorted(set(list_methods()) - NEEDS_RECORD))
def test_method_contract(method: str, tiny_model: nn.Module, tiny_data: UnlearningData) -> None:
    before = state_snapshot(tiny_model)
    tiny_model.train()  # the method must also leave the input's mode alone
    out = unlearn(method, tiny_model, tiny_data, seed=0, **_fast(method))
    # a new model, input untouched (weights, buffers and mode)
    assert out is not tiny_model
    assert same_state(before, state_snapshot(tiny_model))
    assert tiny_model.training
    # same output shape, eval mode
    assert not out.training
    x = torch.rand(3, 1, 8, 8)
    assert out(x).shape == (3, NUM_CLASSES)
    # deterministic under a seed
    again = unlearn(method, tiny_model, tiny_data, seed=0, **_fast(method))
    assert same_state(state_snapshot(out), state_snapshot(again))


@pytest.mark.parametrize("method", list_methods())
def test_empty_forget_set_is_a_clear_error(
    method: str, tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    data = UnlearningData(
        forget=empty,
        retain=tiny_data.retain,
        test_forget=tiny_data.test_forget,
        test_retain=tiny_data.test_retain,
        forget_classes=tiny_data.forget_classes,
        num_classes=tiny_data.num_classes,
    )
    with pytest.raises(UnlearningError, match="forget set is empty"):
        unlearn(method, tiny_model, data, **_fast(method))


# Methods whose use of D_r depends on a setting: (settings that train on D_r, settings
# that do not).
OPTIONAL_RETAIN = {
    "neg_grad": ({"retain_weight": 1.0}, {}),  # NegGrad+ / plain NegGrad
    "amnesiac": ({"repair_epochs": 1}, {"repair_epochs": 0}),  # repair / subtraction only
    # the Boundary methods' feature stage reads a sample of D_r; the output stage alone not
    **{
        m: ({}, {"depth": "outputs"})
        for m in ("boundary_shrink", "boundary_expanding", "expand_shrink", "shrink_expand")
    },
}


@pytest.fixture(scope="module")
def recorded(tiny_sets: tuple[TensorDataset, TensorDataset]) -> tuple[nn.Module, Any]:
    """A tiny CNN trained with the update recorder on, and its record (for amnesiac)."""
    from boundary_unlearning import train
    from boundary_unlearning.recording import UpdateRecorder
    from conftest import build_tiny

    model = build_tiny("cnn")
    recorder = UpdateRecorder(model, NUM_CLASSES)
    train(model, tiny_sets[0], epochs=1, lr=0.05, batch_size=16, seed=0, callbacks=[recorder])
    return model, recorder.record(model)


@pytest.mark.parametrize("method", list_methods())
def test_empty_retain_set_is_refused_only_where_it_is_needed(
    method: str, tiny_model: nn.Module, tiny_data: UnlearningData, recorded: Any
) -> None:
    # A method that trains on D_r refuses an empty one with one line; one that does not
    # (a forget-only method, or a setting that leaves D_r out) runs without it.
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    data = dataclasses.replace(tiny_data, retain=empty)
    model, base = tiny_model, _fast(method)
    if method in NEEDS_RECORD:
        model, record = recorded
        base = {**base, "record": record}
    cost = get_method(method).cost
    needing, not_needing = OPTIONAL_RETAIN.get(
        method, ({}, None) if cost in ("retain", "reference") else (None, {})
    )
    assert needing is not None or not_needing is not None
    if needing is not None:
        with pytest.raises(DataError, match=f"^{method}: the retain set is empty"):
            unlearn(method, model, data, **base, **needing)
    if not_needing is not None:
        assert not unlearn(method, model, data, **base, **not_needing).training


@pytest.mark.parametrize("method", list_methods())
def test_unknown_hyperparameter_names_valid_ones(
    method: str, tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    with pytest.raises(HyperparameterError, match="valid ones"):
        unlearn(method, tiny_model, tiny_data, not_a_parameter=1)


def test_mistyped_hyperparameter(tiny_model: nn.Module, tiny_data: UnlearningData) -> None:
    with pytest.raises(HyperparameterError, match="wrong type"):
        unlearn("boundary_shrink", tiny_model, tiny_data, epochs="ten")


def test_model_with_wrong_output_size(tiny_sets: tuple[TensorDataset, TensorDataset]) -> None:
    from conftest import build_tiny

    data = class_split(*tiny_sets, forget_classes=[0], num_classes=5)
    with pytest.raises(UnlearningError, match="outputs"):
        unlearn("boundary_shrink", build_tiny(), data)


def test_forget_fraction_that_selects_nothing(
    tiny_sets: tuple[TensorDataset, TensorDataset],
) -> None:
    with pytest.raises(DataError, match="selects no sample"):
        class_split(*tiny_sets, forget_classes=[0], forget_fraction=0.001)


@pytest.mark.parametrize("method", sorted(set(list_methods()) - NEEDS_RECORD))
def test_method_keeps_at_most_two_model_copies_alive(
    method: str, tiny_model: nn.Module, tiny_data: UnlearningData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Besides the input model, no method holds more than two models at once (the working
    copy and, for some, a teacher or a first stage's result). Every Classifier built during
    the call (constructed, or deep-copied) is tracked weakly,
    and the live count is sampled at every forward pass of any of them and at the end."""
    alive: weakref.WeakSet[nn.Module] = weakref.WeakSet()
    # Patch __init__ (construction) and __setstate__ (deepcopy), never __new__: CPython cannot
    # restore a class's inherited __new__ once it has been assigned.
    original_init = Classifier.__init__
    original_setstate = Classifier.__setstate__

    def tracked_init(self: Classifier, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        alive.add(self)

    def tracked_setstate(self: Classifier, state: dict[str, Any]) -> None:
        original_setstate(self, state)
        alive.add(self)

    peak = [0]

    def sample(module: nn.Module, _inputs: object) -> None:
        if isinstance(module, Classifier):
            peak[0] = max(peak[0], len(alive))

    monkeypatch.setattr(Classifier, "__init__", tracked_init)
    monkeypatch.setattr(Classifier, "__setstate__", tracked_setstate)
    handle = register_module_forward_pre_hook(sample)
    try:
        out = unlearn(method, tiny_model, tiny_data, seed=0, **_fast(method))
    finally:
        handle.remove()
    peak[0] = max(peak[0], len(alive))
    assert out in alive and tiny_model not in alive
    assert 1 <= peak[0] <= 2, f"{method} held {peak[0]} model copies at once"


def test_the_adding_a_method_example_in_the_docs_registers_and_forgets() -> None:
    # docs/methods.md shows a whole method module; run it as if it were methods/runner_up.py
    # and check that registering it is all it takes (validation, contracts, the stopping rule).
    import importlib.util
    import re
    from pathlib import Path

    from boundary_unlearning import toy_problem, unlearning_stats
    from boundary_unlearning.methods import _registry
    from boundary_unlearning.metrics import accuracy

    text = (Path(__file__).parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n# src/boundary_unlearning/methods/runner_up.py\n(.*?)```",
                      text, re.S)  # fmt: skip
    assert block is not None, "the 'Adding a method' example is missing from docs/methods.md"
    spec = importlib.util.spec_from_loader("boundary_unlearning.methods.runner_up", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    try:
        exec(compile(block.group(1), "docs/methods.md", "exec"), module.__dict__)
        assert "runner_up" in list_methods()
        data, net = toy_problem()
        with pytest.raises(HyperparameterError, match="temperature=-1.0 must be a positive"):
            unlearn("runner_up", net, data, temperature=-1.0)
        new = unlearn("runner_up", net, data)
        assert new is not net and unlearning_stats(new)["reached_target"] is True
        assert accuracy(new, data.forget) <= 0.05
    finally:
        _registry._REGISTRY.pop("runner_up", None)


@pytest.mark.parametrize("method", list_methods())
def test_every_method_takes_two_classes_and_an_earlier_one(
    method: str,
    tiny_model: nn.Module,
    tiny_sets: tuple[TensorDataset, TensorDataset],
    recorded: Any,
) -> None:
    # two classes in one request: every method runs (amnesiac with its record)
    data = class_split(*tiny_sets, [1, 3])
    model, extra = tiny_model, _fast(method)
    if method in NEEDS_RECORD:
        model, record = recorded
        extra = {**extra, "record": record}
    out = unlearn(method, model, data, seed=0, **extra)
    assert out(torch.rand(2, 1, 8, 8)).shape == (2, NUM_CLASSES)
    # a class an earlier request forgot is in no retained set the method sees
    earlier = class_split(*tiny_sets, 1, forgotten=[3])
    assert 3 not in set(earlier.retain.tensors[1].tolist())  # type: ignore[attr-defined]
