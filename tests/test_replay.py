"""The feature stage's replay of its frozen lower layers (:mod:`~boundary_unlearning.methods.
_replay`): the same outputs without running the frozen layers again, and off wherever that
cannot be exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from boundary_unlearning import UnlearningData, unlearn, unlearning_stats
from boundary_unlearning.methods import _features, _replay
from boundary_unlearning.methods._replay import FrozenPrefix


class Counted(nn.Module):
    """Wraps a module and counts how often it computes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out: torch.Tensor = self.inner(x)
        return out


class Residual(nn.Module):
    """A frozen stem whose output the trained part reads twice: through a frozen layer and
    around it (a skip connection added after the first trained layer)."""

    def __init__(self, conv: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem: Counted
        self.a: nn.Module
        self.b: nn.Module
        self.skip: nn.Module
        self.head: nn.Module
        if conv:
            self.stem = Counted(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()))
            self.a = nn.Conv2d(4, 4, 3, padding=1)
            trained: nn.Module = nn.Conv2d(4, 4, 3, padding=1)
            self.b = nn.Sequential(trained, nn.MaxPool2d(2))
            self.skip = nn.MaxPool2d(2)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
        else:
            self.stem = Counted(nn.Sequential(nn.Linear(4, 8), nn.ReLU()))
            trained = nn.Linear(8, 8)
            self.a, self.b, self.skip = nn.Linear(8, 8), trained, nn.Identity()
            self.head = nn.Linear(8, 3)
        self.trained = trained
        self.stem.requires_grad_(False)
        self.a.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        out: torch.Tensor = self.head(self.b(self.a(h)) + self.skip(h))
        return out


@pytest.mark.parametrize("conv", [False, True])
def test_a_replayed_pass_gives_the_same_output_without_running_the_frozen_layers(
    conv: bool,
) -> None:
    net = Residual(conv)
    x = torch.randn(6, 1, 8, 8) if conv else torch.randn(6, 4)
    prefix = FrozenPrefix()
    first = prefix.forward(net, x, list(range(6)))
    assert prefix.active and len(prefix) == 6
    assert prefix.plan is not None and set(map(id, prefix.plan.cut)) == {id(net.stem), id(net.a)}
    torch.testing.assert_close(first, net(x))
    calls = net.stem.calls
    again = prefix.forward(net, x[[4, 0, 2]], [4, 0, 2])  # kept images: nothing computed
    assert net.stem.calls == calls
    torch.testing.assert_close(again, net(x[[4, 0, 2]]))
    # a new image is computed up to the cut only (the pass stops there), then replayed
    extra = torch.cat([x[:1], x[:1] + 1.0])
    with torch.no_grad():
        want = net(extra)
    head_calls = []
    hook = net.head.register_forward_hook(lambda *_: head_calls.append(1))
    got = prefix.forward(net, extra, [0, "new"])
    hook.remove()
    assert len(head_calls) == 1 and len(prefix) == 7
    torch.testing.assert_close(got, want)
    # gradients reach the trained layers as in a normal pass
    got.sum().backward()  # type: ignore[no-untyped-call]
    assert isinstance(net.trained, nn.Conv2d | nn.Linear) and net.trained.weight.grad is not None
    assert all(p.grad is None for p in net.stem.parameters())


def test_an_in_place_layer_below_the_cut_is_replayed_with_the_value_it_left() -> None:
    # ReLU(inplace=True) returns the tensor the layer before it made (torchvision's ResNet)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))
    net[0].requires_grad_(False)
    x, prefix = torch.randn(5, 4), FrozenPrefix()
    prefix.forward(net, x, list(range(5)))
    assert prefix.plan is not None and prefix.plan.cut == [net[1]]
    torch.testing.assert_close(prefix.forward(net, x, list(range(5))), net(x))


def test_images_past_the_keep_rule_or_the_budget_are_computed_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, x = Residual(), torch.randn(4, 4)
    prefix = FrozenPrefix(keep=lambda key: key != 3)
    prefix.forward(net, x, [0, 1, 2, 3])
    assert prefix.active and len(prefix) == 3
    calls = net.stem.calls
    torch.testing.assert_close(prefix.forward(net, x, [0, 1, 2, 3]), net(x))
    assert net.stem.calls == calls + 2  # image 3 up to the cut, and net(x)
    monkeypatch.setattr(_replay, "REPLAY_BUDGET", 0)
    none_kept = FrozenPrefix()
    none_kept.forward(net, x, [0, 1, 2, 3])
    assert none_kept.active and len(none_kept) == 0
    torch.testing.assert_close(none_kept.forward(net, x, [0, 1, 2, 3]), net(x))


class MadeOutside(nn.Module):
    """The trained layer reads a value the frozen part made outside a module."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.head = nn.Linear(4, 8).requires_grad_(False), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.stem(x) * 2.0)
        return out


class CalledTwice(nn.Module):
    """One ReLU module both below and above the cut (as torchvision's BasicBlock uses it)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.relu = nn.Linear(4, 8).requires_grad_(False), nn.ReLU()
        self.mid, self.head = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.relu(self.mid(self.relu(self.stem(x)))))
        return out


class DropsBlocks(nn.Module):
    """Stochastic depth (torchvision's EfficientNet): a random draw inside a module that is
    neither a Dropout nor a BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.head = nn.Linear(4, 8).requires_grad_(False), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        if self.training:
            h = h * torch.empty(len(h), 1).bernoulli_(0.9)
        out: torch.Tensor = self.head(h)
        return out


def _noisy() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    net[0].requires_grad_(False)
    return net


def _batch_statistics() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    net[0].requires_grad_(False)
    net[1].requires_grad_(False)  # frozen weights, yet statistics of the batch in train mode
    return net


@pytest.mark.parametrize(
    "build", [MadeOutside, CalledTwice, DropsBlocks, _noisy, _batch_statistics]
)
def test_the_replay_stays_off_where_it_cannot_be_exact(build: type[nn.Module]) -> None:
    torch.manual_seed(0)
    net = build().train()
    x = torch.randn(5, 4)
    prefix = FrozenPrefix()
    prefix.forward(net, x, list(range(5)))
    assert not prefix.active and len(prefix) == 0
    net.eval()
    torch.testing.assert_close(prefix.forward(net, x, list(range(5))), net(x))


def test_nothing_frozen_means_nothing_to_replay() -> None:
    net, x = nn.Sequential(nn.Linear(4, 3)), torch.randn(3, 4)
    prefix = FrozenPrefix()
    torch.testing.assert_close(prefix.forward(net, x, [0, 1, 2]), net(x))
    assert not prefix.active


@pytest.mark.parametrize("method", ["boundary_shrink", "boundary_expanding"])
def test_the_feature_stage_trains_the_same_with_and_without_the_replay(
    method: str, tiny_model: nn.Module, tiny_data: UnlearningData, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[FrozenPrefix] = []
    real = _features._replay

    def watching(*args: object) -> FrozenPrefix | None:
        prefix = real(*args)  # type: ignore[arg-type]
        if prefix is not None:
            made.append(prefix)
        return prefix

    monkeypatch.setattr(_features, "_replay", watching)
    fast = unlearn(method, tiny_model, tiny_data, feature_steps=12)
    assert made and made[0].active and len(made[0]) > 0  # the tiny CNN's lower half replayed
    monkeypatch.setattr(_features, "_replay", lambda *_: None)
    slow = unlearn(method, tiny_model, tiny_data, feature_steps=12)
    assert unlearning_stats(fast)["steps"] == unlearning_stats(slow)["steps"]
    for (name, a), (_, b) in zip(fast.state_dict().items(), slow.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        assert a.is_contiguous(), name  # the replay's layout never reaches the weights
