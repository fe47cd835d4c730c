"""Each metric against an independent reference (scipy / scikit-learn / a hand-computed case),
and compute_metrics end to end on the tiny fixtures."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import nn
from torch.utils.data import TensorDataset

from boundary_unlearning import UnlearningData, unlearn
from boundary_unlearning.data import to_tensors
from boundary_unlearning.metrics import (
    activation_distance,
    class_evidence,
    compute_metrics,
    confidence_svc,
    entropy,
    entropy_attack,
    evaluate,
    js_divergence,
    loss_lr,
    paper_asr,
    predict_logits,
    relearn_steps,
    zrf_score,
)
from boundary_unlearning.metrics.distances import js_divergence_per_sample
from boundary_unlearning.metrics.estimate import EvidenceSettings
from boundary_unlearning.metrics.mia import (
    gaussian_log_likelihood_ratio,
    logit_confidence,
    sorted_log_probs,
    ulira,
)
from boundary_unlearning.metrics.suite import DIRECTIONS, METRIC_BY_KEY, RAW_FIELDS
from conftest import build_tiny, make_blobs, same_state, state_snapshot

LN2 = math.log(2)


def random_probs(n: int, k: int, seed: int, sharp: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn((n, k), generator=gen, dtype=torch.float64) * sharp).softmax(1)


# ------------------------------------------------------------------ distances


def test_entropy_matches_scipy() -> None:
    p = random_probs(20, 5, 0)
    expected = [scipy_entropy(row) for row in p.numpy()]
    np.testing.assert_allclose(entropy(p).numpy(), expected, rtol=1e-12)
    one_hot = torch.eye(4, dtype=torch.float64)
    assert entropy(one_hot).tolist() == [0.0] * 4  # 0 ln 0 = 0
    assert float(entropy(torch.full((1, 4), 0.25))) == pytest.approx(math.log(4))


def test_js_matches_scipy_per_sample_and_is_the_mean_over_samples() -> None:
    p, q = random_probs(30, 6, 1, sharp=3.0), random_probs(30, 6, 2, sharp=3.0)
    # scipy's jensenshannon is the JS *distance* sqrt(JS) with natural log by default.
    pairs = zip(p.numpy(), q.numpy(), strict=True)
    expected = np.array([jensenshannon(a, b) ** 2 for a, b in pairs])
    np.testing.assert_allclose(js_divergence_per_sample(p, q).numpy(), expected, rtol=1e-9)
    assert js_divergence(p, q) == pytest.approx(expected.mean(), rel=1e-9)
    # Not the JS of the averaged distributions, not a sum, not a KL in one direction.
    assert js_divergence(p, q) != pytest.approx(jensenshannon(p.mean(0), q.mean(0)) ** 2)


def test_js_hand_computed_symmetric_bounded() -> None:
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    # m = (0.75, 0.25): JS = 0.5 ln(1/0.75) + 0.5 (0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25))
    hand = 0.5 * math.log(1 / 0.75) + 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2))
    assert js_divergence(p, q) == pytest.approx(hand, rel=1e-12)
    assert js_divergence(q, p) == pytest.approx(hand, rel=1e-12)
    disjoint = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert js_divergence(p, disjoint) == pytest.approx(LN2)
    assert js_divergence(p, p) == 0.0
    a, b = random_probs(50, 10, 3, sharp=5), random_probs(50, 10, 4, sharp=5)
    values = js_divergence_per_sample(a, b)
    assert bool((values >= 0).all()) and bool((values <= LN2).all())


def test_activation_distance_and_zrf() -> None:
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    assert activation_distance(p, q) == pytest.approx((math.sqrt(2) + 0.0) / 2)
    a, b = random_probs(40, 7, 5), random_probs(40, 7, 6)
    ref = np.linalg.norm(a.numpy() - b.numpy(), axis=1).mean()
    assert activation_distance(a, b) == pytest.approx(ref, rel=1e-12)
    assert zrf_score(a, a) == 1.0
    assert zrf_score(p[:1], q[:1]) == pytest.approx(1 - LN2)


# ------------------------------------------------------------------ attacks


def _groups(seed: int = 0, n: int = 60, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    members = random_probs(n, k, seed, sharp=6.0)  # confident
    nonmembers = random_probs(n, k, seed + 100, sharp=0.5)  # unsure
    return members, nonmembers


def _sk_logistic() -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))


def test_paper_asr_matches_sklearn_and_direction() -> None:
    members, nonmembers = _groups()
    targets = torch.cat([random_probs(30, 5, 7, sharp=6.0), random_probs(30, 5, 8, sharp=0.5)])
    x = np.concatenate([sorted_log_probs(members).numpy(), sorted_log_probs(nonmembers).numpy()])
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    clf = _sk_logistic().fit(x, y)  # type: ignore[attr-defined]
    expected = clf.predict(sorted_log_probs(targets).numpy()).mean()
    assert paper_asr(members, nonmembers, targets, seed=0) == pytest.approx(expected)
    # Direction: member-like targets are called members, unsure ones are not.
    assert paper_asr(members, nonmembers, random_probs(50, 5, 9, sharp=6.0)) > 0.9
    assert paper_asr(members, nonmembers, random_probs(50, 5, 10, sharp=0.5)) < 0.1


def test_confidence_svc_matches_sklearn_svc() -> None:
    members, nonmembers = _groups(1)
    conf_m, conf_n = members.max(1).values.numpy(), nonmembers.max(1).values.numpy()
    targets = np.linspace(0.05, 1.0, 40)
    svc = SVC(C=3, gamma="auto", kernel="rbf").fit(
        np.r_[conf_m, conf_n].reshape(-1, 1), np.r_[np.ones(60), np.zeros(60)]
    )
    expected = 1.0 - svc.predict(targets.reshape(-1, 1)).mean()
    assert confidence_svc(conf_m, conf_n, targets) == pytest.approx(expected)
    # Fraction called NON-member: high for unsure targets, low for confident ones.
    assert confidence_svc(conf_m, conf_n, np.full(10, conf_n.mean())) > 0.9
    assert confidence_svc(conf_m, conf_n, np.full(10, 0.9999)) < 0.1


def test_entropy_attack_matches_sklearn_and_balances_groups() -> None:
    members, nonmembers = _groups(2)
    e_m, e_n = entropy(members).numpy(), entropy(nonmembers).numpy()
    targets = np.linspace(0.0, math.log(5), 25)
    clf = _sk_logistic().fit(  # type: ignore[attr-defined]
        np.r_[e_m, e_n].reshape(-1, 1), np.r_[np.ones(60), np.zeros(60)]
    )
    expected = clf.predict(targets.reshape(-1, 1)).mean()
    assert entropy_attack(e_m, e_n, targets) == pytest.approx(expected)
    # Unequal group sizes are subsampled to the smaller one, seeded.
    big = np.r_[e_m, e_m + 1e-3]
    assert entropy_attack(big, e_n, targets, seed=3) == entropy_attack(big, e_n, targets, seed=3)
    assert math.isnan(entropy_attack(e_m, np.array([]), targets))


def test_loss_lr_matches_sklearn_cross_validation() -> None:
    rng = np.random.default_rng(0)
    forget = rng.exponential(0.1, 50)  # low losses: remembered
    held = rng.exponential(1.0, 50)
    x = np.r_[forget, held].reshape(-1, 1)
    y = np.r_[np.ones(50), np.zeros(50)]
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    expected = cross_val_score(_sk_logistic(), x, y, cv=cv, scoring="accuracy").mean()
    assert loss_lr(forget, held, seed=0) == pytest.approx(expected)
    assert loss_lr(forget, held) > 0.7
    same = rng.exponential(1.0, 200), rng.exponential(1.0, 200)
    assert 0.4 < loss_lr(*same) < 0.6  # indistinguishable: 0.5 is ideal
    assert math.isnan(loss_lr(np.array([0.1]), held))


def test_likelihood_ratio_matches_scipy_and_logit_confidence() -> None:
    ins = np.array([[2.0, 2.5, np.nan, 3.0], [0.0, 1.0, 2.0, np.nan]])
    outs = np.array([[-1.0, np.nan, 0.0, 1.0], [5.0, 6.0, np.nan, 7.0]])
    target = np.array([2.2, 1.5])
    expected = [
        norm.logpdf(t, np.nanmean(i), np.nanstd(i)) - norm.logpdf(t, np.nanmean(o), np.nanstd(o))
        for t, i, o in zip(target, ins, outs, strict=True)
    ]
    np.testing.assert_allclose(gaussian_log_likelihood_ratio(target, ins, outs), expected)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 30.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    p = logits.softmax(1).gather(1, labels.view(-1, 1)).squeeze(1)
    direct = torch.log(p[:1] / (1 - p[:1]))
    assert float(logit_confidence(logits, labels)[0]) == pytest.approx(float(direct))
    assert math.isfinite(float(logit_confidence(logits, labels)[1]))  # no overflow at p≈1


# ------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def retrained(tiny_data: UnlearningData) -> nn.Module:
    return unlearn("retrain", build_tiny(), tiny_data, epochs=15, lr=0.05, batch_size=16)


def test_relearn_steps(tiny_model: nn.Module, retrained: nn.Module, tiny_data: UnlearningData):
    before = state_snapshot(retrained)
    assert relearn_steps(tiny_model, tiny_data) == 0  # already knows the class
    steps = relearn_steps(retrained, tiny_data, lr=1e-2, max_steps=60)
    assert 0 < steps <= 60
    assert same_state(before, state_snapshot(retrained))  # model untouched
    assert relearn_steps(retrained, tiny_data, lr=1e-2, max_steps=60) == steps  # deterministic


def test_a_hidden_class_relearns_faster_than_a_forgotten_one(
    tiny_model: nn.Module, retrained: nn.Module, tiny_data: UnlearningData
) -> None:
    """Suppressing the forget class's logit (bias shifted below every other class) gives 0%
    on D_f like the retrained model, but the class comes back almost at once."""
    x, _ = to_tensors(tiny_data.forget)
    logits = predict_logits(tiny_model, x)
    margin = logits[:, 1] - logits[:, [0, 2, 3]].max(1).values
    hidden = copy.deepcopy(tiny_model)
    with torch.no_grad():
        hidden.head.bias[1] -= margin.max() + 0.1  # type: ignore[index, operator]
    assert evaluate(hidden, tiny_data)["forget"] == 0.0
    fast = relearn_steps(hidden, tiny_data, lr=1e-2, max_steps=60)
    slow = relearn_steps(retrained, tiny_data, lr=1e-2, max_steps=60)
    assert fast <= 2 and slow > 5 * fast


def test_compute_metrics_on_tiny(
    tiny_model: nn.Module, retrained: nn.Module, tiny_data: UnlearningData
) -> None:
    random_model = build_tiny(seed=7)
    original = compute_metrics(tiny_model, tiny_data, retrained=retrained,
                               random_model=random_model, seed=0)  # fmt: skip
    reference = compute_metrics(retrained, tiny_data, retrained=retrained,
                                random_model=random_model, seed=0)  # fmt: skip
    json.dumps(original, allow_nan=False)
    assert original["acc"] == evaluate(tiny_model, tiny_data)
    assert set(original["mia"]) == {"paper_asr", "confidence_svc", "loss_lr", "entropy"}
    # The model that trained on D_f is exposed; the retrained one is not.
    assert original["mia"]["paper_asr"] > reference["mia"]["paper_asr"] + 0.5
    assert original["mia"]["entropy"] > reference["mia"]["entropy"] + 0.5
    assert original["mia"]["confidence_svc"] < reference["mia"]["confidence_svc"] - 0.5
    assert reference["js_to_retrain"] == 0.0 and reference["activation_distance"] == 0.0
    assert original["js_to_retrain"] > 0.5  # confident on D_f vs a model that never saw it
    assert 1 - LN2 <= original["zrf"] <= 1.0
    assert original["relearn_steps"] == 0 < reference["relearn_steps"]
    assert 0.0 <= reference["probe_forget_acc"] <= 1.0 and original["probe_forget_acc"] == 1.0
    again = compute_metrics(tiny_model, tiny_data, retrained=retrained,
                            random_model=random_model, seed=0)  # fmt: skip
    assert again == original  # seeded


def test_an_empty_set_gives_none_never_nan(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    data = dataclasses.replace(tiny_data, test_forget=empty)
    result = compute_metrics(tiny_model, data, relearn=False)
    assert result["acc"]["test_forget"] is None and result["mia"]["loss_lr"] is None
    assert evaluate(tiny_model, data)["test_forget"] is None
    json.dumps(result, allow_nan=False)  # report.json's schema: a number or null


class _MoveQuadrant(nn.Module):
    """Adds class 1's quadrant (rows 0-3, columns 4-7) onto class 0's and blanks it: class 1
    images then look like class 0 images to everything after this layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, :, 0:4, 0:4] = torch.maximum(x[:, :, 0:4, 0:4], x[:, :, 0:4, 4:8])
        out[:, :, 0:4, 4:8] = 0.0
        return out


def test_the_probe_refits_a_head_so_only_features_count() -> None:
    from boundary_unlearning import class_split
    from boundary_unlearning.metrics import probe_forget_accuracy
    from conftest import make_blobs

    data = class_split(make_blobs(60, seed=1), make_blobs(40, seed=2), forget_classes=[1])
    with torch.no_grad():
        original = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
        hidden = copy.deepcopy(original)
        hidden[1].bias[1] = -1e4  # the outputs never say class 1 ...
    assert evaluate(hidden, data)["test_forget"] == 0.0
    seen = probe_forget_accuracy(original, data, retain_samples=200)
    assert seen is not None and seen > 0.9
    # ... but the features the probe reads are the original's: the bias trick does not score
    assert probe_forget_accuracy(hidden, data, retain_samples=200) == seen
    # features in which class 1 looks like class 0 leave the probe guessing
    blind = nn.Sequential(_MoveQuadrant(), nn.Flatten(), nn.Linear(64, 4))
    blind_score = probe_forget_accuracy(blind, data, retain_samples=200)
    assert blind_score is not None and blind_score < seen - 0.3
    # seeded: the same draws give the same score
    assert probe_forget_accuracy(blind, data, retain_samples=200) == blind_score


def test_the_probe_needs_more_test_images_than_it_is_shown(tiny_data: UnlearningData) -> None:
    from boundary_unlearning.metrics import probe_forget_accuracy

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    assert probe_forget_accuracy(net, tiny_data, forget_samples=10) is None  # D_tf has 10
    assert probe_forget_accuracy(net, tiny_data, forget_samples=9) is not None


def test_the_probe_solver_matches_scikit_learn() -> None:
    """The probe's logistic regression against scikit-learn's, the same objective
    (class-balanced, L2 with ``C=1``, unpenalised intercept): the same optimum when both
    converge tightly (to 1e-4; the intercepts are ~6), and the same predictions at the
    default tolerance, with classes that are not 0..k-1 and one class of eight images (as
    the probe's forgotten class)."""
    from boundary_unlearning.metrics._logistic import LogisticProbe

    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 32, generator=gen, dtype=torch.float64)
    y = torch.tensor([0] * 400 + [2] * 300 + [5] * 200 + [7] * 8)
    index = torch.tensor([0] * 400 + [1] * 300 + [2] * 200 + [3] * 8)
    x = centers[index] * 0.4 + torch.randn(len(y), 32, generator=gen, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0, correction=0)
    tight = LogisticProbe(tol=1e-9).fit(x, y)
    reference = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, tol=1e-10)
    reference.fit(x.numpy(), y.numpy())
    assert tight.classes.tolist() == reference.classes_.tolist()
    assert np.abs(tight.weight.numpy() - reference.coef_).max() < 1e-4
    assert np.abs(tight.bias.numpy() - reference.intercept_).max() < 1e-4
    held_out = centers[torch.arange(400) % 4] * 0.4 + torch.randn(400, 32, generator=gen,
                                                                  dtype=torch.float64)  # fmt: skip
    default = LogisticProbe().fit(x, y).predict(held_out).numpy()
    sklearn_default = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    agree = default == sklearn_default.fit(x.numpy(), y.numpy()).predict(held_out.numpy())
    assert agree.mean() >= 0.99


def test_the_probe_imports_no_scikit_learn() -> None:
    """An unlearning request fits the probe and nothing else of scikit-learn, whose import
    alone is ~79 MB resident: the probe is fitted in torch."""
    from conftest import imported_after

    code = (
        "from boundary_unlearning.data import toy_problem\n"
        "from boundary_unlearning.metrics import probe_forget_accuracy\n"
        "data, net = toy_problem(n=120)\n"
        "assert probe_forget_accuracy(net, data, retain_samples=90) is not None\n"
    )
    assert not imported_after(code, "sklearn")


def test_the_probe_s_standard_error_comes_from_its_draws(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    from boundary_unlearning.metrics import (
        depth_evidence,
        depth_shares,
        probe_forget_accuracy,
        probe_forget_draws,
        standard_error,
    )

    scores = probe_forget_draws(tiny_model, tiny_data, retain_samples=60, draws=4)
    assert scores is not None and len(scores) == 4
    mean = probe_forget_accuracy(tiny_model, tiny_data, retain_samples=60, draws=4)
    assert mean == pytest.approx(sum(scores) / 4)
    evidence = depth_evidence(tiny_model, tiny_data, relearn=False)
    five = probe_forget_draws(tiny_model, tiny_data)
    assert evidence["probe_forget_acc_se"] == pytest.approx(standard_error(five))
    assert evidence["probe_forget_acc"] == pytest.approx(sum(five) / 5)  # type: ignore[arg-type]
    # the share's error: first-order propagation of the three models' errors
    o, r, m = 0.9, 0.6, 0.75  # share (0.9 - 0.75) / 0.3 = 0.5
    shares = depth_shares(
        {"probe_forget_acc": m, "probe_forget_acc_se": 0.03},
        {"probe_forget_acc": o, "probe_forget_acc_se": 0.02},
        {"probe_forget_acc": r, "probe_forget_acc_se": 0.04},
    )
    want = (0.03**2 + (0.5 * 0.02) ** 2 + (0.5 * 0.04) ** 2) ** 0.5 / 0.3
    assert shares["probe_forget_acc"] == pytest.approx(0.5)
    assert shares["probe_forget_acc_se"] == pytest.approx(want)

    # with each draw's scores the draws are paired (every model saw the same images): a draw
    # that moves all three together does not count, one that moves the method alone does
    def model(mean: float, draws: list[float]) -> dict[str, object]:
        return {"probe_forget_acc": mean, "probe_forget_draws": draws, "probe_forget_acc_se": 0.9}

    together = depth_shares(
        model(m, [0.8, 0.7, 0.75]), model(o, [0.95, 0.85, 0.9]), model(r, [0.65, 0.55, 0.6])
    )
    assert together["probe_forget_acc_se"] == pytest.approx(0.0, abs=1e-9)
    alone = depth_shares(
        model(m, [0.8, 0.7, 0.75]), model(o, [0.9, 0.9, 0.9]), model(r, [0.6, 0.6, 0.6])
    )
    assert alone["probe_forget_acc_se"] == pytest.approx(standard_error([0.8, 0.7, 0.75]) / 0.3)


def test_depth_shares_cap_and_ignore_a_gap_too_small_to_measure() -> None:
    from boundary_unlearning.metrics import depth_shares

    original = {"relearn_steps": 0, "probe_forget_acc": 0.9}
    retrained = {"relearn_steps": 20, "probe_forget_acc": 0.6}
    deeper = depth_shares({"relearn_steps": 40, "probe_forget_acc": 0.3}, original, retrained)
    assert deeper == {
        "relearn_steps": 1.0, "probe_forget_acc": 1.0, "depth": 1.0, "probe_forget_acc_se": None
    }  # fmt: skip
    worse = depth_shares({"relearn_steps": 0, "probe_forget_acc": 0.95}, original, retrained)
    assert worse["depth"] == 0.0
    half = depth_shares({"relearn_steps": 10, "probe_forget_acc": 0.9}, original, retrained)
    assert half["relearn_steps"] == 0.5 and half["depth"] == 0.0  # the smaller share counts
    close = {"relearn_steps": 2, "probe_forget_acc": 0.88}  # gaps of 2 steps and 2 points
    only = depth_shares({"relearn_steps": 10, "probe_forget_acc": 0.6}, original, close)
    assert only == {
        "relearn_steps": None, "probe_forget_acc": None, "depth": None, "probe_forget_acc_se": None
    }  # fmt: skip
    missing = depth_shares({"relearn_steps": 15}, original, retrained)
    assert missing["probe_forget_acc"] is None and missing["depth"] == 0.75


def test_missing_references_give_none(tiny_model: nn.Module, tiny_data: UnlearningData) -> None:
    result = compute_metrics(tiny_model, tiny_data, relearn=False)
    assert result["js_to_retrain"] is None and result["activation_distance"] is None
    assert result["zrf"] is None and result["relearn_steps"] is None


def test_metrics_document_every_reported_key(
    tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    result = compute_metrics(tiny_model, tiny_data, relearn=False)
    keys = [f"acc.{k}" for k in result["acc"]] + [f"mia.{k}" for k in result["mia"]]
    keys += [k for k in result if k not in ("acc", "mia")] + ["mia.ulira", "seconds", "speedup"]
    for key in keys:
        if key in RAW_FIELDS:  # data for other computations, documented there
            assert len(RAW_FIELDS[key]) > 20
            continue
        metric = METRIC_BY_KEY[key]
        assert metric.direction in DIRECTIONS
        assert metric.label and len(metric.meaning) > 20


@pytest.mark.slow
def test_ulira_separates_original_from_retrained(
    tiny_model: nn.Module, retrained: nn.Module, tiny_data: UnlearningData
) -> None:
    kwargs = {"shadows": 4, "epochs": 15, "lr": 0.05, "batch_size": 16, "seed": 0}
    exposed = ulira(tiny_model, tiny_data, **kwargs)  # type: ignore[arg-type]
    hidden = ulira(retrained, tiny_data, **kwargs)  # type: ignore[arg-type]
    assert hidden < exposed
    assert compute_metrics(retrained, tiny_data, ulira=True, relearn=False)["mia"]["ulira"] == (
        pytest.approx(ulira(retrained, tiny_data, seed=0))
    )


def test_each_metric_is_declared_once_and_the_views_derive_from_it() -> None:
    from boundary_unlearning.metrics import METRICS
    from boundary_unlearning.report.tables import METRIC_ORDER, metric_label

    keys = [m.key for m in METRICS]
    assert len(keys) == len(set(keys))
    assert tuple(keys) == METRIC_ORDER and list(METRIC_BY_KEY) == keys
    for m in METRICS:
        assert METRIC_BY_KEY[m.key] is m
        assert metric_label(m.key).startswith(m.label)
    by_key = {m.key: m for m in METRICS}
    assert by_key["acc.retain"].higher_is_better is True
    assert by_key["seconds"].higher_is_better is False
    assert by_key["mia.loss_lr"].higher_is_better is None


def _count_images(model: nn.Module) -> list[int]:
    seen = [0]
    model.register_forward_pre_hook(lambda _, args: seen.__setitem__(0, seen[0] + len(args[0])))
    return seen


def test_compute_metrics_reads_each_image_once(
    tiny_model: nn.Module, retrained: nn.Module, tiny_data: UnlearningData
) -> None:
    """One forward pass per set for accuracy, attacks, distances and the per-class rows; the
    references read only the D_f images the model read."""
    model, reference = copy.deepcopy(tiny_model), copy.deepcopy(retrained)
    seen, seen_reference = _count_images(model), _count_images(reference)
    entry = compute_metrics(model, tiny_data, retrained=reference, relearn=False, probe=False,
                            per_class=True)  # fmt: skip
    sizes = tiny_data.sizes()
    assert (
        seen[0]
        == sizes["retain"] + sizes["forget_full"] + sizes["test_retain"] + sizes["test_forget"]
    )
    assert seen_reference[0] == sizes["forget_full"]
    assert entry["per_class"] == class_evidence(tiny_model, tiny_data)
    assert "acc_interval" not in entry  # every image: exact


def test_compute_metrics_on_a_sample_states_it(tiny_model: nn.Module) -> None:
    from boundary_unlearning import class_split

    big = make_blobs(700, seed=5)  # D_r 2,100 images: more than the pilot
    data = class_split(big, make_blobs(40, seed=6), 1)
    full = compute_metrics(tiny_model, data, relearn=False, probe=False)
    sampled = compute_metrics(tiny_model, data, relearn=False, probe=False,
                              evidence=EvidenceSettings(), per_class=True)  # fmt: skip
    assert sampled["acc_samples"]["retain"] < len(data.retain)  # type: ignore[arg-type]
    assert sampled["acc_samples"]["test_forget"] == len(data.test_forget)  # type: ignore[arg-type]
    for key, (low, high) in sampled["acc_interval"].items():
        assert low <= full["acc"][key] <= high, key
    exact = compute_metrics(tiny_model, data, relearn=False, probe=False,
                            evidence=EvidenceSettings(full=True))  # fmt: skip
    assert exact["acc"] == full["acc"] and exact["mia"] == full["mia"]
    assert exact["acc_samples"] == {k: v for k, v in data.sizes().items() if k != "forget_full"}


def test_the_probe_reuses_the_features_of_the_accuracy_pass() -> None:
    """A report's pass over the sets keeps the head's inputs; the probe's retained images are
    the first of the same seeded order, so it takes their features instead of reading them
    again, and scores what it scores on its own."""
    from torch.utils.data import Subset

    from boundary_unlearning import class_split
    from boundary_unlearning.heads import head_inputs
    from boundary_unlearning.metrics import probe_forget_accuracy
    from boundary_unlearning.metrics.estimate import read_sets

    data = class_split(make_blobs(1500, seed=1), make_blobs(40, seed=2), forget_classes=[1])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(64, 4))  # fmt: skip
    settings = EvidenceSettings(margin=0.05)  # D_r: a sample of 1,000 (the pilot) of 4,500
    read = read_sets(net, data, settings, features=True)
    retain = read["retain"]
    assert retain.features is not None and len(retain.rows) < len(data.retain)  # type: ignore[arg-type]
    again = head_inputs(net, Subset(data.retain, retain.rows.tolist()), num_classes=4)
    torch.testing.assert_close(retain.features, again)
    assert read_sets(net, data, settings)["retain"].features is None  # only when asked
    for size in (200, 2000):  # all from the pass / its 1,000 and 1,000 read now
        alone = probe_forget_accuracy(net, data, retain_samples=size)
        shared = probe_forget_accuracy(net, data, retain_samples=size, readouts=read)
        assert alone is not None and shared == pytest.approx(alone, abs=0.01)


def test_a_pass_keeps_no_features_when_the_head_it_found_did_not_run() -> None:
    from boundary_unlearning import class_split
    from boundary_unlearning.metrics.estimate import read_sets

    class Detour(nn.Module):  # its last 4-output Linear (the head found) is never called
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
            self.spare = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.used(x)
            return out

    data = class_split(make_blobs(20, seed=1), make_blobs(10, seed=2), forget_classes=[1])
    read = read_sets(Detour(), data, features=True)
    assert all(r.features is None for r in read.values())
    assert read["retain"].estimate.n == len(data.retain)  # type: ignore[arg-type]
