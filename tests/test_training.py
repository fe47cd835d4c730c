"""The one training loop: seeded, device-agnostic, stops clearly on divergence."""

from __future__ import annotations

import pytest
import torch

from boundary_unlearning import train
from boundary_unlearning.errors import DivergenceError, HyperparameterError
from boundary_unlearning.optim import SGD
from boundary_unlearning.training import fit
from conftest import build_tiny, same_state, state_snapshot


def test_same_seed_same_weights_other_seed_other_weights(tiny_sets) -> None:
    a = train(build_tiny("mlp"), tiny_sets[0], epochs=2, seed=5)
    b = train(build_tiny("mlp"), tiny_sets[0], epochs=2, seed=5)
    c = train(build_tiny("mlp"), tiny_sets[0], epochs=2, seed=6)
    assert same_state(state_snapshot(a), state_snapshot(b))
    assert not same_state(state_snapshot(a), state_snapshot(c))


def test_training_does_not_touch_global_rng(tiny_sets) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(build_tiny("mlp"), tiny_sets[0], epochs=1)
    assert torch.equal(torch.rand(3), expected)


def test_training_learns(tiny_sets) -> None:
    from boundary_unlearning.metrics import accuracy

    model = train(build_tiny("cnn"), tiny_sets[0], epochs=10, lr=0.05, batch_size=16)
    assert accuracy(model, tiny_sets[1]) > 0.9
    assert not model.training


def test_divergence_names_the_step_and_suggests_lower_lr(tiny_sets) -> None:
    with pytest.raises(DivergenceError, match=r"step \d+ .*lower the learning rate"):
        train(build_tiny("mlp"), tiny_sets[0], epochs=3, lr=1e30, momentum=0.0)


def test_zero_epochs_returns_model_unchanged(tiny_sets) -> None:
    model = build_tiny("mlp")
    before = state_snapshot(model)
    fit(model, (tiny_sets[0].tensors[0], tiny_sets[0].tensors[1]), epochs=0, lr=0.1)
    assert same_state(before, state_snapshot(model))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": -1}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "rmsprop"}, "optimizer"),
    ],
)
def test_meaningless_settings_are_clear_errors(tiny_sets, kwargs, match) -> None:
    settings = {"epochs": 1, "lr": 0.1, **kwargs}
    with pytest.raises(HyperparameterError, match=match):
        train(build_tiny("mlp"), tiny_sets[0], **settings)


def test_clip_to_first_bounds_every_step_by_the_first(tiny_sets) -> None:
    """With ``clip_to_first`` no step's gradient is longer than the first step's (times the
    factor), even when the loss steepens six-fold; without it the steps grow with it."""
    x, y = tiny_sets[0].tensors
    real_step = SGD.step

    def run(clip: float | None) -> list[float]:
        norms: list[float] = []

        def loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(model(batch[0]), batch[1]) * (1 + len(norms))

        def spy(self: SGD, *args: object, **kwargs: object) -> object:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            return real_step(self, *args, **kwargs)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(SGD, "step", spy)
            fit(build_tiny("mlp"), (x, y), loss, max_steps=6, lr=1e-3, clip_to_first=clip,
                batch_size=16)  # fmt: skip
        return norms

    clipped, free = run(1.0), run(None)
    assert len(clipped) == len(free) == 6
    assert max(clipped[1:]) <= clipped[0] * (1 + 1e-5)
    assert max(free[1:]) > 2 * free[0]
