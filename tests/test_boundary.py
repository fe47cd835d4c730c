"""Boundary Shrink and Boundary Expanding: what the paper says they do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from boundary_unlearning import boundary_expanding, boundary_shrink, evaluate, unlearning_stats
from boundary_unlearning.data import to_tensors
from boundary_unlearning.errors import ModelError
from boundary_unlearning.methods.boundary_expanding import prune_head, widen_head
from boundary_unlearning.neighbours import neighbour_search
from conftest import NUM_CLASSES


def test_expanding_returns_k_outputs_and_trained_first_rows(tiny_model, tiny_data) -> None:
    out = boundary_expanding(tiny_model, tiny_data, lr=1e-2, epochs=3, depth="outputs")
    assert out.head.out_features == NUM_CLASSES
    assert out(torch.rand(2, 1, 8, 8)).shape == (2, NUM_CLASSES)
    old, new = tiny_model.head.weight, out.head.weight
    # trained: the rows moved ...
    assert not torch.equal(old, new)
    # ... but were not reset: they stay close to the original rows
    old, new = old.detach(), new.detach()
    assert float((new - old).norm() / old.norm()) < 0.5
    cos = torch.nn.functional.cosine_similarity(old.flatten(), new.flatten(), dim=0)
    assert float(cos) > 0.9


def test_expanding_forgets(tiny_model, tiny_data) -> None:
    before = evaluate(tiny_model, tiny_data)
    out = boundary_expanding(tiny_model, tiny_data, lr=1e-2, epochs=5)
    after = evaluate(out, tiny_data)
    assert before["forget"] > 0.9
    assert after["forget"] < before["forget"] - 0.5


def test_widen_then_prune_is_identity_on_first_rows() -> None:
    head = nn.Linear(5, 3)
    wide = widen_head(head, torch.Generator().manual_seed(0))
    assert wide.out_features == 4
    assert torch.equal(wide.weight[:3], head.weight)
    assert torch.equal(wide.bias[:3], head.bias)
    assert float(wide.bias[3].detach()) == 0.0 and float(wide.weight[3].detach().abs().sum()) > 0
    back = prune_head(wide)
    assert torch.equal(back.weight, head.weight) and torch.equal(back.bias, head.bias)


def test_expanding_finds_a_head_by_name_or_fails_clearly(tiny_data) -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
            self.last = nn.Linear(16, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.last(self.trunk(x))

    out = boundary_expanding(Odd(), tiny_data, epochs=1, head="last")
    assert out(torch.rand(1, 1, 8, 8)).shape == (1, NUM_CLASSES)
    with pytest.raises(ModelError, match="no module 'fc'"):
        boundary_expanding(Odd(), tiny_data, epochs=1, head="fc")
    with pytest.raises(ModelError, match="not an nn.Linear"):
        boundary_expanding(Odd(), tiny_data, epochs=1, head="trunk")

    class NoLinear(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :NUM_CLASSES] * self.scale

        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

    with pytest.raises(ModelError, match="head="):
        boundary_expanding(NoLinear(), tiny_data, epochs=1)


def test_shrink_fine_tunes_on_neighbour_labels(tiny_model, tiny_data) -> None:
    """With the search and the fine-tuning seeded alike, BS equals fine-tuning on the
    labels of neighbour_search -- i.e. the labels really come from the adversarial step."""
    from boundary_unlearning.methods._common import working_copy
    from boundary_unlearning.training import fit

    x, y = to_tensors(tiny_data.forget)
    nb = neighbour_search(tiny_model, x, y, eps=0.3)
    manual = fit(working_copy(tiny_model), (x, nb.labels), epochs=3, lr=1e-2, seed=0)
    out = boundary_shrink(tiny_model, tiny_data, preset="paper", eps=0.3, lr=1e-2, epochs=3, seed=0)
    for a, b in zip(manual.state_dict().values(), out.state_dict().values(), strict=True):
        assert torch.allclose(a, b)
    assert unlearning_stats(out)["attack_success_ratio"] == pytest.approx(nb.success_ratio)


def test_bn_freeze_keeps_running_statistics(tiny_model, tiny_data) -> None:
    bn_before = {k: v.clone() for k, v in tiny_model.state_dict().items() if "running" in k}
    frozen = boundary_shrink(tiny_model, tiny_data, eps=0.3, lr=1e-2, epochs=2, bn="freeze")
    trained = boundary_shrink(tiny_model, tiny_data, eps=0.3, lr=1e-2, epochs=2, bn="train")
    for key, value in bn_before.items():
        assert torch.equal(frozen.state_dict()[key], value)
    assert any(not torch.equal(trained.state_dict()[k], v) for k, v in bn_before.items())


def test_zero_epochs_is_identity(tiny_model, tiny_data) -> None:
    # the output stage's budget; the feature stage (the default) has its own
    for method in (boundary_shrink, boundary_expanding):
        out = method(tiny_model, tiny_data, epochs=0, depth="outputs")
        for a, b in zip(out.state_dict().values(), tiny_model.state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_forget_fraction_uses_subset_but_reports_whole_class(tiny_sets) -> None:
    from boundary_unlearning import class_split

    data = class_split(*tiny_sets, forget_classes=[2], forget_fraction=0.25, seed=3)
    assert len(data.forget) == 10 and len(data.forget_eval) == 40
    again = class_split(*tiny_sets, forget_classes=[2], forget_fraction=0.25, seed=3)
    assert torch.equal(to_tensors(data.forget)[0], to_tensors(again.forget)[0])
    other = class_split(*tiny_sets, forget_classes=[2], forget_fraction=0.25, seed=4)
    assert not torch.equal(to_tensors(data.forget)[0], to_tensors(other.forget)[0])
