"""The feature stage of Boundary Shrink / Expanding (their default, ``depth="features"``):
it moves the forget samples' features, resets the forgotten classes' rows, holds the others
in place, and its default forgets in the features on digits where the output stage only
hides the class."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from boundary_unlearning import (
    ForgettingWarning,
    UnlearningData,
    class_split,
    evaluate,
    unlearn,
    unlearning_stats,
)
from boundary_unlearning.data import to_tensors
from boundary_unlearning.errors import ModelError
from boundary_unlearning.heads import frozen_below, head_inputs, layers_in_order
from boundary_unlearning.methods import _features
from boundary_unlearning.methods._features import (
    FEATURE_RECIPE,
    RetainPool,
    _retained_labels,
)
from boundary_unlearning.metrics import depth_evidence, depth_shares
from boundary_unlearning.report.tables import verdict
from conftest import same_state, state_snapshot

FAST = {"feature_steps": 8}


def _distance_to_targets(model: nn.Module, data: UnlearningData, labels: torch.Tensor) -> float:
    centroids = RetainPool(model, data, head=None, seed=0).centroids()
    feats = head_inputs(model, to_tensors(data.forget)[0], num_classes=data.num_classes)
    return float(((feats - centroids[labels]) ** 2).sum(1).mean())


def test_the_feature_stage_moves_the_forgotten_class_and_resets_its_row(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    before = state_snapshot(tiny_model)
    shallow = unlearn("boundary_shrink", tiny_model, tiny_data, depth="outputs")
    deep = unlearn("boundary_shrink", tiny_model, tiny_data, **FAST)
    assert same_state(before, state_snapshot(tiny_model))  # the input is never touched
    stats = unlearning_stats(deep)
    # the output stage's steps, then the feature stage's
    assert stats["steps"] == unlearning_stats(shallow)["steps"] + FAST["feature_steps"]
    assert stats["reached_target"] is True and evaluate(deep, tiny_data)["forget"] <= 0.05
    # the forgotten class's row started afresh; the retained classes' rows stayed near
    cos = nn.functional.cosine_similarity
    old, new = tiny_model.head.weight.detach(), deep.head.weight.detach()  # type: ignore[union-attr]
    assert float(cos(old[1], new[1], dim=0)) < 0.5
    for c in (0, 2, 3):
        assert float(cos(old[c], new[c], dim=0)) > 0.9
    # only the deep model's body moved, its upper half only (feature_layers 0.5; 1.0 moves
    # the first layer too), and its forget features went towards their targets
    first = [m.body[0][0].weight for m in (tiny_model, shallow, deep)]  # type: ignore[index]
    assert torch.equal(first[0], first[1]) and torch.equal(first[0], first[2])
    assert not torch.equal(deep.body[-2].weight, tiny_model.body[-2].weight)  # type: ignore[index]
    whole = unlearn("boundary_shrink", tiny_model, tiny_data, feature_layers=1.0, **FAST)
    assert not torch.equal(whole.body[0][0].weight, first[0])  # type: ignore[index]
    assert all(p.requires_grad for p in deep.parameters())  # nothing stays frozen
    x, y = to_tensors(tiny_data.forget)
    from boundary_unlearning.neighbours import neighbour_search

    labels = neighbour_search(tiny_model, x, y, label_rule="nearest_other").labels
    assert _distance_to_targets(deep, tiny_data, labels) < 0.7 * _distance_to_targets(
        tiny_model, tiny_data, labels
    )


def test_reset_rows_can_be_turned_off(tiny_model: nn.Module, tiny_data: UnlearningData) -> None:
    kept = unlearn("boundary_expanding", tiny_model, tiny_data, reset_rows=False, **FAST)
    cos = nn.functional.cosine_similarity
    old, new = tiny_model.head.weight.detach(), kept.head.weight.detach()  # type: ignore[union-attr]
    assert float(cos(old[1], new[1], dim=0)) > 0.5


def test_several_forgotten_classes_are_never_a_target(
    tiny_model: nn.Module, tiny_sets: tuple[object, object]
) -> None:
    # a forget sample whose new label is another forgotten class goes to the nearest
    # retained class instead
    data = class_split(*tiny_sets, forget_classes=[1, 2])  # type: ignore[arg-type]
    x, _ = to_tensors(data.forget)
    centroids = RetainPool(tiny_model, data, head=None, seed=0).centroids()
    labels = torch.tensor([2, 0] * (len(x) // 2))
    fixed = _retained_labels(labels, tiny_model, x, centroids, data, None)
    assert not bool(torch.isin(fixed, torch.tensor([1, 2])).any())
    assert torch.equal(fixed[1::2], labels[1::2])  # a retained label is kept
    out = unlearn("boundary_shrink", tiny_model, data, **FAST)
    acc = evaluate(out, data)
    assert acc["forget"] <= 0.05 and acc["test_retain"] > 0.9


def test_an_empty_retain_set_or_a_compiled_model_is_refused(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    from torch.utils.data import TensorDataset

    from boundary_unlearning.errors import DataError

    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(DataError, match="^boundary_expanding: the retain set is empty"):
        unlearn("boundary_expanding", tiny_model, dataclasses.replace(tiny_data, retain=empty))
    with pytest.raises(ModelError, match="depth='outputs'"):
        unlearn("boundary_shrink", tiny_model, tiny_data, compile_model=True)


def test_a_diverging_feature_stage_starts_again_at_half_the_rate(
    tiny_model: nn.Module, tiny_data: UnlearningData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loss that stops being finite (a weakly trained original at the default rate) sends
    the stage back to where it began at half the learning rate; past the last halving the
    stage is undone with a warning and the output stage's result kept (the request
    completes; its depth says the class may only be hidden)."""
    real = _features._FeatureLoss.__call__
    rates: list[float] = []

    def nan_above(limit: float) -> object:
        def call(self: object, net: nn.Module, batch: object) -> torch.Tensor:
            lr = net_lr[0]
            loss = real(self, net, batch)  # type: ignore[arg-type]
            return loss * float("nan") if lr > limit else loss

        return call

    net_lr = [0.0]
    real_init = _features._FeatureLoss.__init__

    def init(self: object, *args: object) -> None:
        real_init(self, *args)  # type: ignore[arg-type]
        net_lr[0] = args[4].feature_lr  # type: ignore[attr-defined]
        rates.append(net_lr[0])

    monkeypatch.setattr(_features._FeatureLoss, "__init__", init)
    monkeypatch.setattr(_features._FeatureLoss, "__call__", nan_above(0.4e-3))
    before = state_snapshot(tiny_model)
    new = unlearn("boundary_shrink", tiny_model, tiny_data, **FAST)
    lr = FEATURE_RECIPE.feature_lr  # 3e-3: three halvings reach 0.375e-3, under the limit
    assert rates == [lr, lr / 2, lr / 4, lr / 8] and lr / 8 < 0.4e-3 < lr / 4
    assert unlearning_stats(new)["feature_lr"] == lr / 8
    assert same_state(before, state_snapshot(tiny_model))
    monkeypatch.setattr(_features._FeatureLoss, "__call__", nan_above(0.0))
    with pytest.warns(ForgettingWarning, match="stopped being finite at every rate"):
        undone = unlearn("boundary_shrink", tiny_model, tiny_data, **FAST)
    assert len(rates) == 4 + _features.LR_HALVINGS + 1
    shallow = unlearn("boundary_shrink", tiny_model, tiny_data, depth="outputs")
    assert same_state(state_snapshot(undone), state_snapshot(shallow))
    assert unlearning_stats(undone)["feature_stage_undone"] == 1.0


def test_the_paper_preset_has_no_feature_stage(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    paper = unlearn("boundary_shrink", tiny_model, tiny_data, preset="paper", epochs=1)
    outputs = unlearn(
        "boundary_shrink", tiny_model, tiny_data, preset="paper", epochs=1, depth="outputs"
    )
    assert same_state(state_snapshot(paper), state_snapshot(outputs))
    assert FEATURE_RECIPE.feature_steps == 60 and FEATURE_RECIPE.feature_settle == 0.25


def test_the_feature_stage_ends_once_the_forget_features_have_settled(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    """The stage runs at least ``min_feature_steps`` and at most ``feature_steps``; in
    between it ends as soon as the running mean of the remaining way is at most
    ``feature_settle`` (here: 1.0, met as soon as it is measured; None: never)."""
    outputs = unlearning_stats(unlearn("boundary_shrink", tiny_model, tiny_data,
                                       depth="outputs"))["steps"]  # fmt: skip
    steps = {"min_feature_steps": 6, "feature_steps": 30}
    seen: list[list[float]] = []
    real = _features._FeatureLoss.close

    def keep(self: _features._FeatureLoss) -> None:
        seen.append([float(v) for v in self.way])
        real(self)

    _features._FeatureLoss.close = keep  # type: ignore[method-assign]
    try:
        early = unlearn("boundary_shrink", tiny_model, tiny_data, feature_settle=1.0, **steps)
        full = unlearn("boundary_shrink", tiny_model, tiny_data, feature_settle=None, **steps)
    finally:
        _features._FeatureLoss.close = real  # type: ignore[method-assign]
    assert unlearning_stats(early)["steps"] == outputs + 6
    assert unlearning_stats(full)["steps"] == outputs + 30
    # the remaining way is recorded each step: it starts near 1 (the way at the start) and
    # the stage takes most of it
    assert len(seen[-1]) == 30 and 0.5 < seen[-1][0] < 1.5 and seen[-1][-1] < 0.8 * seen[-1][0]


@pytest.fixture(scope="module")
def digits_models(
    digits_cnn: tuple[nn.Module, UnlearningData],
) -> tuple[nn.Module, nn.Module, UnlearningData]:
    model, data = digits_cnn
    retrained = unlearn("retrain", model, data, epochs=20, lr=0.01, weight_decay=5e-4, seed=0)
    return model, retrained, data


@pytest.mark.slow
@pytest.mark.parametrize("method", ["boundary_shrink", "boundary_expanding"])
def test_the_defaults_forget_digit_3_in_the_features(method: str, digits_models) -> None:
    """The acceptance of the deep default on real data: the output stage alone hides the
    class (depth below 0.5: "hid"); with the feature stage the depth reaches 0.5 ("forgot"),
    and D_tr stays within 2 (BS) / 4 (BE) points of the original's."""
    model, retrained, data = digits_models
    refs = [depth_evidence(m, data) for m in (model, retrained)]
    before = evaluate(model, data)["test_retain"]
    for depth, wanted in (("outputs", "hid"), ("features", "forgot")):
        out = unlearn(method, model, data, depth=depth)
        acc = evaluate(out, data)
        shares = depth_shares(depth_evidence(out, data), *refs)
        report = {"results": {"retrain": {"acc": {"forget": 0.0}},
                              method: {"acc": acc, "depth": shares["depth"]}}}  # fmt: skip
        assert verdict(report, method) == wanted, (depth, shares)
        assert acc["forget"] <= 0.05 and acc["test_forget"] <= 0.05
        drop = {"boundary_shrink": 0.02, "boundary_expanding": 0.04}[method]
        assert acc["test_retain"] >= before - drop


class _HeadFirst(nn.Module):
    """A user network registered out of order: its head first, a parameter of its own (as
    a vision transformer's class token) used before every layer."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 4)
        self.shift = nn.Parameter(torch.zeros(1, 1, 8, 8))
        self.low = nn.Conv2d(1, 4, 3, padding=1)
        self.mid = nn.Linear(4 * 64, 16)
        self.top = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.low(x + self.shift).flatten(1)
        return self.head(torch.relu(self.top(torch.relu(self.mid(z)))))


def test_the_upper_layers_are_found_in_forward_order_whatever_the_registration() -> None:
    net = _HeadFirst()
    x = torch.randn(2, 1, 8, 8)
    assert [id(m) for m in layers_in_order(net, x)] == [
        id(m) for m in (net, net.low, net.mid, net.top, net.head)
    ]
    with frozen_below(net, x, 0.4):  # 2 of 5 layers: top and head train
        trains = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trains == {"top.weight", "top.bias", "head.weight", "head.bias"}
    assert all(p.requires_grad for p in net.parameters())
    with frozen_below(net, x, 0.01):  # the head at least
        assert {n for n, p in net.named_parameters() if p.requires_grad} == {
            "head.weight",
            "head.bias",
        }


class _Attends(nn.Module):
    """Attention reads its output projection's weight itself: that Linear is never called."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        return self.head(self.attn(z, z, z, need_weights=False)[0].mean(1))


def test_a_layer_its_parent_reads_takes_the_parents_place() -> None:
    net = _Attends()
    x = torch.randn(2, 5, 4)
    order = layers_in_order(net, x)
    assert [id(m) for m in order] == [
        id(m) for m in (net.embed, net.attn, net.attn.out_proj, net.head)
    ]
    with frozen_below(net, x, 0.5):  # the upper two: out_proj and the head
        trains = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trains == {"attn.out_proj.weight", "attn.out_proj.bias", "head.weight", "head.bias"}


def test_a_feature_stage_that_breaks_the_retained_classes_is_undone(
    tiny_model: nn.Module, tiny_data: UnlearningData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the retained images' accuracy in the stage's last steps falls far below its
    value at the first step (an Adam-trained EfficientNet-B0 went from 68% to 11%), the
    stage is undone to the output stage's result, the forgotten rows included: the body
    keeps the original's weights, the class stays forgotten in the outputs, and a
    ForgettingWarning says why."""
    import warnings

    from boundary_unlearning import ForgettingWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ForgettingWarning)  # a healthy stage is kept, silently
        kept = unlearn("boundary_shrink", tiny_model, tiny_data, **FAST)
    assert not torch.equal(kept.body[-2].weight, tiny_model.body[-2].weight)  # type: ignore[index]
    monkeypatch.setattr(_features, "COLLAPSE", -1.0)  # any accuracy now counts as broken
    with pytest.warns(ForgettingWarning, match="it broke the retained classes"):
        undone = unlearn("boundary_shrink", tiny_model, tiny_data, **FAST)
    for new, old in zip(undone.body.parameters(), tiny_model.body.parameters(), strict=True):  # type: ignore[union-attr]
        assert torch.equal(new, old)
    shallow = unlearn("boundary_shrink", tiny_model, tiny_data, depth="outputs")
    assert same_state(state_snapshot(undone), state_snapshot(shallow))
    assert evaluate(undone, tiny_data)["forget"] <= 0.05
