"""Behaviour and oracle tests of the baselines, the combinations and the later methods.

The contract (new model, input untouched, eval mode, determinism, clear errors) is covered
for every registered method by test_contract.py; here each method must actually forget on
the tiny data. The tiny data is easy and the tiny model very confident, so the settings are
scaled to it (a few epochs, larger learning rates); the defaults are the published ones.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from boundary_unlearning import UnlearningData, evaluate, train, unlearn, unlearning_stats
from boundary_unlearning.errors import DivergenceError, HyperparameterError
from boundary_unlearning.methods import get_method, list_methods
from conftest import NUM_CLASSES, build_tiny

# Settings that make each method act within a second or two on the tiny data.
BEHAVIOUR: dict[str, dict[str, Any]] = {
    "finetune": {"epochs": 3, "lr": 0.1, "batch_size": 8, "weight_decay": 0.1},
    "neg_grad": {},
    "random_labels": {},
    "fisher": {},
    "expand_shrink": {},  # the library defaults: they must forget with no tuning
    "shrink_expand": {},
    "salun": {"epochs": 3, "batch_size": 32},
    "scrub": {"epochs": 3, "lr": 1e-2, "batch_size": 16, "forget_batch_size": 8},
    "ssd": {},
    "bad_teacher": {"epochs": 2, "lr": 1e-3, "batch_size": 8},
    "l1_sparse": {"epochs": 3, "batch_size": 8, "l1_weight": 5e-2},
    "unsir": {"noise_steps": 10, "noise_samples": 32, "repair_epochs": 3, "batch_size": 32},
}


@pytest.fixture(scope="module")
def unsure_model(tiny_sets: tuple[TensorDataset, TensorDataset]) -> nn.Module:
    """A tiny CNN trained one epoch: right on every sample but not saturated (forget CE
    ~0.2). Gradient ascent cannot move the fully trained fixture, whose forget CE is ~1e-5:
    the gradient of the CE vanishes with it."""
    return train(build_tiny("cnn"), tiny_sets[0], epochs=1, lr=0.05, batch_size=16, seed=0)


def test_every_new_method_is_registered_with_a_cost_and_a_reference() -> None:
    for name in BEHAVIOUR:
        spec = get_method(name)
        assert spec.cost in {"forget", "sample", "retain"}
        doc = spec.fn.__doc__ or ""
        assert any(str(year) in doc for year in range(2019, 2025)), name
    assert get_method("amnesiac").cost == "record"
    assert set(BEHAVIOUR) | {"amnesiac", "retrain", "boundary_shrink", "boundary_expanding"} == (
        set(list_methods())
    )


@pytest.mark.parametrize("method", sorted(BEHAVIOUR))
def test_method_lowers_forget_accuracy(
    method: str, tiny_model: nn.Module, unsure_model: nn.Module, tiny_data: UnlearningData
) -> None:
    model = unsure_model if method == "neg_grad" else tiny_model
    before = evaluate(model, tiny_data)
    out = unlearn(method, model, tiny_data, seed=0, **BEHAVIOUR[method])
    after = evaluate(out, tiny_data)
    assert before["forget"] == 1.0
    assert after["forget"] < 0.5 * before["forget"], (method, after)
    assert after["test_forget"] < 0.5 * before["test_forget"], (method, after)


def test_neg_grad_plus_uses_the_retain_term(
    unsure_model: nn.Module, tiny_data: UnlearningData
) -> None:
    hp = {"epochs": 2, "lr": 1e-2, "batch_size": 8}
    plain = unlearn("neg_grad", unsure_model, tiny_data, **hp)
    plus = unlearn("neg_grad", unsure_model, tiny_data, retain_weight=1.0, **hp)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), plus.state_dict().values(), strict=True)
    )


def test_neg_grad_loss_cap_stops_the_ascent_once_forgotten(
    unsure_model: nn.Module, tiny_data: UnlearningData
) -> None:
    # A large step blows the unbounded ascent up; the per-sample cap stops each sample's
    # gradient once its loss passes max_loss, so the weights stay finite and D_f is forgotten.
    hp = {
        "epochs": 20,
        "lr": 0.5,
        "batch_size": 8,
        "momentum": 0.0,
        "target_forget_acc": None,
        "layers": "all",
    }
    with pytest.raises(DivergenceError):
        unlearn("neg_grad", unsure_model, tiny_data, max_loss=None, **hp)
    capped = unlearn("neg_grad", unsure_model, tiny_data, max_loss=3.0, **hp)
    assert all(torch.isfinite(p).all() for p in capped.parameters())
    assert evaluate(capped, tiny_data)["forget"] == 0.0
    with pytest.raises(HyperparameterError, match="max_loss"):
        unlearn("neg_grad", unsure_model, tiny_data, max_loss=0.0)


def test_scrub_kl_cap_keeps_the_max_steps_finite(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    # The max step ascends an unbounded KL; with a large step it reaches infinity, the cap
    # stops each sample's ascent once its KL passes max_kl.
    hp = {"epochs": 1, "max_epochs": 1, "lr": 2.0, "momentum": 0.0, "forget_batch_size": 4}
    with pytest.raises(DivergenceError):
        unlearn("scrub", tiny_model, tiny_data, max_kl=None, **hp)
    capped = unlearn("scrub", tiny_model, tiny_data, max_kl=10.0, **hp)
    assert all(torch.isfinite(p).all() for p in capped.parameters())
    with pytest.raises(HyperparameterError, match="max_kl"):
        unlearn("scrub", tiny_model, tiny_data, max_kl=-1.0)


def test_random_labels_are_always_wrong_and_cover_the_other_classes() -> None:
    from boundary_unlearning.methods._losses import random_wrong_labels

    y = torch.arange(NUM_CLASSES).repeat(500)
    labels = random_wrong_labels(y, NUM_CLASSES, torch.Generator().manual_seed(0))
    assert not (labels == y).any()
    for c in range(NUM_CLASSES):
        assert set(labels[y == c].tolist()) == set(range(NUM_CLASSES)) - {c}
    again = random_wrong_labels(y, NUM_CLASSES, torch.Generator().manual_seed(0))
    assert torch.equal(labels, again)


def test_diagonal_fisher_matches_a_per_sample_loop(tiny_data: UnlearningData) -> None:
    from boundary_unlearning.methods.fisher import diagonal_fisher

    model = build_tiny("mlp")
    x = tiny_data.retain.tensors[0][:6]  # type: ignore[attr-defined]
    fast = diagonal_fisher(model, x, chunk_size=4)
    slow = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xi in x:
        out = model(xi[None])
        probs = F.softmax(out, dim=1)[0].detach()
        for k in range(NUM_CLASSES):
            grads = torch.autograd.grad(
                F.cross_entropy(out, torch.tensor([k])), list(model.parameters()),
                retain_graph=True,
            )  # fmt: skip
            for (n, _), g in zip(model.named_parameters(), grads, strict=True):
                slow[n] += probs[k] * g.pow(2) / len(x)
    for n in slow:
        torch.testing.assert_close(fast[n], slow[n], rtol=1e-4, atol=1e-9)


def test_fisher_zeroes_the_forget_head_rows(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    out = unlearn("fisher", tiny_model, tiny_data, seed=3)
    head = out.head  # type: ignore[union-attr]
    # mean 0, standard deviation sqrt(1e-4 * 10) = 0.03
    assert float(head.weight[1].detach().abs().max()) < 0.2
    assert float(tiny_model.head.weight[1].detach().abs().max()) > 0.2  # type: ignore[union-attr]


def test_salun_changes_only_the_salient_weights(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    from boundary_unlearning.methods.salun import saliency_mask

    x, y = tiny_data.forget.tensors  # type: ignore[attr-defined]
    # the saliency is a sum of batch-mean gradients: same batch size as the method's
    masks = saliency_mask(copy.deepcopy(tiny_model), x, y, threshold=0.3, batch_size=32)
    total = sum(m.numel() for m in masks.values())
    assert sum(float(m.sum()) for m in masks.values()) == int(total * 0.3)
    # no momentum or weight decay: weights outside the mask must not move at all
    out = unlearn("salun", tiny_model, tiny_data, threshold=0.3, epochs=2, momentum=0.0,
                  weight_decay=0.0, batch_size=32)  # fmt: skip
    assert unlearning_stats(out)["masked_fraction"] == pytest.approx(0.3, abs=1e-3)
    before = dict(tiny_model.named_parameters())
    moved_inside = False
    for name, param in out.named_parameters():
        frozen = masks[name] == 0
        assert torch.equal(param[frozen], before[name][frozen]), name
        moved_inside |= not torch.equal(param[~frozen], before[name][~frozen])
    assert moved_inside


def test_ssd_only_dampens(tiny_model: nn.Module, tiny_data: UnlearningData) -> None:
    out = unlearn("ssd", tiny_model, tiny_data)
    before = dict(tiny_model.named_parameters())
    for name, param in out.named_parameters():
        ratio = param / torch.where(before[name] == 0, 1.0, before[name])
        assert bool(((ratio >= 0) & (ratio <= 1 + 1e-6)).all()), name
    assert 0 < unlearning_stats(out)["dampened_fraction"] < 0.5


def test_l1_sparse_shrinks_the_weights(tiny_model: nn.Module, tiny_data: UnlearningData) -> None:
    hp = {"epochs": 2, "batch_size": 16}
    dense = unlearn("l1_sparse", tiny_model, tiny_data, l1_weight=0.0, **hp)
    sparse = unlearn("l1_sparse", tiny_model, tiny_data, l1_weight=5e-2, **hp)

    def l1(m: nn.Module) -> float:
        return float(sum(p.detach().abs().sum() for p in m.parameters()))

    assert l1(sparse) < l1(dense)


def test_unsir_noise_maximises_the_error(tiny_model: nn.Module) -> None:
    from boundary_unlearning.methods.unsir import error_maximizing_noise

    start = error_maximizing_noise(tiny_model, 1, (16, 1, 8, 8), steps=1, lr=1e-6,
                                   l2_weight=0.1, seed=0)  # fmt: skip
    learned = error_maximizing_noise(tiny_model, 1, (16, 1, 8, 8), steps=20, lr=0.1,
                                     l2_weight=0.1, seed=0)  # fmt: skip
    target = torch.ones(16, dtype=torch.long)
    with torch.no_grad():
        assert F.cross_entropy(tiny_model(learned), target) > F.cross_entropy(
            tiny_model(start), target
        )


def test_expand_shrink_is_the_composition(tiny_model: nn.Module, tiny_data: UnlearningData) -> None:
    """A combination runs each stage with its own settings: ``expand_*`` / ``shrink_*`` for
    one stage, a plain name for both (or for the one stage that has it)."""
    from boundary_unlearning import boundary_expanding, boundary_shrink

    combined = unlearn(
        "expand_shrink", tiny_model, tiny_data, expand_epochs=3, shrink_epochs=2, lr=1e-2,
        target_forget_acc=None, eps=0.3, shrink_attack="pgd", shrink_pgd_steps=2,
        feature_steps=4,
    )  # fmt: skip
    # the first stage stops at the outputs; the feature stage runs once, after the second
    expanded = boundary_expanding(
        tiny_model, tiny_data, epochs=3, lr=1e-2, target_forget_acc=None, depth="outputs"
    )
    manual = boundary_shrink(
        expanded, tiny_data, epochs=2, lr=1e-2, target_forget_acc=None, eps=0.3, attack="pgd",
        pgd_steps=2, feature_steps=4,
    )  # fmt: skip
    for a, b in zip(combined.state_dict().values(), manual.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    stats = unlearning_stats(combined)
    assert "attack_success_ratio" in stats
    assert stats["steps"] == unlearning_stats(expanded)["steps"] + unlearning_stats(manual)["steps"]
    defaults = unlearn("shrink_expand", tiny_model, tiny_data)
    assert "attack_success_ratio" in unlearning_stats(defaults)
    assert unlearning_stats(defaults)["reached_target"] is True


def test_boundary_shrink_curvature_matching(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    from boundary_unlearning.methods.boundary_shrink import input_curvature

    hp = {"preset": "paper", "epochs": 3, "lr": 1e-2, "eps": 0.3}
    plain = unlearn("boundary_shrink", tiny_model, tiny_data, **hp)
    explicit_off = unlearn("boundary_shrink", tiny_model, tiny_data, curvature_weight=0.0, **hp)
    curved = unlearn("boundary_shrink", tiny_model, tiny_data, curvature_weight=0.7, **hp)
    for a, b in zip(plain.state_dict().values(), explicit_off.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), curved.state_dict().values(), strict=True)
    )
    assert evaluate(curved, tiny_data)["forget"] < 0.5
    x, y = tiny_data.forget.tensors  # type: ignore[attr-defined]
    tiny_model.eval()
    curvature = input_curvature(tiny_model, x[:8], y[:8], create_graph=False)
    assert curvature.shape == (8,) and bool(torch.isfinite(curvature).all())
    assert not any(p.grad is not None for p in tiny_model.parameters())


@pytest.mark.parametrize(
    "method", ["boundary_shrink", "boundary_expanding", "random_labels", "neg_grad"]
)
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_stopping_rule_reports_the_true_forget_accuracy(
    method: str,
    dropout: float,
    tiny_model: nn.Module,
    unsure_model: nn.Module,
    tiny_data: UnlearningData,
) -> None:
    """The last check of the stopping rule (run on the features the training steps kept,
    or, with dropout, on a full forward pass) equals the forget accuracy evaluate() measures
    on the returned model, and the target it claims to have reached holds."""
    base = unsure_model if method == "neg_grad" else tiny_model
    model = nn.Sequential(base, nn.Dropout(dropout)) if dropout else base
    out = unlearn(method, model, tiny_data, head="0.head" if dropout else None)
    stats = unlearning_stats(out)
    measured = evaluate(out, tiny_data)["forget"]
    assert stats["forget_acc_trace"][-1][1] == pytest.approx(measured)
    assert stats["reached_target"] is (measured <= stats["target_forget_acc"])


@pytest.mark.parametrize("method", ["boundary_shrink", "expand_shrink"])
def test_forgetting_warning_points_at_the_callers_line(
    method: str, tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    # whichever path inside the library leads to it (by name, or the package's entry), the
    # warning names this file, not the registry
    import boundary_unlearning as bu

    hp = {"max_steps": 1, "target_forget_acc": 0.0, "depth": "outputs"}
    entry = getattr(bu.methods, method)
    for call in (lambda: unlearn(method, tiny_model, tiny_data, **hp),
                 lambda: entry(tiny_model, tiny_data, **hp)):  # fmt: skip
        with pytest.warns(bu.ForgettingWarning) as caught:
            call()
        assert [w.filename for w in caught] == [__file__]
