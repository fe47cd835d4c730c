"""Neighbour search: inside the eps-ball in pixel space, in [0,1], labels from the frozen model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from boundary_unlearning.data import to_tensors
from boundary_unlearning.errors import HyperparameterError
from boundary_unlearning.neighbours import neighbour_search
from conftest import build_tiny, same_state, state_snapshot


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_perturbation_within_eps_and_in_unit_box(
    tiny_model: nn.Module, tiny_data, attack: str, eps: float
) -> None:
    x, y = to_tensors(tiny_data.forget)
    nb = neighbour_search(tiny_model, x, y, eps=eps, attack=attack)
    delta = (nb.inputs - x).abs()
    assert float(delta.max()) <= eps + 1e-6
    assert float(nb.inputs.min()) >= 0.0 and float(nb.inputs.max()) <= 1.0
    assert nb.inputs.shape == x.shape
    # it really moved the inputs (FGSM steps every pixel with a non-zero gradient)
    assert float(delta.mean()) > eps / 4


def test_labels_come_from_the_frozen_model(tiny_model: nn.Module, tiny_data) -> None:
    x, y = to_tensors(tiny_data.forget)
    before = state_snapshot(tiny_model)
    tiny_model.train()
    nb = neighbour_search(tiny_model, x, y, eps=0.3)
    # model untouched, mode restored, no gradients left on its parameters
    assert same_state(before, state_snapshot(tiny_model))
    assert tiny_model.training
    assert all(p.grad is None for p in tiny_model.parameters())
    # labels are the eval-mode argmax at x'
    tiny_model.eval()
    with torch.no_grad():
        expected = tiny_model(nb.inputs).argmax(1)
    assert torch.equal(nb.labels, expected)
    assert nb.success_ratio == pytest.approx(float((expected != y).float().mean()))
    assert 0.0 < nb.success_ratio <= 1.0  # eps 0.3 flips some tiny-model labels


def test_quantised_to_255_levels_when_inside_ball() -> None:
    model = build_tiny("mlp")
    x = torch.full((4, 1, 8, 8), 128 / 255)
    y = torch.zeros(4, dtype=torch.long)
    nb = neighbour_search(model, x, y, eps=0.1)
    scaled = nb.inputs * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-4)


def test_normalised_model_steps_in_pixel_space() -> None:
    """A model expecting normalised inputs: same neighbours as the pixel-space model."""
    pixel_model = build_tiny("mlp")
    mean, std = 0.3, 0.3  # the values build_tiny puts in the Normalize layer

    class WithoutNormalize(nn.Module):
        """The same network minus its Normalize layer: it expects normalised inputs."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.inner.head(self.inner.body(z))  # type: ignore[operator]

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=gen)
    y = torch.randint(0, 4, (16,), generator=gen)
    nb_pixel = neighbour_search(pixel_model, x, y, eps=0.1)
    nb_norm = neighbour_search(
        WithoutNormalize(pixel_model), (x - mean) / std, y, eps=0.1, normalization=((mean,), (std,))
    )
    assert torch.equal(nb_pixel.labels, nb_norm.labels)
    assert torch.allclose(nb_norm.inputs * std + mean, nb_pixel.inputs, atol=1e-5)


def test_bad_attack_settings_are_clear_errors(tiny_model: nn.Module) -> None:
    x = torch.rand(2, 1, 8, 8)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(HyperparameterError, match="eps"):
        neighbour_search(tiny_model, x, y, eps=0.0)
    with pytest.raises(HyperparameterError, match="attack"):
        neighbour_search(tiny_model, x, y, attack="cw")  # type: ignore[arg-type]


def test_fgsm_step_raises_the_loss_at_the_true_label() -> None:
    """Oracle: a small FGSM step goes uphill in the cross-entropy of the true label (first
    order: the loss grows by about eps * ||grad||_1 > 0) for every sample not yet saturated."""
    from boundary_unlearning import train
    from conftest import make_blobs

    model = train(build_tiny("cnn"), make_blobs(40, seed=1), epochs=1, lr=0.05, seed=0)
    x, y = to_tensors(make_blobs(10, seed=3))
    nb = neighbour_search(model, x, y, eps=0.01, quantize=False)
    model.eval()
    with torch.no_grad():
        before = nn.functional.cross_entropy(model(x), y, reduction="none")
        after = nn.functional.cross_entropy(model(nb.inputs), y, reduction="none")
    moved = before > 1e-4  # a saturated sample has (numerically) no gradient to follow
    assert int(moved.sum()) >= len(y) // 2
    assert bool((after[moved] > before[moved]).all())


def test_nearest_other_rule_never_keeps_the_true_label(tiny_model: nn.Module, tiny_data) -> None:
    """The default label rule: where the step crossed a boundary it agrees with the paper's
    rule; elsewhere it picks the most probable other class, never the true one."""
    x, y = to_tensors(tiny_data.forget)
    paper = neighbour_search(tiny_model, x, y, eps=0.05, label_rule="argmax")
    other = neighbour_search(tiny_model, x, y, eps=0.05, label_rule="nearest_other")
    assert bool((other.labels != y).all())
    crossed = paper.labels != y
    assert torch.equal(other.labels[crossed], paper.labels[crossed])
    assert other.success_ratio == paper.success_ratio
